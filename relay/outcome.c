/*
 * outcome.c - what became of each recipient of one message (see core.h).
 *
 * RFC 5321 4.2.1 / 6.1: a 2xx to the final dot (or LMTP-style per recipient, from
 * client.c) delivers, a 4xx defers (retried with Postfix's backoff: the message's age
 * clamped to [queue_min_backoff, queue_max_backoff], +-10 %), a 5xx bounces; a deferral
 * past queue_lifetime bounces too (RFC 5321 4.5.4.1: give up after 4-5 days). The rules
 * themselves are SQL_OUTCOME, so that the time is the database's, as every other queue
 * time.
 *
 * Invariant: a row's new state, its attempt row and the freeing of the message commit
 * together, and only while the lease is still ours; the journal event is written after
 * COMMIT, so the log never tells of an outcome that was rolled back.
 */
#include "core.h"
#include "log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

void relay_outcome_all(struct relay_msg *msg, const struct relay_result *res)
{
    for (size_t i = 0; i < msg->nrcpts; i++)
        if (msg->rcpts[i].result.kind == 0)
            msg->rcpts[i].result = *res;
}

/* What the database said about one recipient, for its journal event. */
struct recorded {
    char state[16]; /* "" when the lease was no longer ours */
    int attempts;
};

/* array: the n strings v[i] (NULL for SQL NULL) as a text[] literal in a malloc'd string;
 * NULL when out of memory. */
static char *array(const char *const *v, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += 2 * (v[i] ? strlen(v[i]) : 4) + 3;
    char *out = malloc(cap);
    if (out && db_text_array(out, cap, v, n) == 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* record: every recipient's outcome and the freeing of the message, one statement
 * (SQL_OUTCOME), which is its own transaction. rec[i] tells what became of recipient i. */
static enum db_status record(struct db *db, const struct config *cfg, const char *owner,
                             const struct relay_msg *msg, struct recorded *rec)
{
    /* SQL_OUTCOME's per-recipient arrays, in its order: v[c * n + i] is column c of
     * recipient i; the numbers are written into num. */
    enum { IDS, KINDS, CODES, STATUS, REPLY, HOST, ADDRESS, TLS, NCOLS };
    size_t n = msg->nrcpts ? msg->nrcpts : 1;
    char(*num)[3][24] = calloc(n, sizeof *num), *arrays[NCOLS] = {0};
    const char **v = calloc(NCOLS * n, sizeof *v);
    enum db_status st = num && v ? DB_OK : DB_TEMP;
    for (size_t i = 0; st == DB_OK && i < msg->nrcpts; i++) {
        const struct relay_result *res = &msg->rcpts[i].result;
        snprintf(num[i][0], sizeof num[i][0], "%lld", msg->rcpts[i].queue_id);
        snprintf(num[i][1], sizeof num[i][1], "%d",
                 res->kind == 2 || res->kind == 5 ? res->kind : 4);
        snprintf(num[i][2], sizeof num[i][2], "%d", res->code);
        const char *row[NCOLS] = {num[i][0],    num[i][1],  res->code ? num[i][2] : NULL,
                                  res->status,  res->reply, res->host,
                                  res->address, res->tls};
        for (int c = 0; c < NCOLS; c++)
            v[c * n + i] = row[c];
    }
    for (int c = 0; st == DB_OK && c < NCOLS; c++)
        if (!(arrays[c] = array(v + c * n, msg->nrcpts)))
            st = DB_TEMP;
    char id[24], life[24], minb[24], maxb[24];
    snprintf(id, sizeof id, "%lld", msg->message_id);
    snprintf(life, sizeof life, "%ld", cfg->queue_lifetime);
    snprintf(minb, sizeof minb, "%ld", cfg->queue_min_backoff);
    snprintf(maxb, sizeof maxb, "%ld", cfg->queue_max_backoff);
    PGresult *pr = NULL;
    if (st == DB_OK) {
        const char *vals[] = {id,
                              owner,
                              arrays[IDS],
                              arrays[KINDS],
                              arrays[CODES],
                              arrays[STATUS],
                              arrays[REPLY],
                              arrays[HOST],
                              arrays[ADDRESS],
                              arrays[TLS],
                              life,
                              minb,
                              maxb};
        st = db_exec(db, relay_sql(SQL_OUTCOME), 13, vals, NULL, NULL, &pr);
    }
    for (int j = 0; st == DB_OK && j < PQntuples(pr); j++)
        for (size_t i = 0; i < msg->nrcpts; i++)
            if (relay_sql_num(pr, j, 0) == msg->rcpts[i].queue_id) {
                snprintf(rec[i].state, sizeof rec[i].state, "%s", PQgetvalue(pr, j, 1));
                rec[i].attempts = (int)relay_sql_num(pr, j, 2);
            }
    PQclear(pr);
    for (int c = 0; c < NCOLS; c++)
        free(arrays[c]);
    free(v);
    free(num);
    if (st == DB_TEMP && !db->sqlstate[0])
        snprintf(db->error, sizeof db->error, "out of memory");
    return st == DB_NOTFOUND ? DB_OK : st;
}

enum db_status relay_free_message(struct db *db, long long message_id)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", message_id);
    const char *vals[] = {id};
    enum db_status st = db_exec(db, relay_sql(SQL_LOCK_MESSAGE), 1, vals, NULL, NULL, NULL);
    if (st == DB_NOTFOUND)
        return DB_OK; /* already gone */
    if (st != DB_OK)
        return st;
    return db_exec(db, relay_sql(SQL_FREE_MESSAGE), 1, vals, NULL, NULL, NULL);
}

static void log_one(const struct relay_msg *msg, const struct relay_rcpt *r,
                    const struct recorded *rec)
{
    const struct relay_result *res = &r->result;
    if (!rec->state[0]) {
        log_event(LOG_WARNING, "relay-lease-lost",
                  "queue=%lld rcpt=%s reason=\"the lease ran out and another relay took the "
                  "recipient: outcome not recorded\"",
                  msg->message_id, r->addr);
        return;
    }
    const char *event = strcmp(rec->state, "delivered") == 0 ? "relay-delivered"
                        : strcmp(rec->state, "bounced") == 0 ? "relay-bounced"
                                                             : "relay-deferred";
    log_event(strcmp(rec->state, "delivered") == 0 ? LOG_INFO : LOG_NOTICE, event,
              "queue=%lld rcpt=%s mx=%s address=%s tls=\"%s\" delay=%lld attempts=%d code=%d "
              "status=%s reply=\"%s\"",
              msg->message_id, r->addr, res->host[0] ? res->host : "-",
              res->address[0] ? res->address : "-", res->tls, msg->age, rec->attempts, res->code,
              res->status[0] ? res->status : "-", res->reply);
}

int relay_outcome(struct db *db, const struct config *cfg, const char *owner,
                  const struct relay_msg *msg)
{
    struct recorded *rec = calloc(msg->nrcpts ? msg->nrcpts : 1, sizeof *rec);
    if (!rec) {
        log_event(LOG_ERR, "relay-outcome-failed", "queue=%lld reason=out-of-memory",
                  msg->message_id);
        return -1;
    }
    enum db_status st = record(db, cfg, owner, msg, rec);
    if (st != DB_OK) {
        log_event(LOG_ERR, "relay-outcome-failed", "queue=%lld sqlstate=%s error=\"%s\"",
                  msg->message_id, db->sqlstate, db->error);
        free(rec);
        return -1;
    }
    for (size_t i = 0; i < msg->nrcpts; i++)
        log_one(msg, &msg->rcpts[i], &rec[i]);
    free(rec);
    return 0;
}
