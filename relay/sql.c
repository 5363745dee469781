/*
 * sql.c - every SQL statement of pgmail-relay, run with PQexecParams (values only as
 * parameters; bodies come back in binary). The queue is migrations/006.
 *
 * Claiming (STYLE.md habit 17): a row is worked only under a lease (lease_owner,
 * lease_until), taken with FOR UPDATE SKIP LOCKED in READ COMMITTED: a row another relay
 * leased after our snapshot is locked in its new version and fails the re-checked
 * condition, so two relays never hold the same row. Every later write of a worked row
 * names the owner, so a relay whose lease ran out (and was taken over) changes nothing.
 */
#include "sql.h"

#include <stdlib.h>

/* A row that may be claimed now. */
#define DUE                                                                                        \
    "state IN ('queued', 'deferred') AND next_attempt <= now()"                                    \
    " AND (lease_until IS NULL OR lease_until < now())"

static const char *const statements[] = {
    [SQL_BEGIN] = "BEGIN ISOLATION LEVEL READ COMMITTED",
    [SQL_COMMIT] = "COMMIT",
    [SQL_ROLLBACK] = "ROLLBACK",
    [SQL_LISTEN] = "LISTEN pgmail_queue",
    /* A leased row is due again when its lease runs out (its relay may have died). */
    [SQL_NEXT_DUE] =
        "SELECT extract(epoch FROM least("
        "  (SELECT min(greatest(next_attempt, coalesce(lease_until, next_attempt))) FROM queue"
        "    WHERE NOT $2::boolean AND state IN ('queued', 'deferred')"
        "      AND domain <> ALL ($1::text[])),"
        "  (SELECT min(arrived_at) + make_interval(secs => $3::double precision) FROM queue"
        "    WHERE $3::bigint > 0 AND state = 'deferred' AND NOT warned AND dsn IS NULL"
        "      AND sender <> '')) - now())::double precision",
    [SQL_DUE_DOMAINS] = "SELECT domain FROM queue WHERE " DUE " AND domain <> ALL ($1::text[])"
                        " GROUP BY domain ORDER BY min(next_attempt) LIMIT $2::int",
    /* Whole messages: all of a message's due recipients for the destination go into one
     * SMTP transaction. The statement is its own transaction, and a commits it without
     * waiting for the WAL flush (claim.c says why that is safe): set_config(..., true)
     * lasts until that commit, which reads it (a is volatile, so evaluated once, and
     * joined so that it runs whenever a row is leased). */
    [SQL_CLAIM] = "WITH a AS (SELECT set_config('synchronous_commit', 'off', true)),"
                  " m AS (SELECT DISTINCT message_id FROM queue"
                  "           WHERE " DUE " AND ($3::text IS NULL OR domain = $3)"
                  "           ORDER BY message_id LIMIT $4::int),"
                  " c AS (SELECT id FROM queue"
                  "       WHERE message_id IN (SELECT message_id FROM m) AND " DUE
                  "         AND ($3::text IS NULL OR domain = $3)"
                  "       FOR UPDATE SKIP LOCKED),"
                  " u AS (UPDATE queue q SET lease_owner = $1,"
                  "         lease_until = now() + make_interval(secs => $2::double precision)"
                  "       FROM c WHERE q.id = c.id"
                  "       RETURNING q.id, q.message_id, q.recipient, q.sender, q.arrived_at)"
                  " SELECT u.id, u.message_id, u.recipient, u.sender, coalesce(m.size, -1),"
                  "        extract(epoch FROM now() - u.arrived_at)::bigint,"
                  "        CASE WHEN m.size <= $5::bigint"
                  "          AND u.id = min(u.id) OVER (PARTITION BY u.message_id) THEN m.body END,"
                  /* The octets of the Return-Path line pgmail-smtpd stored first: RFC 5321
                   * 4.4, a message goes on without one (the final delivery adds its own). */
                  "        CASE WHEN substring(m.body FROM 1 FOR 13)"
                  "                  = '\\x52657475726e2d506174683a20'::bytea"
                  "          THEN coalesce(nullif(position('\\x0d0a'::bytea"
                  "                 IN substring(m.body FROM 1 FOR 600)), 0) + 1, 0) ELSE 0 END"
                  " FROM u CROSS JOIN a LEFT JOIN messages m ON m.id = u.message_id"
                  " ORDER BY u.message_id, u.id",
    [SQL_RENEW] =
        "UPDATE queue SET lease_until = now() + make_interval(secs => $2::double precision)"
        " WHERE lease_owner = $1 AND state IN ('queued', 'deferred') RETURNING id",
    [SQL_RENEW_AGENTS] =
        "UPDATE queue SET lease_until = now() + make_interval(secs => $2::double precision)"
        " WHERE lease_owner = ANY ($1::text[]) AND state IN ('queued', 'deferred')",
    [SQL_RELEASE] = "UPDATE queue SET lease_owner = NULL, lease_until = NULL"
                    " WHERE lease_owner = $1 AND state IN ('queued', 'deferred')",
    /* Bodies are stored uncompressed (migrations/001): a slice reads only its pages. */
    [SQL_CHUNK] = "SELECT substring(body FROM $2::int FOR $3::int) FROM messages WHERE id = $1",
    /* The outcome and its attempt row in one statement. A deferral waits the message's
     * age clamped to [min, max] backoff, +-10 % so that retries spread out (Postfix's
     * schedule); past queue_lifetime a temporary failure bounces. A bounce owes a DSN
     * unless the sender is null (RFC 3461 6.2: no DSN about a DSN). */
    [SQL_OUTCOME] =
        "WITH s AS (SELECT id, CASE WHEN $3::int = 2 THEN 'delivered'"
        "             WHEN $3::int = 5 OR arrived_at + make_interval(secs => $4::double precision)"
        "                  <= now() THEN 'bounced'"
        "             ELSE 'deferred' END AS st,"
        "           least(greatest(extract(epoch FROM now() - arrived_at), $5::double precision),"
        "                 $6::double precision) AS backoff"
        "           FROM queue WHERE id = $1 AND lease_owner = $2"
        "             AND state IN ('queued', 'deferred')),"
        " u AS (UPDATE queue q SET state = s.st, attempts = q.attempts + 1,"
        "         next_attempt = CASE WHEN s.st = 'deferred' THEN now()"
        "           + make_interval(secs => s.backoff * (0.9 + 0.2 * random()))"
        "           ELSE q.next_attempt END,"
        "         finished_at = CASE WHEN s.st <> 'deferred' THEN now() END,"
        "         dsn = CASE WHEN s.st = 'bounced' AND q.sender <> '' THEN 'failed'"
        "           ELSE q.dsn END,"
        "         lease_owner = NULL, lease_until = NULL, last_attempt = now(),"
        "         last_code = $7::int, last_status = $8, last_reply = $9,"
        "         last_host = nullif($10, ''), last_address = nullif($11, ''),"
        "         last_tls = nullif($12, '')"
        "       FROM s WHERE q.id = s.id RETURNING q.id, q.state, q.attempts),"
        " a AS (INSERT INTO queue_attempts (queue_id, outcome, code, status, reply, host,"
        "         address, tls)"
        "       SELECT id, state, $7::int, $8, $9, nullif($10, ''), nullif($11, ''),"
        "         nullif($12, '') FROM u)"
        " SELECT state, attempts FROM u",
    /* Every remover of messages rows locks the row first and asks in a statement of its
     * own (migrations/006), so that a concurrent remover sees the other's work. */
    [SQL_LOCK_MESSAGE] = "SELECT id FROM messages WHERE id = $1 FOR UPDATE",
    [SQL_FREE_MESSAGE] = "DELETE FROM messages WHERE id = $1 AND NOT pgmail_message_needed($1)",
    /* One message's owed DSNs at a time (one DSN names all its recipients); rows another
     * relay is writing are skipped. */
    [SQL_DSN_PICK] =
        "SELECT q.id, q.message_id, q.sender, q.recipient, q.dsn, coalesce(q.last_status, ''),"
        "  coalesce(q.last_host, ''), coalesce(q.last_code, 0), coalesce(q.last_reply, ''),"
        "  coalesce(extract(epoch FROM q.last_attempt)::bigint, 0),"
        "  extract(epoch FROM q.arrived_at)::bigint"
        " FROM queue q WHERE q.dsn IS NOT NULL AND q.message_id ="
        "  (SELECT message_id FROM queue WHERE dsn IS NOT NULL ORDER BY message_id LIMIT 1"
        "   FOR UPDATE SKIP LOCKED)"
        " ORDER BY q.id FOR UPDATE SKIP LOCKED",
    [SQL_DSN_HEADERS] = "SELECT substring(body FROM 1 FOR $2::int) FROM messages WHERE id = $1",
    /* migrations/008: a local sender's DSN goes into the mailbox, a remote one's is queued. */
    [SQL_DSN_STORE] = "SELECT pgmail_store_dsn($1, $2::bytea, $3, $4)",
    [SQL_DSN_DONE] = "UPDATE queue SET warned = warned OR dsn = 'delayed', dsn = NULL"
                     " WHERE id = ANY ($1::bigint[])",
    [SQL_WARN] = "UPDATE queue SET dsn = 'delayed'"
                 " WHERE state = 'deferred' AND NOT warned AND dsn IS NULL AND sender <> ''"
                 " AND arrived_at + make_interval(secs => $1::double precision) <= now()",
    [SQL_PRUNE] = "DELETE FROM queue WHERE finished_at < now() - make_interval(days => $1::int)"
                  " AND dsn IS NULL",
};

const char *relay_sql(enum relay_sql_id id)
{
    return statements[id];
}

long long relay_sql_num(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}
