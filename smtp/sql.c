/*
 * sql.c - every SQL statement of pgmail-smtpd, run with PQexecParams (values only as
 * parameters, bodies as binary bytea). No statement keeps session state, so all of them
 * work behind PgBouncer in transaction pooling mode.
 */
#include "sql.h"

static const char *const statements[] = {
    [SQL_BEGIN] = "BEGIN",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_AUTH_LOOKUP] = "SELECT id, password_hash FROM accounts WHERE lower(address) = lower($1)",
    [SQL_SENDER_OWNED] = "SELECT 1 FROM accounts WHERE id = $1 AND lower(address) = $2"
                         " UNION ALL"
                         " SELECT 1 FROM aliases WHERE account_id = $1 AND lower(address) = $2",
    /* One row per target account; a row with NULL account means "local domain, no such
     * user"; no row means the domain is not ours. Quota fields are for the RCPT check; the
     * statement_timeout tells DATA whether it must switch one off (store.c). */
    [SQL_RCPT_LOOKUP] =
        "SELECT d.id, t.id, t.quota_bytes, t.used_bytes, current_setting('statement_timeout')"
        " FROM domains d"
        " LEFT JOIN LATERAL (SELECT a.id, a.quota_bytes, a.used_bytes FROM accounts a"
        "   WHERE a.id IN (SELECT id FROM accounts WHERE lower(address) = $1"
        "                  UNION SELECT account_id FROM aliases WHERE lower(address) = $1)"
        " ) t ON true WHERE lower(d.name) = $2",
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
    /* The size comes last: store.c writes it once the body has streamed through. The id is
     * the column default: SQL_DELIVER reads it back with currval in the same transaction
     * (and so on the same server connection, with or without a pooler). */
    [SQL_COPY_MESSAGE] = "COPY messages (sender, session_id, body, size) FROM STDIN",
    /* The message is stored once (by the COPY); each distinct account gets a mailbox row
     * and its usage grows, but only while it stays within its quota: fewer rows back than
     * accounts sent means a quota would be exceeded, and the caller rolls back.
     * The account row is locked (UPDATE) before its mailbox row takes an id, and stays
     * locked until COMMIT: so within one mailbox ids become visible in increasing order,
     * which pop3/ relies on to number a mailbox from its totals and highest id alone. */
    [SQL_DELIVER] =
        "WITH q AS (UPDATE accounts SET used_bytes = used_bytes + $2,"
        "                               message_count = message_count + 1"
        "           WHERE id = ANY ($1::bigint[])"
        "             AND (quota_bytes IS NULL OR used_bytes + $2 <= quota_bytes) RETURNING id)"
        " INSERT INTO mailbox (account_id, message_id, size)"
        " SELECT q.id, currval(pg_get_serial_sequence('messages', 'id')), $2 FROM q"
        " RETURNING message_id",
    /* A bounce to the sender's own mailbox is small and always delivered, quota or not:
     * it is the only notice the sender gets. Account row first, as for SQL_DELIVER. */
    [SQL_DELIVER_BOUNCE] = "WITH m AS (INSERT INTO messages (sender, size, session_id, body)"
                           "           VALUES ('', $2, $3, $4) RETURNING id),"
                           " q AS (UPDATE accounts SET used_bytes = used_bytes + $2,"
                           "       message_count = message_count + 1 WHERE id = $1 RETURNING id)"
                           " INSERT INTO mailbox (account_id, message_id, size)"
                           " SELECT q.id, m.id, $2 FROM q, m RETURNING message_id",
};

const char *smtp_sql(enum smtp_sql_id id)
{
    return statements[id];
}
