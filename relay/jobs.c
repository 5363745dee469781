/*
 * jobs.c - the scheduler's periodic work (see core.h): delay warnings, DSNs, history.
 *
 * DSNs (RFC 3464, composed by dsn.c): queue rows with dsn set owe one. The rows of one
 * message are locked (FOR UPDATE SKIP LOCKED: another relay may be writing them), the
 * original header section fetched (at most LIM_DSN_HEADERS octets, cut at the end of the
 * header section by relay_dsn_headers), the DSN stored with pgmail_store_dsn (migrations/
 * 008: a local sender's goes into the mailbox, a remote one's is queued; a null sender
 * never gets one), the rows marked done, and the message row freed when nothing needs it
 * any more: all in one transaction, so a DSN is written once or not at all.
 */
#include "core.h"
#include "dsn.h"
#include "log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <systemd/sd-id128.h>

void relay_jobs_warn(struct db *db, const struct config *cfg)
{
    if (cfg->delay_warning_time <= 0)
        return;
    char secs[24];
    snprintf(secs, sizeof secs, "%ld", cfg->delay_warning_time);
    const char *vals[] = {secs};
    if (db_failed(db_exec(db, relay_sql(SQL_WARN), 1, vals, NULL, NULL, NULL)))
        log_event(LOG_ERR, "relay-warn-failed", "sqlstate=%s error=\"%s\"", db->sqlstate,
                  db->error);
}

void relay_jobs_prune(struct db *db)
{
    char days[16];
    snprintf(days, sizeof days, "%d", LIM_QUEUE_HISTORY_DAYS);
    const char *vals[] = {days};
    if (db_failed(db_exec(db, relay_sql(SQL_PRUNE), 1, vals, NULL, NULL, NULL)))
        log_event(LOG_ERR, "relay-prune-failed", "sqlstate=%s error=\"%s\"", db->sqlstate,
                  db->error);
}

/* Columns of SQL_DSN_PICK. */
enum {
    P_ID,
    P_MESSAGE,
    P_SENDER,
    P_RCPT,
    P_DSN,
    P_STATUS,
    P_HOST,
    P_CODE,
    P_REPLY,
    P_LAST,
    P_ARRIVAL
};

/* headers: the original message's header section (malloc'd into *out, "" when the message
 * is gone). */
static enum db_status headers(struct db *db, const char *message_id, char **out, size_t *len)
{
    char max[16];
    snprintf(max, sizeof max, "%d", LIM_DSN_HEADERS);
    const char *vals[] = {message_id, max};
    PGresult *r = NULL;
    *out = NULL;
    *len = 0;
    enum db_status st = db_exec_binary(db, relay_sql(SQL_DSN_HEADERS), 2, vals, NULL, NULL, &r);
    if (db_failed(st))
        return st;
    size_t n = r ? (size_t)PQgetlength(r, 0, 0) : 0;
    *out = malloc(n + 1);
    if (!*out) {
        PQclear(r);
        return DB_TEMP;
    }
    if (n)
        memcpy(*out, PQgetvalue(r, 0, 0), n);
    PQclear(r);
    *len = relay_dsn_headers(*out, n);
    return DB_OK;
}

/* ids: the queue ids of r as a PostgreSQL array literal, malloc'd. */
static char *ids(PGresult *r)
{
    int n = PQntuples(r);
    char *s = malloc((size_t)n * 21 + 3), *p = s;
    if (!s)
        return NULL;
    *p++ = '{';
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", PQgetvalue(r, i, P_ID));
    strcpy(p, "}");
    return s;
}

