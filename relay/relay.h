/*
 * relay.h - pgmail-relay: delivers the outbound queue (migrations/006) to the world.
 *
 * Not a handler: a long-running service (units/pgmail-relay.service, Type=notify). The
 * shape, Postfix's qmgr and smtp split in one program:
 *
 *   main.c      arguments, configuration, signals, sd_notify READY/WATCHDOG/STOPPING
 *   scheduler.c the parent: LISTEN pgmail_queue on its own connection (relay_database),
 *               claims due recipients one destination at a time (FOR UPDATE SKIP LOCKED
 *               plus a lease), forks one agent per destination connection within
 *               relay_destination_concurrency / relay_max_connections, reaps them,
 *               releases what a dead agent held, writes DSNs (dsn.c), delay warnings and
 *               gives up at queue_lifetime; wakes on NOTIFY or at the next due time
 *   agent.c     a child: one destination (a domain, or the relayhost), its own database
 *               connection to database (the handlers' setting, PgBouncer allowed); routes
 *               it (dns.c), connects, and sends the batch's messages over one connection
 *               (client.c), recording each recipient's outcome (outcome.c); then claims
 *               its destination's next work itself over the same connections and, idle,
 *               waits briefly to be woken or moved to another destination
 *   claim.c     leasing due rows as a batch (the scheduler's claims and an agent's own)
 *   dns.c       libunbound: MX per RFC 5321 5.1 (preference, random among equals, implicit
 *               MX, null MX RFC 7505, at most LIM_RELAY_ADDRESSES addresses), self detection
 *   client.c    the SMTP client dialogue over shared/io.c (and shared/tls.c as a client)
 *   reply.c     the parser of every remote reply (reply.h; a fuzz target)
 *   outcome.c   per recipient: delivered / deferred (backoff) / bounced, the attempt row,
 *               the journal event, freeing the message row when nothing needs it
 *   dsn.c       RFC 3464 delivery status notifications (failed, delayed)
 *   sql.c       every statement of the program (one table, PQexecParams, values only as
 *               parameters)
 *
 * The scheduler and agents never share memory after fork: a batch is handed over as the
 * struct below, filled before fork.
 */
#ifndef PGMAIL_RELAY_H
#define PGMAIL_RELAY_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "mail_limits.h"

/* The outcome of one recipient, or of a whole attempt (for every recipient not answered
 * individually). kind: 2 delivered, 4 deferred, 5 bounced, 0 not decided yet. */
struct relay_result {
    int kind;
    int code;                         /* the SMTP reply code, 0 when none (DNS, connect) */
    char status[16];                  /* enhanced status code "5.1.1" (ours when the remote
                                         gave none: RFC 3463) */
    char reply[LIM_REMOTE_REPLY + 1]; /* the remote reply's text, or what went wrong */
    char host[LIM_DOMAIN + 1];        /* the MX (or relayhost) name, "" when none reached */
    char address[64];                 /* its address, "" when none reached */
    char tls[128];                    /* tls_describe() of the connection, "" in clear */
};

struct relay_rcpt {
    long long queue_id;         /* queue.id */
    char addr[LIM_PATH + 1];    /* queue.recipient */
    struct relay_result result; /* filled by client.c / agent.c */
};

struct relay_msg {
    long long message_id;      /* messages.id = the queue id shown to operators */
    char sender[LIM_PATH + 1]; /* "" for the null reverse-path */
    long long size;            /* octets sent: messages.size less start */
    long long start;           /* stored octets not sent: our Return-Path line (RFC 5321
                                  4.4: a relayed message carries none) */
    long long age;             /* seconds since arrival (for the log's delay=) */
    unsigned char *body;       /* the body itself when it came with the claim (a small
                                  message: claim.c), else NULL: read in chunks */
    size_t body_len;
    struct relay_rcpt *rcpts;
    size_t nrcpts;
};

/* One destination's work: what one agent delivers over (at most) one connection. */
struct relay_batch {
    char domain[LIM_DOMAIN + 1]; /* the recipients' domain (queue.domain) */
    struct relay_msg *msgs;
    size_t nmsgs; /* at most LIM_RELAY_MESSAGES_PER_CONNECTION */
};

