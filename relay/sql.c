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
     * SMTP transaction. The statement is its own transaction, and it commits without
     * waiting for the WAL flush (claim.c says why that is safe). A function
     * (migrations/009), so that the server keeps its plans. */
    [SQL_CLAIM] = "SELECT queue_id, message_id, recipient, sender, size, age, body, skip"
                  " FROM pgmail_relay_claim($1, $2, $3, $4, $5)",
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
    /* A message's outcome in one call (migrations/009): each recipient's new state (the
     * rules: outcome.c) and attempt row, and the message freed when nothing needs it. */
    [SQL_OUTCOME] = "SELECT queue_id, state, attempts FROM pgmail_relay_outcome($1, $2,"
                    " $3::bigint[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[],"
                    " $9::text[], $10::text[], $11, $12, $13)",
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
