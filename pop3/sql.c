/*
 * sql.c - every SQL statement of pgmail-pop3d, run with PQexecParams (values only as
 * parameters, bodies returned in binary). The session runs inside one READ COMMITTED
 * transaction: it never holds row locks before QUIT, so SMTP delivery into the mailbox is
 * never delayed by a reader.
 */
#include "sql.h"

static const char *const statements[] = {
    /* Named, not inherited: numbering the maildrop relies on each statement seeing what
     * was committed before it (sql.c SQL_MAILBOX_TOTALS), whatever the server's
     * default_transaction_isolation says. */
    [SQL_BEGIN] = "BEGIN ISOLATION LEVEL READ COMMITTED",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_AUTH_LOOKUP] = "SELECT id, password_hash FROM accounts WHERE lower(address) = lower($1)",
    /* 7101 marks pgmail's mailbox locks among other users of advisory locks.
     * The session's transaction waits for the client between commands, which pop3_timeout
     * bounds (RFC 1939 autologout); a server-wide idle_in_transaction_session_timeout
     * shorter than that would end sessions under a reading user. Transaction-local (SET
     * LOCAL), so nothing leaks to a pooled connection; set in the same round trip. */
    [SQL_LOCK] = "SELECT pg_try_advisory_xact_lock(7101, $1::int),"
                 " set_config('idle_in_transaction_session_timeout', '0', true)",
    /* A statement after SQL_LOCK, so that its snapshot sees the previous holder's QUIT.
     * The totals are kept by every writer of mailbox rows (migrations/002); the highest id
     * fixes the maildrop: ids of one mailbox become visible in increasing order
     * (migrations/003, pgmail_deliver), so the rows up to it are exactly the ones counted here. */
    [SQL_MAILBOX_TOTALS] = "SELECT a.message_count, a.used_bytes,"
                           " coalesce((SELECT max(b.id) FROM mailbox b"
                           "           WHERE b.account_id = a.id), 0)"
                           " FROM accounts a WHERE a.id = $1",
    /* Read page by page (keyset), so that neither side holds a huge result at once. */
    [SQL_LIST] = "SELECT id, size FROM mailbox WHERE account_id = $1 AND id > $2 AND id <= $3"
                 " ORDER BY id LIMIT $4",
    /* Bodies are stored uncompressed (migrations/001), so a slice reads only its pages. */
    [SQL_CHUNK] = "SELECT substring(m.body FROM $3::int FOR $4::int)"
                  " FROM mailbox b JOIN messages m ON m.id = b.message_id"
                  " WHERE b.id = $1 AND b.account_id = $2",
    [SQL_DELETE] =
        "WITH d AS (DELETE FROM mailbox WHERE account_id = $1 AND id = ANY ($2::bigint[])"
        "           RETURNING message_id, size),"
        " u AS (UPDATE accounts SET"
        "         used_bytes = greatest(used_bytes - (SELECT coalesce(sum(size), 0) FROM d), 0),"
        "         message_count = greatest(message_count - (SELECT count(*) FROM d), 0)"
        "       WHERE id = $1)"
        " SELECT message_id FROM d",
    /* Two mailboxes that share a message may QUIT at the same time: each locks the message
     * rows first, so the second sees the first's removal in its next statement and the
     * last one out removes the bytes (none is left behind, none removed too early). */
    [SQL_LOCK_MESSAGES] = "SELECT id FROM messages WHERE id = ANY ($1::bigint[]) ORDER BY id"
                          " FOR UPDATE",
    [SQL_DELETE_ORPHANS] = "DELETE FROM messages m WHERE m.id = ANY ($1::bigint[])"
                           " AND NOT EXISTS (SELECT 1 FROM mailbox b WHERE b.message_id = m.id)",
};

const char *pop3_sql(enum pop3_sql_id id)
{
    return statements[id];
}
