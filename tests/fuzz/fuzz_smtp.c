/*
 * fuzz_smtp.c - the whole SMTP session: command parser, state machine, AUTH exchanges,
 * DATA reader (dot-unstuffing, bare CR/LF, size limit) and delivery, against memstore.
 */
#include "fuzz.h"
#include "../../smtp/smtpd.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_session(data, size, smtp_serve);
    return 0;
}
