/*
 * session.c - one POP3 session (RFC 1939) on fd 0/1: start-up, the command loop, the end.
 *
 * Same configuration, database settings, peer detection and logging as pgmail-smtpd. Lines
 * are read with the shared bounded reader: over LIM_POP3_LINE octets is -ERR and the
 * session goes on; LIM_POP3_ERRORS errors or the idle timeout (RFC 1939 3 autologout, 10
 * minutes) end it. Ending in any way but QUIT in the TRANSACTION state rolls back: nothing
 * is removed, and the log has a logout event "result=aborted" with the reason, the same as
 * the disconnect event's: quit, errors, eof, reset, read-failed, write-failed, timeout,
 * db-lost, db-failed, retr-failed, tls-failed. main.c calls it once; the fuzzer
 * (tests/fuzz) once per input.
 */
#include "pop3d.h"
#include "handler.h"
#include "log.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static struct pop3_session session;

/* end_reason: why the loop ended, for the disconnect log: a command's own reason (QUIT,
 * too many errors, a database or write failure), else what the reader said. */
static const char *end_reason(const struct pop3_session *s, enum handler_read r, int err)
{
    if (s->end_reason)
        return s->end_reason;
    if (s->quit)
        return s->errors >= LIM_POP3_ERRORS ? "errors" : "quit";
    if (s->io.out_error)
        return "write-failed";
    if (r == HR_TIMEOUT)
        return "timeout";
    if (err == ECONNRESET)
        return "reset";
    return err ? "read-failed" : "eof";
}

int pop3_serve(void)
{
    struct pop3_session *s = &session;
    memset(s, 0, sizeof *s);
    if (handler_start("pgmail-pop3d", &s->cfg, &s->peer, &s->io, &s->db, pop3_config_error_line) <
        0)
        return HANDLER_EXIT_PERM;
    /* Implicit TLS (POP3S, port 995) starts here, before the greeting. */
    if (handler_tls(&s->cfg, &s->io, (int)(s->cfg.pop3_timeout * 1000), &s->tls_ready) < 0)
        return HANDLER_EXIT_OK;
    s->state = ST_AUTHORIZATION;
    pop3_reply(s, R_GREETING);

    static char line[LIM_POP3_LINE + 1];
    enum handler_read r = HR_COMMAND;
    int err = 0;
    while (!s->quit && !s->io.out_error) {
        errno = 0;
        r = handler_read_command(&s->io, line, LIM_POP3_LINE);
        if (r == HR_COMMAND) {
            pop3_dispatch(s, line);
        } else if (r == HR_TOOLONG || r == HR_NUL) {
            pop3_reply(s, r == HR_TOOLONG ? R_LINE_TOO_LONG : R_UNKNOWN);
            pop3_count_error(s);
        } else {
            err = errno;
            break;
        }
    }
    io_flush(&s->io);
    const char *why = end_reason(s, r, err);
    tls_end(&s->io);
    if (s->state == ST_TRANSACTION && !s->logged_out) {
        char clean[LIM_PATH + 1];
        log_clean(clean, sizeof clean, s->user);
        log_event(LOG_INFO, "logout", "user=%s result=aborted reason=%s retrieved=%ld", clean, why,
                  s->retrieved);
    }
    /* Closing the connection ends the session's transaction: marks are forgotten and the
     * mailbox lock is released by PostgreSQL at once. */
    db_close(&s->db);
    free(s->msgs);
    s->msgs = NULL;
    log_event(LOG_INFO, "disconnect", "reason=%s", why);
    /* The exit status follows what ended the session: a [SYS/TEMP] answer that no later
     * login made good (the database unreachable, lost or failing), or the idle timeout. */
    return s->temp_failure || r == HR_TIMEOUT ? HANDLER_EXIT_TEMP : HANDLER_EXIT_OK;
}
