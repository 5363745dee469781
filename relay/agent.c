/*
 * agent.c - one destination's delivery, in a child of the scheduler (see core.h).
 *
 * The batch (at most LIM_RELAY_MESSAGES_PER_CONNECTION messages, every recipient leased
 * to this agent's owner) goes over one connection: route (dns.c), try the hosts in order
 * until one answers (RFC 5321 5.1: next host on a connection failure, at most
 * LIM_RELAY_ADDRESSES), then one SMTP transaction per message (client.c), each message's
 * outcome committed before the next one starts (outcome.c). Then the agent keeps its SMTP
 * connection (a new one after LIM_RELAY_MESSAGES_PER_CONNECTION messages, or when the
 * server closed it) and its database session, and waits idle a moment for the scheduler to
 * name more work, of this destination or another (core.h, relay_agent_link), which it then
 * claims itself (same owner); after a full batch it claims the destination's next due
 * messages at once. An agent that waited long enough ends.
 *
 * Leases: renewed once a third of relay_lease has passed since the claim or the last
 * renewal (before a message and while a body is read), so that another relay never takes
 * a recipient while this one works it. A recipient whose lease was taken over meanwhile is
 * left out of the transaction. While the agent waits for a reply (the final dot's may take
 * LIM_CLIENT_TIMEOUT_DOT, longer than relay_lease) the scheduler renews its leases for it
 * (scheduler.c, renew).
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

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

struct agent {
    const struct config *cfg;
    const char *owner;
    struct db db;
    time_t renewed;       /* when the leases were last renewed (or claimed) */
    struct relay_conn *c; /* the SMTP connection, kept from batch to batch */
    int sent;             /* messages it carried */
    int broken;           /* no connection could be had, or one was lost: res says why */
    struct relay_result res;
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
    off += msg->start; /* from here on, offsets in the stored body */
    if (msg->body) {   /* it came with the claim */
        size_t left = off < (long long)msg->body_len ? msg->body_len - (size_t)off : 0;
        n = n < left ? n : left;
        memcpy(buf, msg->body + off, n);
        return (long)n;
    }
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

/* deliver: batch b over a->c, opened (again) when there is none, it has carried
 * LIM_RELAY_MESSAGES_PER_CONNECTION messages, or the server closed it while it was idle.
 * Once no connection can be had (or one is lost), a->broken is set and every message left
 * shares the reason. 0, or 1 when the database failed. */
static int deliver(struct agent *a, struct relay_batch *b, volatile sig_atomic_t *stop)
{
    int status = 0;
    size_t i = 0;
    for (; i < b->nmsgs && !*stop; i++) {
        struct relay_msg *msg = &b->msgs[i];
        if (a->c && (a->sent >= LIM_RELAY_MESSAGES_PER_CONNECTION || !relay_alive(a->c))) {
            relay_close(a->c);
            a->c = NULL;
        }
        if (!a->c && !a->broken) {
            a->c = open_route(a, b->domain, &a->res);
            a->sent = 0;
            a->broken = !a->c;
        }
        if (a->broken)
            break;
        /* A lease is renewed (one more commit) only when a third of it has passed since
         * the claim or the last renewal: until then no other relay can have taken it. */
        if (time(NULL) - a->renewed >= a->cfg->relay_lease / 3 + 1 && renew(a, msg) < 0) {
            status = 1;
            break;
        }
        if (msg->nrcpts == 0)
            continue;
        if (msg->size < 0) {
            missing(msg);
        } else if (relay_send(a->c, msg, read_body, a) < 0) {
            /* 421, dropped, timed out: relay_send deferred what was unanswered; the
             * messages after this one are deferred for the same reason (a busy or broken
             * destination is not asked again at once). */
            set_result(&a->res, 4, "4.4.2", "the connection was lost before this message");
            for (size_t k = 0; k < msg->nrcpts; k++)
                if (msg->rcpts[k].result.kind == 4)
                    a->res = msg->rcpts[k].result;
            relay_close(a->c);
            a->c = NULL;
            a->broken = 1;
        } else {
            a->sent++;
        }
        if (finish(a, msg) < 0) {
            status = 1;
            i++;
            break;
        }
    }
    /* Without a connection, the messages not sent share the reason; after SIGTERM or a
     * database failure they are released by the caller. */
    for (; a->broken && status == 0 && !*stop && i < b->nmsgs; i++) {
        struct relay_msg *msg = &b->msgs[i];
        if (msg->size < 0)
            missing(msg);
        relay_outcome_all(msg, &a->res);
        if (finish(a, msg) < 0)
            status = 1;
    }
    return status;
}

