/*
 * fuzz.h - helpers shared by the libFuzzer targets in tests/fuzz.
 */
#ifndef PGMAIL_FUZZ_H
#define PGMAIL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* fuzz_env: the environment every session target runs with: no config file, no logs, no
 * delays, small limits so that they are reached. */
void fuzz_env(void);

/* fuzz_session: run serve() once with data[1..] as the client's bytes on fd 0 (fd 1 goes
 * to /dev/null) and data[0] choosing which database statement fails (memstore.h). */
void fuzz_session(const uint8_t *data, size_t size, int (*serve)(void));

/* fuzz_check: abort (a finding) when cond is false. */
#define fuzz_check(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#endif
