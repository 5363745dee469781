/*
 * state.c - the session's state and its end, changed in one place each (STYLE.md habit 5).
 *
 * smtp_enter is the one function that moves the session between its states (smtpd.h:
 * CONNECTED, GREETED, MAIL, RCPT, with the AUTH and TLS flags) and frees a transaction
 * that ends; smtp_end records why the session ends (session.c turns it into the disconnect
 * log and the exit status). They live below every command file, so that the dispatcher
 * (commands.c), the loop (session.c) and the handlers (authcmd.c, envelope.c, data.c) all
 * call down into them and the files of smtp/ form a tree.
 */
#include "smtpd.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <syslog.h>

void smtp_enter(struct smtp_session *s, enum smtp_state to, unsigned flags)
{
    if (to <= SMTP_GREETED || to == SMTP_MAIL) {
        smtp_milter_abort(s); /* milters still in the message hear that it is over */
        free(s->tx.rcpts);
        free(s->tx.accounts);
        free(s->tx.named_by);
        memset(&s->tx, 0, sizeof s->tx);
    }
    if (to == SMTP_CONNECTED) {
        s->helo[0] = '\0';
        s->esmtp = 0;
    }
    if (!(flags & SMTP_F_AUTH)) {
        s->auth_id[0] = '\0';
        s->auth_user[0] = '\0';
    }
    s->state = to;
    s->flags = flags;
}

void smtp_tx_reset(struct smtp_session *s)
{
    smtp_enter(s, s->state == SMTP_CONNECTED ? SMTP_CONNECTED : SMTP_GREETED, s->flags);
}

int smtp_need_db(struct smtp_session *s)
{
    if (db_connect(&s->db) == DB_OK)
        return 0;
    log_event(LOG_ERR, "db-unreachable", "error=\"%s\"", s->db.error);
    smtp_reply(s, R_DB_DOWN, s->cfg.hostname);
    smtp_end(s, END_DB);
    return -1;
}

void smtp_end(struct smtp_session *s, enum smtp_end why)
{
    if (s->end == END_NONE)
        s->end = why;
    s->quit = 1;
}