/* can_idle: the agent can wait idle for the scheduler to name work (its pipes exist). */
static int can_idle(const struct relay_agent_link *l)
{
    return l->idle_fd >= 0 && l->wake_fd >= 0;
}

/* idle: tell the scheduler this agent waits (its pid on the shared pipe), then wait for it
 * to name work (core.h): the SMTP connection is kept RELAY_IDLE_MS (then QUIT: a remote
 * is not held longer for nothing), the process and its database session RELAY_KEEP_MS.
 * 1: work for dest; 2: for the domain now in dest (n octets); 0: time is up, SIGTERM, or
 * the scheduler is gone. */
static int idle(struct agent *a, const struct relay_agent_link *l, char *dest, size_t n)
{
    pid_t me = getpid();
    if (!can_idle(l) || write(l->idle_fd, &me, sizeof me) != sizeof me)
        return 0;
    struct pollfd p = {.fd = l->wake_fd, .events = POLLIN};
    int ready = poll(&p, 1, RELAY_IDLE_MS);
    if (ready == 0) {
        if (a->c)
            relay_close(a->c);
        a->c = NULL;
        ready = poll(&p, 1, RELAY_KEEP_MS - RELAY_IDLE_MS);
    }
    char cmd[LIM_DOMAIN + 2];
    ssize_t got = ready > 0 ? read(l->wake_fd, cmd, sizeof cmd) : -1;
    if (got == 1 && cmd[0] == RELAY_WAKE)
        return 1;
    if (got < 2 || cmd[0] != RELAY_MOVE || (size_t)got - 1 >= n)
        return 0;
    memcpy(dest, cmd + 1, (size_t)got - 1);
    dest[got - 1] = '\0';
    return 2;
}

int relay_agent_run(const struct config *cfg, const char *conninfo, const char *owner,
                    struct relay_batch *b, volatile sig_atomic_t *stop,
                    const struct relay_agent_link *link)
{
    struct agent a = {.cfg = cfg, .owner = owner, .renewed = time(NULL)};
    db_init(&a.db, conninfo, "pgmail-relay");
    int status = deliver(&a, b, stop);
    /* Postfix's connection cache, in one process: while the destination has due work (or
     * gets some within RELAY_IDLE_MS) the agent claims it itself and keeps its SMTP and
     * database connections, instead of a new process, resolver, connection and session
     * per batch. */
    char dest[LIM_DOMAIN + 1];
    snprintf(dest, sizeof dest, "%s", b->domain);
    /* After a batch that was not full, nothing more was due when it was claimed, and what
     * fell due since was notified: the scheduler wakes an idle agent for it (or tells one
     * that was busy to claim once more as it goes idle). So the agent waits idle first,
     * instead of a claim that would mostly find nothing. */
    int claim_first = b->nmsgs >= LIM_RELAY_MESSAGES_PER_CONNECTION || !can_idle(link);
    while (status == 0 && !*stop && !a.broken) {
        struct relay_batch more;
        int k = 0;
        if (claim_first)
            k = relay_claim(&a.db, cfg, owner, cfg->relayhost[0] ? NULL : dest, &more);
        claim_first = 1;
        if (k < 0) {
            log_event(LOG_ERR, "relay-claim-failed", "sqlstate=%s error=\"%s\"", a.db.sqlstate,
                      a.db.error);
            status = 1;
        } else if (k > 0) {
            a.renewed = time(NULL);
            status = deliver(&a, &more, stop);
            claim_first = more.nmsgs >= LIM_RELAY_MESSAGES_PER_CONNECTION || !can_idle(link);
            relay_free_batch(&more);
        } else {
            int w = idle(&a, link, dest, sizeof dest);
            if (w == 0)
                break;
            if (w == 2 && a.c) { /* another destination: its own connection */
                relay_close(a.c);
                a.c = NULL;
            }
            log_init("pgmail-relay", owner, dest[0] ? dest : "relayhost");
        }
    }
    if (a.c)
        relay_close(a.c);
    const char *vals[] = {owner};
    if (db_failed(db_exec(&a.db, relay_sql(SQL_RELEASE), 1, vals, NULL, NULL, NULL)))
        status = 1; /* the scheduler tries again, and after it the lease runs out */
    db_close(&a.db);
    return status;
}