/* store: compose the DSN for the locked rows r and store it, mark the rows done. */
static enum db_status store(struct db *db, const struct config *cfg, PGresult *r)
{
    int n = PQntuples(r);
    const char *message_id = PQgetvalue(r, 0, P_MESSAGE);
    struct relay_dsn_rcpt *rcpts = calloc((size_t)n, sizeof *rcpts);
    char *hdr = NULL, *body = NULL, *list = ids(r);
    size_t hlen = 0, blen = 0;
    enum db_status st = rcpts && list ? headers(db, message_id, &hdr, &hlen) : DB_TEMP;
    if (st == DB_OK) {
        for (int i = 0; i < n; i++) {
            rcpts[i].recipient = PQgetvalue(r, i, P_RCPT);
            rcpts[i].delayed = strcmp(PQgetvalue(r, i, P_DSN), "delayed") == 0;
            rcpts[i].status = PQgetvalue(r, i, P_STATUS);
            rcpts[i].remote_mta = PQgetvalue(r, i, P_HOST);
            rcpts[i].code = (int)relay_sql_num(r, i, P_CODE);
            rcpts[i].reply = PQgetvalue(r, i, P_REPLY);
            rcpts[i].last_attempt = relay_sql_num(r, i, P_LAST);
        }
        long long arrival = relay_sql_num(r, 0, P_ARRIVAL);
        struct relay_dsn d = {.hostname = cfg->hostname,
                              .to = PQgetvalue(r, 0, P_SENDER),
                              .message_id = relay_sql_num(r, 0, P_MESSAGE),
                              .arrival = arrival,
                              .retry_until = arrival + cfg->queue_lifetime,
                              .rcpts = rcpts,
                              .n = (size_t)n,
                              .headers = hdr,
                              .headers_len = hlen};
        body = relay_dsn_compose(&d, &blen);
        st = body ? DB_OK : DB_TEMP;
    }
    if (st == DB_OK) {
        sd_id128_t sid;
        char session[33];
        if (sd_id128_randomize(&sid) < 0)
            memset(&sid, 0, sizeof sid);
        sd_id128_to_string(sid, session);
        const char *vals[] = {PQgetvalue(r, 0, P_SENDER), body, session, cfg->recipient_delimiter};
        const int lens[] = {0, (int)blen, 0, 0}, fmts[] = {0, 1, 0, 0};
        st = db_exec(db, relay_sql(SQL_DSN_STORE), 4, vals, lens, fmts, NULL);
        st = st == DB_NOTFOUND ? DB_OK : st;
    }
    if (st == DB_OK) {
        const char *vals[] = {list};
        st = db_exec(db, relay_sql(SQL_DSN_DONE), 1, vals, NULL, NULL, NULL);
    }
    if (st == DB_OK)
        st = relay_free_message(db, relay_sql_num(r, 0, P_MESSAGE));
    free(body);
    free(hdr);
    free(list);
    free(rcpts);
    return st;
}

/* drop: a DSN that can never be written (DB_PERM: the values themselves are refused, e.g.
 * a sender pgmail_store_dsn cannot take) is given up, so that it does not block every DSN
 * after it; logged. */
static void drop(struct db *db, PGresult *r)
{
    char *list = ids(r);
    const char *vals[] = {list};
    if (list && !db_failed(db_exec(db, relay_sql(SQL_DSN_DONE), 1, vals, NULL, NULL, NULL)))
        log_event(LOG_ERR, "relay-dsn-dropped", "queue=%s to=%s rcpts=%d",
                  PQgetvalue(r, 0, P_MESSAGE), PQgetvalue(r, 0, P_SENDER), PQntuples(r));
    free(list);
}

/* one: write the DSN of one message: 1 written (or given up), 0 none owed, -1 failed. */
static int one(struct db *db, const struct config *cfg)
{
    PGresult *r = NULL;
    enum db_status st = db_exec(db, relay_sql(SQL_BEGIN), 0, NULL, NULL, NULL, NULL);
    if (st == DB_OK)
        st = db_exec(db, relay_sql(SQL_DSN_PICK), 0, NULL, NULL, NULL, &r);
    if (st == DB_OK)
        st = store(db, cfg, r);
    if (st == DB_OK || st == DB_NOTFOUND) {
        enum db_status c = db_exec(db, relay_sql(SQL_COMMIT), 0, NULL, NULL, NULL, NULL);
        if (c == DB_OK && st == DB_OK)
            log_event(LOG_INFO, "relay-dsn", "queue=%s to=%s rcpts=%d action=%s",
                      PQgetvalue(r, 0, P_MESSAGE), PQgetvalue(r, 0, P_SENDER), PQntuples(r),
                      PQgetvalue(r, 0, P_DSN));
        st = c == DB_OK ? st : c;
    }
    if (db_failed(st)) {
        log_event(LOG_ERR, "relay-dsn-failed", "queue=%s sqlstate=%s error=\"%s\"",
                  r ? PQgetvalue(r, 0, P_MESSAGE) : "-", db->sqlstate, db->error);
        db_rollback(db, relay_sql(SQL_ROLLBACK));
        if (st == DB_PERM && r) {
            drop(db, r);
            st = DB_OK;
        }
    }
    PQclear(r);
    return db_failed(st) ? -1 : st == DB_OK;
}

int relay_jobs_dsn(struct db *db, const struct config *cfg, int max)
{
    int done = 0;
    for (int k; done < max && (k = one(db, cfg)) != 0; done++)
        if (k < 0)
            return -1;
    return done;
}
