/*
 * fuzzlib.c - running a whole handler session per fuzz input (see fuzz.h).
 *
 * The client's bytes go through a pipe on fd 0, as inetd would hand over a connection, so
 * the production line reader and session code run unchanged; inputs are capped below the
 * pipe's capacity so that writing them never blocks.
 */
#include "fuzz.h"
#include "memstore.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_INPUT 60000

void fuzz_env(void)
{
    setenv("PGMAIL_CONFIG", "/dev/null", 1);
    setenv("PGMAIL_LOG", "none", 1);
    setenv("PGMAIL_HOSTNAME", "mx.example.test", 1);
    setenv("PGMAIL_AUTH_FAILURE_DELAY_MS", "0", 1);
    setenv("PGMAIL_ERROR_DELAY_MS", "0", 1);
    setenv("PGMAIL_PASSWORD_SCHEME", "sha512crypt", 1);
    setenv("PGMAIL_MESSAGE_SIZE_LIMIT", "4096", 1);
    setenv("PGMAIL_MAX_RECIPIENTS", "5", 1);
    signal(SIGPIPE, SIG_IGN);
}

void fuzz_session(const uint8_t *data, size_t size, int (*serve)(void))
{
    static int devnull = -1;
    if (size == 0 || size > MAX_INPUT)
        return;
    if (devnull < 0)
        devnull = open("/dev/null", O_WRONLY);
    int p[2];
    if (pipe(p) != 0)
        abort();
    fcntl(p[1], F_SETPIPE_SZ, 1 << 17);
    if (write(p[1], data + 1, size - 1) != (ssize_t)(size - 1))
        abort();
    close(p[1]);
    dup2(p[0], 0);
    close(p[0]);
    dup2(devnull, 1);
    memstore_reset(data[0] % 64);
    serve();
    close(0);
}
