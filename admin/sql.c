/*
 * sql.c - the statement table of pgmailctl and the functions that run it (see sql.h).
 *
 * All SQL text of pgmailctl is here; migrations/ holds the schema itself. Addresses and
 * domain names are stored lower-case and looked up as lower(column) = $1, which is what the
 * unique indexes of 001_initial.sql are built on (so rows written by other tools in mixed
 * case are still found, and ON CONFLICT can name those indexes).
 *
 * Concurrency: changes to a domain's accounts and aliases run in a transaction that first
 * locks the domain row (ADMIN_SQL_DOMAIN_LOCK), so "first account of the domain", "address
 * not yet taken" and "domain still empty" are decided without races. Migrations serialise on
 * a transaction-level advisory lock, which needs no session state (PgBouncer-safe).
 */
#include "sql.h"
#include "fail.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct statement {
    const char *text;
    int nparams;
} statements[ADMIN_SQL_COUNT_] = {
    [ADMIN_SQL_BEGIN] = {"BEGIN", 0},
    [ADMIN_SQL_COMMIT] = {"COMMIT", 0},
    [ADMIN_SQL_ROLLBACK] = {"ROLLBACK", 0},

    /* The key is 'pgmail' read as a big-endian number: fixed, and unlikely to collide. */
    [ADMIN_SQL_MIGRATE_LOCK] = {"SELECT pg_advisory_xact_lock(123589519042924)", 0},
    [ADMIN_SQL_MIGRATIONS_CREATE] = {"CREATE TABLE IF NOT EXISTS pgmail_migrations ("
                                     " version    int PRIMARY KEY,"
                                     " name       text NOT NULL,"
                                     " applied_at timestamptz NOT NULL DEFAULT now())",
                                     0},
    [ADMIN_SQL_MIGRATION_APPLIED] = {"SELECT name FROM pgmail_migrations WHERE version = $1", 1},
    [ADMIN_SQL_MIGRATION_RECORD] = {"INSERT INTO pgmail_migrations (version, name)"
                                    " VALUES ($1, $2)",
                                    2},

    /* domains: $1 is always a validated, lower-case name or a domain id. */
    [ADMIN_SQL_DOMAIN_FIND] = {"SELECT id FROM domains WHERE lower(name) = $1", 1},
    [ADMIN_SQL_DOMAIN_LOCK] = {"SELECT id FROM domains WHERE lower(name) = $1 FOR UPDATE", 1},
    [ADMIN_SQL_DOMAIN_INSERT] = {"INSERT INTO domains (name) VALUES ($1)"
                                 " ON CONFLICT ((lower(name))) DO NOTHING RETURNING id",
                                 1},
    [ADMIN_SQL_DOMAIN_USAGE] = {"SELECT (SELECT count(*) FROM accounts WHERE domain_id = $1),"
                                " (SELECT count(DISTINCT lower(address)) FROM aliases"
                                " WHERE domain_id = $1)",
                                1},
    [ADMIN_SQL_DOMAIN_DELETE] = {"DELETE FROM domains WHERE id = $1", 1},
    [ADMIN_SQL_DOMAIN_LIST] = {"SELECT name FROM domains ORDER BY lower(name)", 0},

    /* accounts */
    [ADMIN_SQL_ACCOUNT_FIND] = {"SELECT id FROM accounts WHERE lower(address) = $1", 1},
    [ADMIN_SQL_ACCOUNT_LOCK] = {"SELECT id FROM accounts WHERE lower(address) = $1 FOR UPDATE", 1},
    [ADMIN_SQL_ACCOUNT_INSERT] = {"INSERT INTO accounts (domain_id, address, password_hash,"
                                  " quota_bytes) VALUES ($1, $2, $3, $4)"
                                  " ON CONFLICT ((lower(address))) DO NOTHING RETURNING id",
                                  4},
    [ADMIN_SQL_ACCOUNT_COUNT] = {"SELECT count(*) FROM accounts WHERE domain_id = $1", 1},
    [ADMIN_SQL_ACCOUNT_PASSWORD] = {"UPDATE accounts SET password_hash = $2 WHERE id = $1"
                                    " RETURNING id",
                                    2},
    [ADMIN_SQL_ACCOUNT_QUOTA] = {"UPDATE accounts SET quota_bytes = $2"
                                 " WHERE lower(address) = $1 RETURNING id",
                                 2},
    /* $2: remote recipients per hour, -1 for no limit, NULL for max_outbound_per_hour. */
    [ADMIN_SQL_ACCOUNT_LIMIT] = {"UPDATE accounts SET outbound_limit = $2"
                                 " WHERE lower(address) = $1 RETURNING id",
                                 2},
    /* Deleting an account frees the messages only it still references, with the same locks
     * as a POP3 QUIT (pop3/sql.c): first its mailbox rows go (UNBOX, which returns the
     * message ids as a sorted array), then the message rows are locked in id order, then the
     * ones that no mailbox row references any more are deleted by a statement of their own.
     * That DELETE takes its snapshot after the locks are held, so it sees a concurrent
     * QUIT's removal of the other references, and that QUIT, if it comes second, sees ours:
     * whoever locks last removes the message. One statement doing all three would decide on
     * a snapshot from before the other side committed, and both could leave the message
     * behind (an orphan, which pgmailctl check finds). */
    [ADMIN_SQL_ACCOUNT_UNBOX] = {"WITH gone AS (DELETE FROM mailbox WHERE account_id = $1"
                                 " RETURNING message_id)"
                                 " SELECT coalesce(array_agg(DISTINCT message_id"
                                 " ORDER BY message_id), '{}') FROM gone",
                                 1},
    [ADMIN_SQL_MESSAGES_LOCK] = {"SELECT m.id FROM messages m WHERE m.id = ANY ($1::bigint[])"
                                 " ORDER BY m.id FOR UPDATE OF m",
                                 1},
    /* ... not needed any more: by no mailbox row, no unfinished queue row and no DSN still
     * owed (pgmail_message_needed, migrations/006; the relay frees it after those). */
    [ADMIN_SQL_MESSAGES_FREE] = {"DELETE FROM messages m WHERE m.id = ANY ($1::bigint[])"
                                 " AND NOT pgmail_message_needed(m.id)",
                                 1},
    [ADMIN_SQL_ACCOUNT_UNALIAS] = {"DELETE FROM aliases WHERE account_id = $1 RETURNING address",
                                   1},
    [ADMIN_SQL_ACCOUNT_DELETE] = {"DELETE FROM accounts WHERE id = $1", 1},
    [ADMIN_SQL_ACCOUNT_LIST] = {"SELECT a.address, a.quota_bytes, a.used_bytes, a.message_count"
                                " FROM accounts a JOIN domains d ON d.id = a.domain_id"
                                " WHERE $1::bigint IS NULL OR a.domain_id = $1"
                                " ORDER BY lower(d.name), lower(a.address)",
                                1},

    /* aliases: one row per (address, target account) */
    [ADMIN_SQL_ALIAS_FIND] = {"SELECT id FROM aliases WHERE lower(address) = $1 LIMIT 1", 1},
    [ADMIN_SQL_ALIAS_INSERT] = {"INSERT INTO aliases (domain_id, address, account_id)"
                                " VALUES ($1, $2, $3)"
                                " ON CONFLICT ((lower(address)), account_id) DO NOTHING"
                                " RETURNING id",
                                3},
    [ADMIN_SQL_ALIAS_DELETE] = {"DELETE FROM aliases WHERE lower(address) = $1 RETURNING id", 1},
    [ADMIN_SQL_ALIAS_DELETE_TARGET] = {"DELETE FROM aliases al USING accounts a"
                                       " WHERE a.id = al.account_id AND lower(al.address) = $1"
                                       " AND lower(a.address) = $2 RETURNING al.id",
                                       2},
    [ADMIN_SQL_ALIAS_LIST] = {"SELECT al.address, a.address"
                              " FROM aliases al JOIN accounts a ON a.id = al.account_id"
                              " JOIN domains d ON d.id = al.domain_id"
                              " WHERE $1::bigint IS NULL OR al.domain_id = $1"
                              " ORDER BY lower(d.name), lower(al.address), lower(a.address)",
                              1},

    /* pgmailctl check. A message is stored, delivered and queued in one transaction
     * (migrations/007), so a committed messages row that nothing needs (no mailbox row, no
     * unfinished queue row, no DSN still owed: pgmail_message_needed) is never mail in
     * transit: it is an orphan, whose bytes nobody can read or send any more. The purge
     * decides per row on its own snapshot; a row whose last reference a concurrent QUIT,
     * user del or pgmail-relay is removing is still referenced in it, and that transaction
     * frees the row itself. */
    [ADMIN_SQL_ORPHAN_LIST] = {"SELECT m.id, m.size, date_trunc('second', m.received_at)"
                               " FROM messages m WHERE NOT pgmail_message_needed(m.id)"
                               " ORDER BY m.id",
                               0},
    [ADMIN_SQL_ORPHAN_PURGE] = {"WITH d AS (DELETE FROM messages m"
                                " WHERE NOT pgmail_message_needed(m.id)"
                                " RETURNING m.id, m.size, date_trunc('second', m.received_at) AS t)"
                                " SELECT id, size, t FROM d ORDER BY id",
                                0},

    /* pgmailctl queue (migrations/006). $1 is a queue id (messages.id) or NULL. Remote
     * text (replies) is made one line here, so that a listing stays one row a line; the
     * queue's trigger NOTIFYs pgmail-relay of every row these make due. Rows a relay
     * holds under a live lease are being delivered: flush leaves them to it. */
    [ADMIN_SQL_QUEUE_LIST] =
        {"SELECT q.message_id, date_trunc('second', now() - q.arrived_at),"
         " CASE WHEN q.sender = '' THEN '<>' ELSE q.sender END, q.recipient, q.state,"
         " q.attempts,"
         " CASE WHEN q.state IN ('queued', 'deferred')"
         " THEN date_trunc('second', q.next_attempt)::text END,"
         " nullif(regexp_replace(concat_ws(' ', q.last_code, q.last_reply),"
         " '[[:cntrl:]]', ' ', 'g'), '')"
         " FROM queue q WHERE $1::boolean OR q.state IN ('queued', 'deferred', 'held')"
         " ORDER BY q.message_id, q.id",
         1},
    [ADMIN_SQL_QUEUE_ENVELOPE] = {"SELECT CASE WHEN q.sender = '' THEN '<>' ELSE q.sender END,"
                                  " m.size, date_trunc('second', min(q.arrived_at)),"
                                  " m.session_id"
                                  " FROM queue q LEFT JOIN messages m ON m.id = q.message_id"
                                  " WHERE q.message_id = $1"
                                  " GROUP BY q.sender, m.size, m.session_id LIMIT 1",
                                  1},
    [ADMIN_SQL_QUEUE_RECIPIENTS] =
        {"SELECT q.id, q.recipient, q.state, q.attempts,"
         " date_trunc('second', q.next_attempt), date_trunc('second', q.finished_at), q.dsn,"
         " q.lease_owner, date_trunc('second', q.lease_until)"
         " FROM queue q WHERE q.message_id = $1 ORDER BY q.id",
         1},
    [ADMIN_SQL_QUEUE_ATTEMPTS] =
        {"SELECT a.queue_id, date_trunc('second', a.at), a.outcome,"
         /* a remote reply's text starts with its enhanced code already: not twice */
         " regexp_replace(concat_ws(' ', a.code, CASE WHEN a.reply = a.status"
         " OR starts_with(a.reply, a.status || ' ') THEN NULL ELSE a.status END, a.reply),"
         " '[[:cntrl:]]', ' ', 'g'),"
         " concat_ws(' ', a.host, '[' || a.address || ']'), a.tls"
         " FROM queue_attempts a JOIN queue q ON q.id = a.queue_id"
         " WHERE q.message_id = $1 ORDER BY a.queue_id, a.id",
         1},
    [ADMIN_SQL_QUEUE_FLUSH] = {"WITH u AS (UPDATE queue SET next_attempt = now()"
                               " WHERE state IN ('queued', 'deferred')"
                               " AND ($1::bigint IS NULL OR message_id = $1::bigint)"
                               " AND (lease_until IS NULL OR lease_until <= now())"
                               " RETURNING 1) SELECT count(*) FROM u",
                               1},
    [ADMIN_SQL_QUEUE_HOLD] = {"WITH u AS (UPDATE queue SET state = 'held'"
                              " WHERE message_id = $1 AND state IN ('queued', 'deferred')"
                              " RETURNING 1) SELECT count(*) FROM u",
                              1},
    [ADMIN_SQL_QUEUE_RELEASE] = {"WITH u AS (UPDATE queue SET state = 'queued',"
                                 " next_attempt = now()"
                                 " WHERE message_id = $1 AND state = 'held'"
                                 " RETURNING 1) SELECT count(*) FROM u",
                                 1},
    /* queue delete: the unfinished rows go, and no DSN is written for the message, not
     * even one its finished rows still owed. */
    [ADMIN_SQL_QUEUE_DELETE] =
        {"WITH d AS (DELETE FROM queue WHERE message_id = $1"
         " AND state IN ('queued', 'deferred', 'held') RETURNING 1),"
         " n AS (UPDATE queue SET dsn = NULL WHERE message_id = $1"
         " AND state IN ('delivered', 'bounced') AND dsn IS NOT NULL RETURNING 1)"
         " SELECT count(*) FROM d",
         1},
    /* queue bounce: as if the remote had refused, but with our reason (no reply code, so
     * the DSN has no Diagnostic-Code) and RFC 3463's 5.0.0, recorded as an attempt for
     * queue show; the DSN is pgmail-relay's to write (dsn 'failed'; none to the null
     * sender). */
    [ADMIN_SQL_QUEUE_BOUNCE] =
        {"WITH u AS (UPDATE queue SET state = 'bounced', finished_at = now(),"
         " dsn = CASE WHEN sender = '' THEN NULL ELSE 'failed' END, last_code = NULL,"
         " last_status = '5.0.0', last_reply = 'deleted by the administrator',"
         " last_host = NULL, last_address = NULL, last_tls = NULL"
         " WHERE message_id = $1 AND state IN ('queued', 'deferred', 'held') RETURNING id),"
         " a AS (INSERT INTO queue_attempts (queue_id, outcome, status, reply)"
         " SELECT id, 'bounced', '5.0.0', 'deleted by the administrator' FROM u)"
         " SELECT count(*) FROM u",
         1},
    /* pgmailctl stats: $1 seconds back from now. One row per line of the report: section,
     * name, count, octets (NULL where it means nothing), in report order. The traffic comes
     * from the rows still there (messages, mailbox, queue, queue_attempts: what POP3 and
     * pruning removed is gone from these figures, never from the counters of
     * pgmail-metrics); the queue and mailboxes from migrations/010's views. Every window
     * is a range scan on an index of migrations/010 (messages_received_idx and
     * mailbox_received_idx cover their columns); the tops sort only the window's rows.
     * The window's start is written out in each place, not taken from a CTE: so the
     * planner estimates each range from now() and $1 and picks the index (a CTE hid the
     * value, and 1M messages were read for a window of 3,000). */
    [ADMIN_SQL_STATS] =
        {"WITH m AS (SELECT x.sender, x.size FROM messages x"
         "  WHERE x.received_at >= now() - make_interval(secs => $1::double precision))"
         " SELECT * FROM ("
         " SELECT 1 AS ord, 'in' AS section, NULL::text AS name, count(*) AS n,"
         "  coalesce(sum(m.size), 0) AS octets FROM m"
         " UNION ALL SELECT 2, 'out', NULL, count(*), NULL FROM queue_attempts a"
         "  WHERE a.at >= now() - make_interval(secs => $1::double precision)"
         "  AND a.outcome = 'delivered'"
         " UNION ALL SELECT 3, 'deferrals', NULL, count(*), NULL FROM queue_attempts a"
         "  WHERE a.at >= now() - make_interval(secs => $1::double precision)"
         "  AND a.outcome = 'deferred'"
         " UNION ALL SELECT 4, 'bounces', NULL, count(*), NULL FROM queue q"
         "  WHERE q.finished_at >= now() - make_interval(secs => $1::double precision)"
         "  AND q.state = 'bounced'"
         " UNION ALL (SELECT 5, 'sender', CASE WHEN m.sender = '' THEN '<>' ELSE m.sender END,"
         "  count(*), sum(m.size) FROM m GROUP BY m.sender ORDER BY 5 DESC, 3 LIMIT 10)"
         " UNION ALL (SELECT 6, 'recipient', r.name, count(*), sum(r.size) FROM ("
         "  SELECT lower(a.address) AS name, b.size FROM mailbox b"
         "   JOIN accounts a ON a.id = b.account_id"
         "   WHERE b.received_at >= now() - make_interval(secs => $1::double precision)"
         "  UNION ALL SELECT lower(q.recipient), y.size FROM queue q"
         "   JOIN messages y ON y.id = q.message_id"
         "   WHERE q.arrived_at >= now() - make_interval(secs => $1::double precision)"
         "   AND q.account_id IS NOT NULL) r"
         "  GROUP BY r.name ORDER BY 5 DESC, 3 LIMIT 10)"
         " UNION ALL SELECT 7, 'queue', q.state, q.recipients, NULL FROM pgmail_metrics_queue q"
         " UNION ALL SELECT 8, 'oldest_deferred', NULL, o.seconds::bigint, NULL"
         "  FROM pgmail_metrics_oldest_deferred o"
         " UNION ALL (SELECT 9, 'mailbox', x.address, x.messages, x.bytes"
         "  FROM pgmail_metrics_mailboxes x ORDER BY x.bytes DESC, x.address LIMIT 10)"
         ") t ORDER BY ord, octets DESC NULLS LAST, name",
         1},

    /* failed logins (migrations/012): $1 window seconds, $2 a client or login (NULL: all),
     * $3 auth_source_failures, $4 auth_account_failures -> kind, key, failures in the
     * window, the last, what the handlers do (cmd_abuse.c) */
    [ADMIN_SQL_ABUSE_LIST] =
        {"WITH w AS (SELECT * FROM auth_failures"
         "  WHERE at > now() - make_interval(secs => $1::double precision))"
         " SELECT kind, key, n,"
         "  to_char(last AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
         "  CASE WHEN kind = 'client' AND n >= $3::bigint THEN 'refused'"
         "   WHEN kind = 'login' AND n >= $4::bigint THEN 'refused-if-failed'"
         "   ELSE 'delayed' END"
         " FROM (SELECT 'client' AS kind, source AS key, count(*) AS n, max(at) AS last"
         "  FROM w GROUP BY source"
         "  UNION ALL SELECT 'login', login, count(*), max(at) FROM w GROUP BY login) t"
         " WHERE $2::text IS NULL OR key = $2 OR key = lower($2)"
         " ORDER BY kind, n DESC, key",
         4},
    /* $1 a client or login (NULL: all) -> the failed logins forgotten */
    [ADMIN_SQL_ABUSE_CLEAR] = {"WITH d AS (DELETE FROM auth_failures"
                               " WHERE $1::text IS NULL OR source = $1 OR login = lower($1)"
                               " RETURNING 1) SELECT count(*) FROM d",
                               1},
};

