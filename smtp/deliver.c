/*
 * deliver.c - store an accepted message in one database transaction (RFC 5321 6.1: once
 * we say 250 we are responsible for it, so 250 is only said after COMMIT).
 *
 * The bytes are stored once (messages) with one mailbox row per distinct account and one
 * queue row per remote recipient, written by the row's insert trigger (migrations/007); an
 * account that is full or gone by now gets a bounced queue row instead, from which
 * pgmail-relay writes the sender a DSN, and the message is still 250 for the others. One
 * notice of the unknown local recipients of an authenticated sender (bounce.c) goes into
 * the sender's own mailbox in the same transaction (migrations/005). Any failure rolls
 * everything back and answers 451 4.3.0, or 552 5.2.2 / 550 5.1.1 when no recipient could
 * take the message (a quota; every account gone): stored whole or not at all.
 */
#include "smtpd.h"
#include "log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* store_notice: the one notice of the message's unknown recipients, to the sender's own
 * mailbox (migrations/005: delivered whatever the quota); its id goes to id when the
 * message itself had no local account to go to. */
static enum db_status store_notice(struct smtp_session *s, const char *msg, size_t len,
                                   int complete, char *id, size_t idlen)
{
    static char notice[LIM_NOTICE];
    size_t n = smtp_notice_text(s, msg, len, complete, notice);
    if (n == 0)
        return DB_TEMP;
    const char *vals[3] = {s->auth_id, s->peer.session, notice};
    const int lens[3] = {0, 0, (int)n}, fmts[3] = {0, 0, 1};
    PGresult *res = NULL;
    enum db_status st = db_exec(&s->db, smtp_sql(SQL_DELIVER_NOTICE), 3, vals, lens, fmts, &res);
    if (st != DB_OK)
        return st == DB_NOTFOUND ? DB_TEMP : st;
    if (!id[0])
        snprintf(id, idlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    log_event(LOG_INFO, "notice-stored", "to-account=%s size=%zu recipients=%zu", s->auth_id, n,
              s->tx.nbounces);
    return DB_OK;
}

/* The SQLSTATEs of pgmail_deliver_partial (migrations/007) when no recipient could take
 * the message: some account would pass its quota; every account is gone. */
#define SQLSTATE_QUOTA "PM001"
#define SQLSTATE_GONE  "PM003"

enum smtp_reply_id smtp_deliver(struct smtp_session *s, struct smtp_store *st, const char *prefix,
                                size_t plen, int complete, char *id, size_t idlen)
{
    size_t count = st ? st->count : 0;
    enum smtp_reply_id reply = R_TEMP;
    enum db_status r = DB_OK;
    char size[24] = "0";
    id[0] = '\0';
    if (st) {
        /* The end of the COPY delivers; without st->txn it also commits. A failure says
         * its SQLSTATE afresh (none when it never reached the server). */
        s->db.sqlstate[0] = '\0';
        r = smtp_store_end(s, st);
        snprintf(size, sizeof size, "%lld", st->bytes);
        if (r != DB_OK && strcmp(s->db.sqlstate, SQLSTATE_QUOTA) == 0)
            reply = R_QUOTA_DATA; /* nobody got it, and some account would pass its quota */
        else if (r != DB_OK && strcmp(s->db.sqlstate, SQLSTATE_GONE) == 0)
            reply = R_ALL_GONE; /* every account was deleted since RCPT */
        else if (r == DB_OK)    /* before store_notice, which names it otherwise */
            snprintf(id, idlen, "%s", s->tx.message_id);
    } else {
        r = db_exec(&s->db, smtp_sql(SQL_BEGIN), 0, NULL, NULL, NULL, NULL);
    }
    if (r == DB_OK && s->tx.nbounces)
        r = store_notice(s, prefix, plen, complete, id, idlen);
    if (r == DB_OK && (!st || st->txn))
        r = db_exec(&s->db, smtp_sql(SQL_COMMIT), 0, NULL, NULL, NULL, NULL);
    if (r == DB_OK) {
        s->messages++;
        log_event(LOG_INFO, "message-stored", "id=%s size=%s accounts=%zu remote=%zu unknown=%zu",
                  id, size, count, s->tx.nremote, s->tx.nbounces);
        return R_STORED;
    }
    /* Nothing was committed: a failed COPY of its own rolled itself back, and rolling back
     * on a dead connection fails too. */
    if (db_in_transaction(&s->db))
        db_rollback(&s->db, smtp_sql(SQL_ROLLBACK));
    log_event(LOG_WARNING, "message-failed", "reason=%s sqlstate=%s error=\"%s\"",
              reply == R_QUOTA_DATA ? "quota"
              : reply == R_ALL_GONE ? "gone"
                                    : "database",
              s->db.sqlstate, s->db.error);
    return reply;
}
