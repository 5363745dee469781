/*
 * session.c - one POP3 session (RFC 1939) on fd 0/1: start-up, the command loop, the end.
 *
 * Same configuration, database settings, peer detection and logging as pgmail-smtpd. Lines
 * are read with the shared bounded reader: over LIM_POP3_LINE octets is -ERR and the
 * session goes on; LIM_POP3_ERRORS errors or the idle timeout (RFC 1939 3 autologout, 10
 * minutes) end it. Ending in any way but QUIT in the TRANSACTION state rolls back: nothing
 * is removed. main.c calls it once; the fuzzer (tests/fuzz) once per input.
 */
#include "pop3d.h"
#include "handler.h"
#include "log.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static struct pop3_session session;

int pop3_serve(void)
{
    struct pop3_session *s = &session;
    memset(s, 0, sizeof *s);
    if (handler_start("pgmail-pop3d", &s->cfg, &s->peer, &s->io, &s->db,
                      "-ERR [SYS/PERM] Server configuration error\r\n") < 0)
        return 1;
    /* Implicit TLS (POP3S, port 995) starts here, before the greeting. */
    if (handler_tls(&s->cfg, &s->io, (int)(s->cfg.pop3_timeout * 1000), &s->tls_ready) < 0)
        return 0;
    s->state = ST_AUTHORIZATION;
    /* No APOP timestamp in the greeting: APOP needs the clear password on the server. */
    pop3_ok(s, "pgmail POP3 server ready");

    static char line[LIM_POP3_LINE + 1];
    const char *why = "quit";
    while (!s->quit) {
        enum handler_read r = handler_read_command(&s->io, line, LIM_POP3_LINE);
        if (r == HR_COMMAND) {
            pop3_dispatch(s, line);
        } else if (r == HR_TOOLONG || r == HR_NUL) {
            pop3_err(s, r == HR_TOOLONG ? "Line too long" : "Unknown command");
            pop3_count_error(s);
        } else {
            why = r == HR_TIMEOUT ? "timeout" : "eof";
            break;
        }
    }
    if (s->quit && s->errors >= LIM_POP3_ERRORS)
        why = "errors";
    if (s->end_reason)
        why = s->end_reason;
    io_flush(&s->io);
    tls_end(&s->io);
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