/* Server messages below WARNING (such as CREATE TABLE IF NOT EXISTS's "skipping") are noise
 * for an operator; warnings and above are shown as one line each. */
static void on_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!sev || !msg || strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0 ||
        strcmp(sev, "LOG") == 0 || strncmp(sev, "DEBUG", 5) == 0)
        return;
    fprintf(stderr, "pgmailctl: server %s: %s\n", sev, msg);
}

int admin_sql_connect(struct db *db)
{
    if (db_connect(db) != DB_OK) {
        admin_fail("cannot connect to the database: %s", db->error);
        return -1;
    }
    PQsetNoticeReceiver(db->conn, on_notice, NULL);
    return 0;
}

int admin_sql_failed(enum db_status st)
{
    return db_failed(st);
}

/* report: one line for a failed statement; an undefined table means an unmigrated schema. */
static void report(const struct db *db)
{
    /* libpq prefixes the server's message with its severity, which says nothing here. */
    const char *msg = db->error;
    if (strncmp(msg, "ERROR:  ", 8) == 0 || strncmp(msg, "FATAL:  ", 8) == 0)
        msg += 8;
    if (strcmp(db->sqlstate, "08001") == 0)
        admin_fail("cannot connect to the database: %s", msg);
    else if (strcmp(db->sqlstate, "42P01") == 0)
        admin_fail("database error: %s (run pgmailctl migrate)", msg);
    else
        admin_fail("database error: %s", msg);
}

