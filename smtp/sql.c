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
    [SQL_SENDER_OWNED] = "SELECT 1 FROM accounts WHERE id = $1 AND lower(address) = $2"
                         " UNION ALL"
                         " SELECT 1 FROM aliases WHERE account_id = $1 AND lower(address) = $2",
    /* One row per target account; a row with NULL account means "local domain, no such
     * user"; no row means the domain is not ours. Quota fields are for the RCPT check; the
     * statement_timeout tells DATA whether it must switch one off (store.c); with $3 true
     * the rows also carry a fresh message id, which the COPY stores. The function
     * (migrations/003) keeps its plan for the life of the server connection. */
    [SQL_RCPT_LOOKUP] = "SELECT domain_id, account_id, quota_bytes, used_bytes, statement_timeout,"
                        " message_id FROM pgmail_rcpt_lookup($1, $2, $3)",
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
    /* One messages row, and with it the delivery: deliver_to names the accounts, and the
     * row's insert trigger (migrations/003, pgmail_deliver_message) gives each a mailbox
     * row within its quota or fails the whole COPY with SQLSTATE PM001. The size comes
     * last: store.c writes it once the body has streamed through. */
    [SQL_COPY_MESSAGE] =
        "COPY messages (id, sender, session_id, deliver_to, body, size) FROM STDIN",
    /* When the server has a statement_timeout the COPY runs without it (above) and without
     * accounts, and this delivers the row afterwards, under the operator's timeout again
     * (the same delivery as the trigger's, migrations/003). */
    [SQL_DELIVER_LATER] = "SELECT pgmail_deliver_later($1, $2)",
    /* A bounce to the sender's own mailbox is small and always delivered, quota or not:
     * it is the only notice the sender gets. Account row first, as in pgmail_deliver_message. */
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
