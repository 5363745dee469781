/*
 * fuzz.h - helpers shared by the libFuzzer targets in tests/fuzz.
 */
#ifndef PGMAIL_FUZZ_H
#define PGMAIL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* fuzz_env: the environment every session target runs with: no config file, no logs, no
 * delays, small limits so that they are reached. */
void fuzz_env(void);

/* fuzz_session: run serve() once with data[1..] as the client's bytes on fd 0 (fd 1 goes
 * to /dev/null) and data[0] choosing which database statement fails (memstore.h). */
void fuzz_session(const uint8_t *data, size_t size, int (*serve)(void));

/* fuzz_pipe: a pipe holding the n bytes at in, its writing end closed: the read end (the
 * bytes, then end of file) for a reader under test. n must fit a pipe (64 KiB). */
static inline int fuzz_pipe(const void *in, size_t n)
{
    int p[2];
    if (pipe(p) != 0 || write(p[1], in, n) != (ssize_t)n)
        abort();
    close(p[1]);
    return p[0];
}

/* fuzz_check: abort (a finding) when cond is false. */
#define fuzz_check(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#endif
