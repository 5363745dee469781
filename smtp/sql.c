/*
 * sql.c - every SQL statement of pgmail-smtpd, run with PQexecParams (values only as
 * parameters; the notice's body as a binary bytea parameter), and the one row of COPY
 * that streams a message in (the layout of that row lives here, next to its column list;
 * store.c only decides when each part is sent). No statement keeps session state, so all
 * of them work behind PgBouncer in transaction pooling mode.
 */
#include "sql.h"
#include "db.h"

#include <stdio.h>
#include <string.h>

static const char *const statements[] = {
    [SQL_BEGIN] = "BEGIN",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_SENDER_OWNED] = "SELECT 1 FROM accounts WHERE id = $1 AND lower(address) = $2"
                         " UNION ALL"
                         " SELECT 1 FROM aliases WHERE account_id = $1 AND lower(address) = $2",
    /* Four jobs in one round trip (migrations/005 and 009), one column group each:
     *   0-3  the lookup (pgmail_rcpt_targets): one row per target account; a row with a
     *        NULL account means "local domain, no such user"; no row means the domain is
     *        not ours, and so does, for an authenticated sender ($4, with $5 the configured
     *        max_outbound_per_hour), one row with a NULL domain, whose column 7 is then
     *        how many more remote recipients the account may send in the rolling hour
     *        (NULL: no limit). Quota fields are for the RCPT check.
     *   4    the server's statement_timeout, which tells DATA whether it must switch one
     *        off around the COPY (store.c);
     *   5    with $3 true, a fresh message id (pgmail_next_message_id), which the COPY
     *        stores; NULL otherwise.
     *   6    for an unknown local user, whether the sender's mailbox has room for the
     *        notice (pgmail_notice_room).
     * The functions keep their plans for the life of the server connection. */
    [SQL_RCPT_LOOKUP] = "SELECT domain_id, account_id, quota_bytes, used_bytes, statement_timeout,"
                        " message_id, notice_room, room"
                        " FROM pgmail_rcpt_lookup($1, $2, $3, $4, $5::int)",
    [SQL_POSTMASTER] = "SELECT lower(name) FROM domains ORDER BY lower(name) = lower($1) DESC, id"
                       " LIMIT 1",
    /* The COPY of a message lasts as long as the client takes to send it, which our own
     * timeouts bound (smtp_timeout per data block); a server-wide statement_timeout must
     * not cut a slow sender off at the final dot again and again. So it is off for the
     * COPY alone and restored for the statements after it. set_config(..., true) is SET
     * LOCAL: it ends with the transaction, so nothing leaks to a pooled connection.
     * Without a server-wide statement_timeout (the default) neither statement runs. */
    [SQL_NO_STATEMENT_TIMEOUT] = "SELECT current_setting('statement_timeout'),"
                                 " set_config('statement_timeout', '0', true)",
    [SQL_SET_STATEMENT_TIMEOUT] = "SELECT set_config('statement_timeout', $1, true)",
    /* One messages row, and with it the delivery: deliver_to names the accounts and
     * relay_to the remote recipients, and the row's insert trigger (migrations/007,
     * pgmail_deliver_partial) gives each account a mailbox row within its quota, a bounced
     * queue row to each full or gone one, a queue row to each remote recipient, and fails
     * the whole COPY only when nobody got it: SQLSTATE PM001 (a quota) or PM003 (all
     * gone). The row's text is written by smtp_sql_copy_head, the body's hex and
     * smtp_sql_copy_tail below. */
    [SQL_COPY_MESSAGE] = "COPY messages (id, sender, session_id, deliver_to, deliver_names,"
                         " relay_to, submitted_by, body, size) FROM STDIN",
    /* With milters the header section comes last: they may change it at the end of the
     * message, when the body is already in this row. The row's head column is put before
     * its body by a BEFORE INSERT trigger (migrations/011), before the delivery sees it. */
    [SQL_COPY_HEAD_LAST] = "COPY messages (id, sender, session_id, deliver_to, deliver_names,"
                           " relay_to, submitted_by, body, head, size) FROM STDIN",
    /* When the server has a statement_timeout the COPY runs without it (above) and without
     * recipients, and this delivers the row afterwards, under the operator's timeout again
     * (the same delivery as the trigger's, migrations/007). */
    [SQL_DELIVER_LATER] = "SELECT pgmail_deliver_later($1, $2, $3, $4, $5)",
    /* The notice of unknown recipients, to the sender's own mailbox: stored and delivered
     * by the same function as any message, whatever the quota (migrations/005 says why). */
    [SQL_DELIVER_NOTICE] = "SELECT pgmail_deliver_notice($1, $2, $3)",
};

const char *smtp_sql(enum smtp_sql_id id)
{
    return statements[id];
}

/* copy_text: s in COPY text format at out + *o: backslash, tab, CR and LF escaped
 * (PostgreSQL COPY, "File Formats"), NULL as \N. -1 when it does not fit. */
static int copy_text(char *out, size_t cap, size_t *o, const char *s)
{
    if (!s)
        return db_append(out, cap, o, "\\N", 2);
    for (; *s; s++) {
        char esc[2] = {'\\', *s == '\t' ? 't' : *s == '\r' ? 'r' : *s == '\n' ? 'n' : *s};
        int special = *s == '\\' || *s == '\t' || *s == '\r' || *s == '\n';
        if (db_append(out, cap, o, special ? esc : s, special ? 2 : 1) < 0)
            return -1;
    }
    return 0;
}

size_t smtp_sql_copy_head(char *out, size_t cap, const struct smtp_sql_row *row)
{
    /* The columns of SQL_COPY_MESSAGE before the body, in order, each escaped for COPY (an
     * array literal's backslashes too), then the body's hex prefix ("\\x" escaped). */
    const char *const cols[] = {row->id,          row->sender,        row->session,
                                row->deliver_to,  row->deliver_names, row->relay_to,
                                row->submitted_by};
    size_t o = 0;
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (copy_text(out, cap, &o, cols[i]) < 0 || db_append(out, cap, &o, "\t", 1) < 0)
            return 0;
    return db_append(out, cap, &o, "\\\\x", 3) < 0 ? 0 : o;
}

size_t smtp_sql_copy_body(char *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[(unsigned char)p[i] >> 4];
        out[2 * i + 1] = hex[(unsigned char)p[i] & 15];
    }
    return 2 * n;
}

size_t smtp_sql_copy_next_bytea(char *out, size_t cap)
{
    size_t o = 0;
    return db_append(out, cap, &o, "\t\\\\x", 4) < 0 ? 0 : o;
}

size_t smtp_sql_copy_tail(char *out, size_t cap, long long size)
{
    int n = snprintf(out, cap, "\t%lld\n", size);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
