/*
 * sql.c - every SQL statement of pgmail-pop3d, run with PQexecParams (values only as
 * parameters, bodies returned in binary). The session runs inside one READ COMMITTED
 * transaction: it never holds row locks before QUIT, so SMTP delivery into the mailbox is
 * never delayed by a reader.
 */
#include "sql.h"

static const char *const statements[] = {
    /* Named, not inherited: numbering the maildrop relies on each statement seeing what
     * was committed before it (pgmail_pop3_open, migrations/003), whatever the server's
     * default_transaction_isolation says. */
    [SQL_BEGIN] = "BEGIN ISOLATION LEVEL READ COMMITTED",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    /* The mailbox lock, then the totals and the highest mailbox id, in one round trip: the
     * function explains the order and why the idle_in_transaction_session_timeout is off
     * for the session's transaction (migrations/003), and the lock's key (migrations/004). */
    [SQL_OPEN] = "SELECT locked, message_count, used_bytes, last_id FROM pgmail_pop3_open($1)",
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
     * last one out removes the bytes (none is left behind, none removed too early). The
     * same holds against pgmail-relay finishing the message's queue rows: the bytes stay
     * while pgmail_message_needed (migrations/006) says a mailbox row, an unfinished queue
     * row or a DSN still owed needs them. */
    [SQL_LOCK_MESSAGES] = "SELECT id FROM messages WHERE id = ANY ($1::bigint[]) ORDER BY id"
                          " FOR UPDATE",
    [SQL_DELETE_ORPHANS] = "DELETE FROM messages m WHERE m.id = ANY ($1::bigint[])"
                           " AND NOT pgmail_message_needed(m.id)",
};

const char *pop3_sql(enum pop3_sql_id id)
{
    return statements[id];
}
