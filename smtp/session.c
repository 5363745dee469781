/*
 * session.c - one SMTP session (RFC 5321) on fd 0/1: start-up, the command loop, the end.
 *
 * The loop reads one bounded command line at a time, so a pipelining client (RFC 2920) is
 * answered in order, and replies are written in one batch right before the next blocking
 * read. The database is connected late, at the first command that needs it, and the
 * connection is kept for the session. main.c calls it once; the fuzzer (tests/fuzz) calls
 * it once per input, with fd 0 and fd 1 replaced.
 */
#include "smtpd.h"
#include "handler.h"
#include "log.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static struct smtp_session session; /* static: the line buffers are large */

int smtp_serve(void)
{
    struct smtp_session *s = &session;
    memset(s, 0, sizeof *s);
    if (handler_start("pgmail-smtpd", &s->cfg, &s->peer, &s->io, &s->db,
                      "421 4.3.5 Server configuration error, closing connection\r\n") < 0)
        return 1;
    /* Implicit TLS (submissions, port 465) starts here, before the greeting. */
    if (handler_tls(&s->cfg, &s->io, (int)(s->cfg.smtp_timeout * 1000), &s->tls_ready) < 0)
        return 0;
    smtp_reply(s, R_GREETING, s->cfg.hostname);

    static char line[LIM_SMTP_LINE + 1];
    const char *why = "quit";
    while (!s->quit) {
        enum handler_read r = handler_read_command(&s->io, line, LIM_SMTP_LINE);
        if (r == HR_COMMAND) {
            smtp_dispatch(s, line);
        } else if (r == HR_TOOLONG || r == HR_NUL) {
            smtp_dispatch_error(s, r == HR_TOOLONG ? R_TOOLONG : R_UNKNOWN);
        } else if (r == HR_TIMEOUT) {
            smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
            why = "timeout";
            break;
        } else {
            why = "eof";
            break;
        }
    }
    if (s->quit && s->errors >= LIM_ERRORS_HARD)
        why = "errors";
    if (s->end_reason)
        why = s->end_reason;
    io_flush(&s->io);
    tls_end(&s->io);
    smtp_tx_reset(s);
    db_close(&s->db);
    log_event(LOG_INFO, "disconnect", "reason=%s messages=%ld errors=%d", why, s->messages,
              s->errors);
    return 0;
}
