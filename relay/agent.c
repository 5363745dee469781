/*
 * agent.c - one destination's delivery, in a child of the scheduler (see core.h).
 *
 * The batch (at most LIM_RELAY_MESSAGES_PER_CONNECTION messages, every recipient leased
 * to this agent's owner) goes over one connection: route (dns.c), try the hosts in order
 * until one answers (RFC 5321 5.1: next host on a connection failure, at most
 * LIM_RELAY_ADDRESSES), then one SMTP transaction per message (client.c), each message's
 * outcome committed before the next one starts (outcome.c).
 *
 * Leases: renewed before each message and while a body is read, so that another relay
 * never takes a recipient while this one works it. A recipient whose lease was taken over
 * meanwhile is left out of the transaction. While the agent waits for a reply (the final
 * dot's may take LIM_CLIENT_TIMEOUT_DOT, longer than relay_lease) the scheduler renews its
 * leases for it (scheduler.c, renew).
 *
 * SIGTERM (stop) ends the batch after the message in progress; what was not started is
 * released for the next relay at once, without an attempt counted.
 *
 * The connection is database's (the handlers' setting), not relay_database's: it may be
 * PgBouncer in transaction pooling mode, so every statement here stands alone in
 * autocommit (SQL_RENEW, SQL_CHUNK, SQL_RELEASE) or inside the one BEGIN..COMMIT of
 * outcome.c, all unnamed through PQexecParams, with no SET, LISTEN or session-level lock:
 * nothing is expected to outlive its transaction on the server side.
 */
#include "core.h"
#include "log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

struct agent {
    const struct config *cfg;
    const char *owner;
    struct db db;
    time_t renewed; /* when the leases were last renewed */
};

static void set_result(struct relay_result *res, int kind, const char *status, const char *why)
{
    memset(res, 0, sizeof *res);
    res->kind = kind;
    snprintf(res->status, sizeof res->status, "%s", status);
    snprintf(res->reply, sizeof res->reply, "%s", why);
}

/* renew: extend every lease of ours; a recipient of msg no longer ours is dropped from it
 * (another relay has it now). -1 when the database failed. */
static int renew(struct agent *a, struct relay_msg *msg)
{
    char secs[24];
    snprintf(secs, sizeof secs, "%ld", a->cfg->relay_lease);
    const char *vals[] = {a->owner, secs};
    PGresult *r = NULL;
    enum db_status st = db_exec(&a->db, relay_sql(SQL_RENEW), 2, vals, NULL, NULL, &r);
    if (db_failed(st)) {
        log_event(LOG_ERR, "relay-renew-failed", "sqlstate=%s error=\"%s\"", a->db.sqlstate,
                  a->db.error);
        return -1;
    }
    a->renewed = time(NULL);
    if (!msg) {
        PQclear(r);
        return 0;
    }
    size_t kept = 0;
    for (size_t i = 0; i < msg->nrcpts; i++) {
        int ours = 0;
        for (int j = 0; r && j < PQntuples(r) && !ours; j++)
            ours = relay_sql_num(r, j, 0) == msg->rcpts[i].queue_id;
        if (ours)
            msg->rcpts[kept++] = msg->rcpts[i];
        else
            log_event(LOG_WARNING, "relay-lease-lost", "queue=%lld rcpt=%s", msg->message_id,
                      msg->rcpts[i].addr);
    }
    msg->nrcpts = kept;
    PQclear(r);
    return 0;
}

/* read_body: relay_body_reader over SQL_CHUNK (binary, one slice per call); renews the
 * leases as a long body goes out. */
static long read_body(void *ctx, const struct relay_msg *msg, long long off, char *buf, size_t n)
{
    struct agent *a = ctx;
    if (off >= msg->size)
        return 0;
    if (time(NULL) - a->renewed >= a->cfg->relay_lease / 3 + 1 && renew(a, NULL) < 0)
        return -1;
    if ((long long)n > msg->size - off)
        n = (size_t)(msg->size - off);
    char id[24], from[24], len[24];
    snprintf(id, sizeof id, "%lld", msg->message_id);
    snprintf(from, sizeof from, "%lld", off + 1);
    snprintf(len, sizeof len, "%zu", n);
    const char *vals[] = {id, from, len};
    PGresult *r = NULL;
    enum db_status st = db_exec_binary(&a->db, relay_sql(SQL_CHUNK), 3, vals, NULL, NULL, &r);
    if (st != DB_OK) {
        log_event(LOG_ERR, "relay-body-failed", "queue=%lld sqlstate=%s error=\"%s\"",
                  msg->message_id, a->db.sqlstate, a->db.error);
        return -1;
    }
    long got = PQgetlength(r, 0, 0);
    if (got > (long)n)
        got = (long)n;
    memcpy(buf, PQgetvalue(r, 0, 0), (size_t)got);
    PQclear(r);
    return got;
}

