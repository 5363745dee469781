/*
 * fuzz_pop3.c - the whole POP3 session: command parser, states, AUTH PLAIN, RETR/TOP
 * streaming and dot-stuffing, DELE/RSET/QUIT, against memstore.
 */
#include "fuzz.h"
#include "../../pop3/pop3d.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_session(data, size, pop3_serve);
    return 0;
}
