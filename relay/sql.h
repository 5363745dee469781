/*
 * sql.h - the statements of pgmail-relay (all of its SQL lives in sql.c).
 *
 * "due" below means: state queued or deferred, next_attempt <= now(), and no live lease
 * (lease_until NULL or past). $owner is a lease owner, "host:pid:n" (one per agent).
 */
#ifndef PGMAIL_RELAY_SQL_H
#define PGMAIL_RELAY_SQL_H

#include <libpq-fe.h>

enum relay_sql_id {
    SQL_BEGIN,
    SQL_COMMIT,
    SQL_ROLLBACK,
    SQL_LISTEN, /* LISTEN pgmail_queue (migrations/006's trigger notifies) */
    /* $1 full domains[], $2 all full (bool), $3 delay_warning_time -> seconds until the
     * next due row or delay warning (NULL when none; <= 0: now) */
    SQL_NEXT_DUE,
    /* $1 full domains[], $2 how many -> domains with due rows, most overdue first */
    SQL_DUE_DOMAINS,
    /* $1 owner, $2 lease seconds, $3 domain (NULL: any, the relayhost), $4 messages, $5
     * octets -> claims their due rows: queue id, message id, recipient, sender, size (-1:
     * the message row is gone), age in seconds, the body when the message has at most $5
     * octets (in its first row only; else NULL); by message id, queue id. Committed
     * without waiting for the WAL flush. */
    SQL_CLAIM,
    /* $1 owner, $2 lease seconds -> the queue ids still leased to owner (renewed) */
    SQL_RENEW,
    SQL_RENEW_AGENTS, /* $1 owners[], $2 lease seconds: the scheduler renews its agents' */
    SQL_RELEASE,      /* $1 owner: unfinished rows leased to owner become due again at once */
    /* $1 message id, $2 offset (1-based), $3 length -> that slice of the body (binary) */
    SQL_CHUNK,
    /* $1 message id, $2 owner, per recipient ($3 queue ids[], $4 kinds[] 2/4/5, $5
     * codes[] (NULL), $6 statuses[], $7 replies[], $8 hosts[], $9 addresses[], $10 tls[]),
     * $11 queue_lifetime, $12 min backoff, $13 max backoff -> queue id, new state,
     * attempts of each row still leased to owner; and the message freed when unneeded */
    SQL_OUTCOME,
    SQL_LOCK_MESSAGE, /* $1 message id -> locks the messages row (no row: gone) */
    SQL_FREE_MESSAGE, /* $1 message id: deletes it unless pgmail_message_needed */
    /* -> the rows of one message that owe a DSN, locked: queue id, message id, sender,
     * recipient, dsn, last status, last host, last code, last reply, last attempt,
     * arrival (unix time) */
    SQL_DSN_PICK,
    SQL_DSN_HEADERS, /* $1 message id, $2 length -> the body's first octets (binary) */
    SQL_DSN_STORE,   /* $1 recipient, $2 body (binary), $3 session, $4 recipient_delimiter
                        -> pgmail_store_dsn */
    SQL_DSN_DONE,    /* $1 queue ids[]: the DSN is written (warned once delayed) */
    SQL_WARN,        /* $1 delay_warning_time: deferred rows that owe a delay warning */
    SQL_PRUNE,       /* $1 days: finished rows older than that go */
};

/* relay_sql: the text of a statement. */
const char *relay_sql(enum relay_sql_id id);

/* relay_sql_num: the integer in row, col of a result (0 when it is not one). */
long long relay_sql_num(const PGresult *r, int row, int col);

#endif