/* open_route: route the batch's destination and connect to the first host that answers.
 * NULL with res set (for every recipient) when none does. */
static struct relay_conn *open_route(struct agent *a, const char *domain, struct relay_result *res)
{
    struct relay_host hosts[LIM_RELAY_ADDRESSES];
    size_t n = LIM_RELAY_ADDRESSES;
    if (relay_dns_init(a->cfg) < 0) {
        set_result(res, 4, "4.4.3", "the DNS resolver could not be started");
        return NULL;
    }
    enum relay_route_status rs = relay_route(a->cfg, domain, hosts, &n, res);
    if (rs != ROUTE_OK) {
        res->kind = rs == ROUTE_TEMP ? 4 : 5;
        return NULL;
    }
    /* RFC 5321 5.1: on to the next address when one cannot be reached or refuses us. A 5xx
     * greeting bounces only when every host gave one; else the last failure defers. */
    int all_permanent = 1;
    set_result(res, 4, "4.4.1", "no host to try");
    for (size_t i = 0; i < n && i < LIM_RELAY_ADDRESSES; i++) {
        struct relay_conn *c = relay_connect(a->cfg, &hosts[i], res);
        if (c)
            return c;
        all_permanent = all_permanent && res->kind == 5;
        log_event(LOG_NOTICE, "relay-connect-failed", "domain=%s mx=%s address=%s reply=\"%s\"",
                  domain, res->host, res->address, res->reply);
    }
    if (!all_permanent || n == 0)
        res->kind = 4;
    return NULL;
}

/* finish: record msg's outcomes; -1 when the database failed. */
static int finish(struct agent *a, struct relay_msg *msg)
{
    return relay_outcome(&a->db, a->cfg, a->owner, msg);
}

/* missing: a message whose row is gone while recipients still wait for it (an operator's
 * hand, or a bug elsewhere): it can never be sent. */
static void missing(struct relay_msg *msg)
{
    struct relay_result res;
    set_result(&res, 5, "5.3.0", "the message is no longer in the store");
    relay_outcome_all(msg, &res);
}

int relay_agent_run(const struct config *cfg, const char *conninfo, const char *owner,
                    struct relay_batch *b, volatile sig_atomic_t *stop)
{
    struct agent a = {.cfg = cfg, .owner = owner, .renewed = time(NULL)};
    db_init(&a.db, conninfo, "pgmail-relay");
    int status = 0;
    struct relay_result res;
    struct relay_conn *c = open_route(&a, b->domain, &res);
    size_t i = 0;
    for (; c && i < b->nmsgs && !*stop; i++) {
        struct relay_msg *msg = &b->msgs[i];
        if (renew(&a, msg) < 0) {
            status = 1;
            break;
        }
        if (msg->nrcpts == 0)
            continue;
        if (msg->size < 0) {
            missing(msg);
        } else if (relay_send(c, msg, read_body, &a) < 0) {
            /* 421, dropped, timed out: relay_send deferred what was unanswered; the
             * messages after this one are deferred for the same reason (a busy or broken
             * destination is not asked again at once). */
            set_result(&res, 4, "4.4.2", "the connection was lost before this message");
            for (size_t k = 0; k < msg->nrcpts; k++)
                if (msg->rcpts[k].result.kind == 4)
                    res = msg->rcpts[k].result;
            relay_close(c);
            c = NULL;
        }
        if (finish(&a, msg) < 0) {
            status = 1;
            i++;
            break;
        }
    }
    /* Without a connection (none could be made, or it was lost), the messages not sent
     * share the reason; after SIGTERM or a database failure they are released below. */
    int unsent = !c;
    if (c)
        relay_close(c);
    for (; unsent && status == 0 && !*stop && i < b->nmsgs; i++) {
        struct relay_msg *msg = &b->msgs[i];
        if (msg->size < 0)
            missing(msg);
        relay_outcome_all(msg, &res);
        if (finish(&a, msg) < 0)
            status = 1;
    }
    const char *vals[] = {owner};
    if (db_failed(db_exec(&a.db, relay_sql(SQL_RELEASE), 1, vals, NULL, NULL, NULL)))
        status = 1; /* the scheduler tries again, and after it the lease runs out */
    db_close(&a.db);
    return status;
}