enum db_status admin_sql_run(struct db *db, enum admin_stmt stmt, PGresult **res,
                             const char *const *vals, int n)
{
    if ((unsigned)stmt >= ADMIN_SQL_COUNT_ || !statements[stmt].text ||
        statements[stmt].nparams != n) {
        fprintf(stderr, "pgmailctl: internal error: statement %d with %d parameters\n", (int)stmt,
                n);
        abort();
    }
    enum db_status st = db_exec(db, statements[stmt].text, n, vals, NULL, NULL, res);
    if (admin_sql_failed(st))
        report(db);
    return st;
}

enum db_status admin_sql_first(struct db *db, enum admin_stmt stmt, char *out, size_t outlen,
                               const char *const *vals, int n)
{
    PGresult *res = NULL;
    enum db_status st = admin_sql_run(db, stmt, &res, vals, n);
    if (st == DB_OK && out && outlen > 0)
        snprintf(out, outlen, "%s", res ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return st;
}

int admin_sql_begin(struct db *db)
{
    return admin_sql_failed(admin_sql_run(db, ADMIN_SQL_BEGIN, NULL, NULL, 0)) ? -1 : 0;
}

int admin_sql_end(struct db *db, int rc)
{
    if (rc != 0) {
        /* Best effort: if even ROLLBACK fails, closing the connection rolls back. */
        db_rollback(db, statements[ADMIN_SQL_ROLLBACK].text);
        return rc;
    }
    if (admin_sql_failed(admin_sql_run(db, ADMIN_SQL_COMMIT, NULL, NULL, 0)))
        return ADMIN_EXIT_FAIL;
    return ADMIN_EXIT_OK;
}

int admin_sql_script(struct db *db, const char *label, const char *sql)
{
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok) {
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        char line[256];
        snprintf(line, sizeof line, "%s", msg ? msg : PQerrorMessage(db->conn));
        line[strcspn(line, "\r\n")] = '\0';
        admin_fail("%s: %s", label, line);
    }
    PQclear(res);
    return ok ? 0 : -1;
}

int admin_sql_list(struct db *db, enum admin_stmt stmt, const char *const *vals, int n)
{
    PGresult *res = NULL;
    enum db_status st = admin_sql_run(db, stmt, &res, vals, n);
    int rows = res ? PQntuples(res) : 0, cols = res ? PQnfields(res) : 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            printf("%s%c", PQgetisnull(res, r, c) ? "-" : PQgetvalue(res, r, c),
                   c + 1 < cols ? '\t' : '\n');
    PQclear(res);
    return admin_sql_failed(st) ? ADMIN_EXIT_FAIL : ADMIN_EXIT_OK;
}
