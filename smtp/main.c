/*
 * main.c - pgmail-smtpd: one SMTP session (RFC 5321) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; it never
 * listens, accepts or forks. The loop reads one bounded command line at a time, so a
 * pipelining client (RFC 2920) is answered in order, and replies are written in one batch
 * right before the next blocking read. The database is connected late, at the first
 * command that needs it, and the connection is kept for the session.
 */
#include "smtpd.h"
#include "auth.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static struct smtp_session session; /* static: the line buffers are large */

static int usage(const char *msg)
{
    fprintf(stderr,
            "%s\nusage: pgmail-smtpd  (one SMTP session on stdin/stdout; see "
            "pgmail-smtpd(8) and README.md)\n",
            msg);
    return 2;
}

int main(int argc, char **argv)
{
    struct smtp_session *s = &session;
    if (argc > 1)
        return usage(strcmp(argv[1], "--help") == 0 ? "pgmail-smtpd: the pgmail SMTP handler"
                                                    : "pgmail-smtpd: no arguments expected");
    /* A peer that goes away while we write must not kill us before we log it. */
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    peer_init(&s->peer);
    log_init("pgmail-smtpd", s->peer.session, s->peer.addr);
    io_init(&s->io, 0, 1);
    if (config_load(&s->cfg, err, sizeof err) < 0) {
        log_event(LOG_ERR, "config-error", "error=\"%s\"", err);
        io_puts(&s->io, "421 4.3.5 Server configuration error, closing connection\r\n");
        io_flush(&s->io);
        return 1;
    }
    s->io.timeout_ms = (int)(s->cfg.smtp_timeout * 1000);
    db_init(&s->db, s->cfg.database, "pgmail-smtpd");
    auth_init(s->cfg.password_scheme, s->cfg.password_cost, s->cfg.auth_failure_delay_ms);
    log_event(LOG_INFO, "connect", "loopback=%s", s->peer.loopback ? "yes" : "no");
    smtp_reply(s, R_GREETING, s->cfg.hostname);

    static char line[LIM_SMTP_LINE + 1];
    const char *why = "quit";
    while (!s->quit) {
        size_t n;
        enum io_status st = io_getline(&s->io, line, LIM_SMTP_LINE, &n);
        if (st == IO_TOOLONG) {
            /* Postfix's rule: skip the rest of the line and answer once, in sync. */
            st = io_skipline(&s->io);
            if (st == IO_LINE) {
                smtp_dispatch_error(s, R_TOOLONG);
                continue;
            }
        }
        if (st == IO_TIMEOUT) {
            smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
            why = "timeout";
            break;
        }
        if (st != IO_LINE) {
            why = st == IO_EOF ? "eof" : "read-error";
            break;
        }
        if (memchr(line, '\0', n)) { /* a NUL would cut the command short: refuse it */
            smtp_dispatch_error(s, R_UNKNOWN);
            continue;
        }
        line[strcspn(line, "\r\n")] = '\0';
        smtp_dispatch(s, line);
    }
    if (s->quit && s->errors >= LIM_ERRORS_HARD)
        why = "errors";
    io_flush(&s->io);
    smtp_tx_reset(s);
    db_close(&s->db);
    log_event(LOG_INFO, "disconnect", "reason=%s messages=%ld errors=%d", why, s->messages,
              s->errors);
    return 0;
}
