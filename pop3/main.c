/*
 * main.c - pgmail-pop3d: one POP3 session (RFC 1939) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; same
 * configuration, database settings, peer detection and logging as pgmail-smtpd. Lines are
 * read with the shared bounded reader: over LIM_POP3_LINE octets is -ERR and the session
 * goes on; LIM_POP3_ERRORS errors or the idle timeout (RFC 1939 3 autologout, 10 minutes)
 * end it. Ending in any way but QUIT in the TRANSACTION state rolls back: nothing removed.
 */
#include "pop3d.h"
#include "auth.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static struct pop3_session session;

int main(int argc, char **argv)
{
    struct pop3_session *s = &session;
    if (argc > 1) {
        fprintf(stderr,
                "%s\nusage: pgmail-pop3d  (one POP3 session on stdin/stdout; see "
                "README.md)\n",
                strcmp(argv[1], "--help") == 0 ? "pgmail-pop3d: the pgmail POP3 handler"
                                               : "pgmail-pop3d: no arguments expected");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    peer_init(&s->peer);
    log_init("pgmail-pop3d", s->peer.session, s->peer.addr);
    io_init(&s->io, 0, 1);
    if (config_load(&s->cfg, err, sizeof err) < 0) {
        log_event(LOG_ERR, "config-error", "error=\"%s\"", err);
        io_puts(&s->io, "-ERR [SYS/PERM] Server configuration error\r\n");
        io_flush(&s->io);
        return 1;
    }
    s->io.timeout_ms = (int)(s->cfg.pop3_timeout * 1000);
    db_init(&s->db, s->cfg.database, "pgmail-pop3d");
    auth_init(s->cfg.password_scheme, s->cfg.password_cost, s->cfg.auth_failure_delay_ms);
    s->state = ST_AUTHORIZATION;
    log_event(LOG_INFO, "connect", "loopback=%s", s->peer.loopback ? "yes" : "no");
    /* No APOP timestamp in the greeting: APOP needs the clear password on the server. */
    pop3_ok(s, "pgmail POP3 server ready");

    static char line[LIM_POP3_LINE + 1];
    const char *why = "quit";
    while (!s->quit) {
        size_t n;
        enum io_status st = io_getline(&s->io, line, LIM_POP3_LINE, &n);
        if (st == IO_TOOLONG) {
            st = io_skipline(&s->io);
            if (st == IO_LINE) {
                pop3_err(s, "Line too long");
                pop3_count_error(s);
                continue;
            }
        }
        if (st == IO_TIMEOUT) {
            why = "timeout";
            break;
        }
        if (st != IO_LINE) {
            why = st == IO_EOF ? "eof" : "read-error";
            break;
        }
        if (memchr(line, '\0', n)) { /* a NUL would cut the command short: refuse it */
            pop3_err(s, "Unknown command");
            pop3_count_error(s);
            continue;
        }
        line[strcspn(line, "\r\n")] = '\0';
        pop3_dispatch(s, line);
    }
    if (s->quit && s->errors >= LIM_POP3_ERRORS)
        why = "errors";
    io_flush(&s->io);
    if (s->state == ST_TRANSACTION && why[0] != 'q')
        log_event(LOG_INFO, "logout", "user=%s result=aborted reason=%s retrieved=%ld", s->user,
                  why, s->retrieved);
    /* Closing the connection ends the session's transaction: marks are forgotten and the
     * mailbox lock is released by PostgreSQL at once. */
    db_close(&s->db);
    free(s->msgs);
    log_event(LOG_INFO, "disconnect", "reason=%s", why);
    return 0;
}
