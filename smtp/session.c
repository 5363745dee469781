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

/* What each way of ending is called in the disconnect log, and the exit status it gives
 * (handler.h): the client's doing is no failure of ours (0); what may work later is
 * temporary. A bad configuration (permanent) ends the session before it starts. */
static const struct {
    const char *name;
    int status;
} ends[] = {
    [END_NONE] = {"ended", HANDLER_EXIT_OK},
    [END_QUIT] = {"quit", HANDLER_EXIT_OK},
    [END_EOF] = {"eof", HANDLER_EXIT_OK},
    [END_TIMEOUT] = {"timeout", HANDLER_EXIT_TEMP},
    [END_ERRORS] = {"errors", HANDLER_EXIT_OK},
    [END_AUTH_FAILURES] = {"auth-failures", HANDLER_EXIT_OK},
    [END_TLS_FAILED] = {"tls-failed", HANDLER_EXIT_OK},
    [END_DB] = {"db-unreachable", HANDLER_EXIT_TEMP},
};

int smtp_serve(void)
{
    struct smtp_session *s = &session;
    memset(s, 0, sizeof *s);
    if (handler_start("pgmail-smtpd", &s->cfg, &s->peer, &s->io, &s->db, smtp_config_reply) < 0)
        return HANDLER_EXIT_PERM;
    /* Implicit TLS (submissions, port 465) starts here, before the greeting. Without a
     * certificate it cannot (a configuration error); a failed handshake is the client's. */
    if (handler_tls(&s->cfg, &s->io, (int)(s->cfg.smtp_timeout * 1000), &s->tls_ready) < 0)
        return s->tls_ready ? HANDLER_EXIT_OK : HANDLER_EXIT_PERM;
    smtp_enter(s, SMTP_CONNECTED, tls_active(&s->io) ? SMTP_F_TLS : 0);
    smtp_milter_start(s); /* before the greeting, as Postfix: the connect event */
    smtp_reply(s, R_GREETING, s->cfg.hostname);

    static char line[LIM_SMTP_LINE + 1];
    while (!s->quit) {
        enum handler_read r = handler_read_command(&s->io, line, LIM_SMTP_LINE);
        if (r == HR_COMMAND) {
            smtp_dispatch(s, line);
        } else if (r == HR_TOOLONG || r == HR_NUL) {
            smtp_dispatch_error(s, r == HR_TOOLONG ? R_TOOLONG : R_UNKNOWN);
        } else if (r == HR_TIMEOUT) {
            smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
            smtp_end(s, END_TIMEOUT);
        } else {
            smtp_end(s, END_EOF);
        }
    }
    io_flush(&s->io);
    tls_end(&s->io);
    smtp_tx_reset(s);
    smtp_milter_quit(s);
    db_close(&s->db);
    log_event(LOG_INFO, "disconnect", "reason=%s messages=%ld errors=%d", ends[s->end].name,
              s->messages, s->errors);
    return ends[s->end].status;
}