/* ---- dns.c */
struct relay_host {
    char name[LIM_DOMAIN + 1]; /* the MX name (or the domain itself: implicit MX) */
    int family;                /* AF_INET or AF_INET6 */
    unsigned char addr[16];    /* network order */
    int preference;
};

enum relay_route_status {
    ROUTE_OK,       /* hosts[0..*n) in the order to try */
    ROUTE_TEMP,     /* SERVFAIL, timeout: defer (result says why, 4.4.3) */
    ROUTE_NXDOMAIN, /* no such domain: bounce 5.1.2 */
    ROUTE_NULLMX,   /* RFC 7505 null MX: bounce 5.1.10 */
    ROUTE_LOOP,     /* an MX is this host: bounce 5.4.6 (mail loops back to myself) */
    ROUTE_NOHOST,   /* no MX and no address records: bounce 5.1.2 */
};

/* relay_dns_init: a resolver for the process (dns_resolver, else /etc/resolv.conf). 0 or
 * -1 (logged). Called in each agent after fork. */
int relay_dns_init(const struct config *cfg);

/* relay_route: the hosts to try for domain (at most LIM_RELAY_ADDRESSES), or for the
 * relayhost when cfg->relayhost is set (its A/AAAA, no MX lookup; [ADDRESS] as is). On
 * anything but ROUTE_OK, res holds the status and text for every recipient. */
enum relay_route_status relay_route(const struct config *cfg, const char *domain,
                                    struct relay_host *hosts, size_t *n, struct relay_result *res);

/* relay_is_self: 1 when addr (family, 16 bytes) is one this host's interfaces carry or one
 * listed in own_addresses. */
int relay_is_self(const struct config *cfg, int family, const unsigned char *addr);

/* relay_relayhost: split relayhost "HOST[:PORT]" or "[ADDRESS][:PORT]" into host (n
 * octets) and port (25 when none). 0, or -1 when malformed. */
int relay_relayhost(const char *spec, char *host, size_t n, int *port);

/* relay_test_timeout_ms: ms, or less when the environment's PGMAIL_RELAY_TEST_TIMEOUT_MS
 * caps every DNS and SMTP client timeout (tests only: a stall in seconds, not minutes). */
int relay_test_timeout_ms(int ms);

/* ---- client.c */
struct relay_conn; /* one SMTP connection to one host, opaque */

/* The message body, read by client.c as it sends: fill buf with up to n octets of
 * message msg from offset off; returns how many (0 at the end), -1 on a database failure
 * (the message is then deferred). agent.c provides it (SQL substring chunks). */
typedef long relay_body_reader(void *ctx, const struct relay_msg *msg, long long off, char *buf,
                               size_t n);

/* relay_connect: connect to host on cfg->relay_port (or the relayhost's port), read the
 * greeting, EHLO (HELO fallback), STARTTLS per relay_tls (or always and verified for the
 * relayhost, then AUTH). NULL on failure, with res filled (kind 4 or 5: a 5xx greeting
 * bounces nothing by itself; the agent tries the next host and decides). */
struct relay_conn *relay_connect(const struct config *cfg, const struct relay_host *host,
                                 struct relay_result *res);

/* relay_send: one transaction: MAIL, RCPTs (pipelined when offered), DATA with the body
 * dot-stuffed. Sets every recipient's result. Returns 0 when the connection can carry
 * another message, -1 when it is gone (421, dropped, timeout: unanswered recipients are
 * deferred with that reason). */
int relay_send(struct relay_conn *c, const struct relay_msg *msg, relay_body_reader *read,
               void *ctx);

/* relay_alive: 0 when c can carry no more messages: it failed, or the server said
 * something unasked (a 421, or closed it) while it was idle; else 1. */
int relay_alive(struct relay_conn *c);

/* relay_close: QUIT (best effort) and free. */
void relay_close(struct relay_conn *c);

/* ---- dsn.c: see dsn.h */

#endif
