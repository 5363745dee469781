/*
 * handler.h - what every per-connection pgmail handler does first and in its loop.
 *
 * Both protocol programs start the same way (peer, log, configuration, database settings,
 * password policy) and read commands the same way (one bounded line, an over-long line
 * skipped to stay in sync, NUL refused). Only their replies differ.
 */
#ifndef PGMAIL_HANDLER_H
#define PGMAIL_HANDLER_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "io.h"
#include "peer.h"

/* handler_args: a handler takes no arguments. With any, print what it is (for --help) or
 * that none are expected, and its usage, to stderr and return 2 (main's exit status);
 * else 0. protocol names it ("SMTP"), see where it is documented. */
int handler_args(int argc, char **argv, const char *program, const char *protocol, const char *see);

/* handler_start: ignore SIGPIPE, identify the peer, start logging as program, set up io on
 * fd 0/1, load the configuration and remember the database. When the configuration is bad,
 * logs it, sends config_reply (a whole protocol line with CRLF) and returns -1; else 0. */
int handler_start(const char *program, struct config *cfg, struct peer *peer, struct io *io,
                  struct db *db, const char *config_reply);

/* handler_tls: set the timeout (timeout_ms: each input line must arrive whole within it, in
 * clear and under TLS, see io.h; each write must drain within it), load the TLS
 * certificate (*ready: STARTTLS/STLS may be offered) and, on an implicit-TLS port (RFC 8314
 * 3.3: tls_implicit), run the handshake before any greeting. -1 when the session must end
 * there (logged as its disconnect), else 0. */
int handler_tls(const struct config *cfg, struct io *io, int timeout_ms, int *ready);

/* Exit statuses of a handler (qmail's convention, so that a supervisor or a test can tell
 * them apart): 0 the session ended normally (QUIT, or the client left); EXIT_TEMP a
 * temporary failure ended it (database unreachable or lost, out of memory, a timeout):
 * trying again later may work; EXIT_PERM a permanent one (bad configuration, bad usage):
 * it will fail the same way until an operator changes something. */
#define HANDLER_EXIT_OK   0
#define HANDLER_EXIT_TEMP 111
#define HANDLER_EXIT_PERM 100

enum handler_read {
    HR_COMMAND, /* line holds a command, its CR/LF removed */
    HR_TOOLONG, /* the line was longer than cap: it was skipped; answer it and go on */
    HR_NUL,     /* the line held a NUL byte, which would cut it short: answer, go on */
    HR_TIMEOUT, /* the line did not arrive whole within the timeout (RFC 5321 4.5.3.2) */
    HR_END,     /* the peer closed, or reading failed: end the session */
};

/* handler_read_command: read the next command line into line (cap octets + NUL). The
 * timeout bounds the whole line, an over-long one's skipped rest included (io.h). */
enum handler_read handler_read_command(struct io *io, char *line, size_t cap);

#endif
