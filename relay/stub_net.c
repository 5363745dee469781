/*
 * stub_net.c - TEMPORARY stand-in for relay/dns.c and relay/client.c (written in
 * parallel; see relay.h), so that the relay core links and its queue tests run before the
 * real ones land. Delete at merge: the Makefile leaves it out by itself once
 * relay/client.c exists.
 *
 * "DNS" is a map in PGMAIL_TEST_HOSTS ("a.test=127.0.0.3,b.test=127.0.0.4+127.0.0.5"):
 * only names ending in .test, only loopback addresses, so nothing can leave the host. The
 * client is plain SMTP over shared/io.c: greeting, EHLO (HELO fallback), MAIL, each RCPT
 * in turn (no PIPELINING, SIZE or STARTTLS), DATA dot-stuffed, the final dot.
 */
#include "relay.h"
#include "io.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct relay_conn {
    const struct config *cfg;
    int fd;
    char host[LIM_DOMAIN + 1];
    char address[64];
    struct io io;
};

int relay_dns_init(const struct config *cfg)
{
    (void)cfg;
    return 0;
}

int relay_is_self(const struct config *cfg, int family, const unsigned char *addr)
{
    (void)cfg, (void)family, (void)addr;
    return 0;
}

static void result(struct relay_result *res, int kind, int code, const char *status,
                   const char *text)
{
    memset(res, 0, sizeof *res);
    res->kind = kind;
    res->code = code;
    snprintf(res->status, sizeof res->status, "%s", status);
    snprintf(res->reply, sizeof res->reply, "%s", text);
}

static int loopback(int family, const unsigned char *a)
{
    static const unsigned char v6[16] = {[15] = 1};
    return family == AF_INET ? a[0] == 127 : memcmp(a, v6, 16) == 0;
}

enum relay_route_status relay_route(const struct config *cfg, const char *domain,
                                    struct relay_host *hosts, size_t *n, struct relay_result *res)
{
    size_t max = *n, dl = strlen(domain);
    *n = 0;
    const char *map = getenv("PGMAIL_TEST_HOSTS");
    if (cfg->relayhost[0] || dl < 5 || strcasecmp(domain + dl - 5, ".test") != 0 || !map) {
        result(res, 4, 0, "4.4.3", "stand-in resolver: only .test names from PGMAIL_TEST_HOSTS");
        return ROUTE_TEMP;
    }
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", map);
    for (char *save = NULL, *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(e, '=');
        if (!eq || (size_t)(eq - e) != dl || strncasecmp(e, domain, dl) != 0)
            continue;
        for (char *s2 = NULL, *a = strtok_r(eq + 1, "+", &s2); a && *n < max;
             a = strtok_r(NULL, "+", &s2)) {
            struct relay_host *h = &hosts[*n];
            memset(h, 0, sizeof *h);
            snprintf(h->name, sizeof h->name, "%s", domain);
            h->family = strchr(a, ':') ? AF_INET6 : AF_INET;
            if (inet_pton(h->family, a, h->addr) == 1 && loopback(h->family, h->addr))
                (*n)++;
        }
        return ROUTE_OK;
    }
    result(res, 5, 0, "5.1.2", "stand-in resolver: no such domain in PGMAIL_TEST_HOSTS");
    return ROUTE_NXDOMAIN;
}

/* reply: read one (multiline) reply within secs: its code, the text joined in res->reply
 * (kind and status set from it). -1 when the connection failed or timed out. */
static int reply(struct relay_conn *c, int secs, struct relay_result *res)
{
    char line[1024];
    size_t len;
    memset(res, 0, sizeof *res);
    snprintf(res->host, sizeof res->host, "%s", c->host);
    snprintf(res->address, sizeof res->address, "%s", c->address);
    io_set_timeout(&c->io, secs * 1000);
    for (;;) {
        enum io_status st = io_getline(&c->io, line, sizeof line - 1, &len);
        if (st != IO_LINE || len < 4 || !isdigit((unsigned char)line[0])) {
            res->kind = 4;
            snprintf(res->status, sizeof res->status, "4.4.2");
            snprintf(res->reply, sizeof res->reply, "%s",
                     st == IO_TIMEOUT ? "timeout waiting for the remote reply"
                                      : "connection lost or bad reply");
            return -1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        size_t have = strlen(res->reply);
        snprintf(res->reply + have, sizeof res->reply - have, "%s%s", have ? " " : "", line + 4);
        if (line[3] != '-') {
            res->code = (int)strtol(line, NULL, 10);
            break;
        }
    }
    res->kind = res->code / 100 == 2 ? 2 : res->code / 100 == 5 ? 5 : 4;
    const char *t = res->reply;
    if (isdigit((unsigned char)t[0]) && t[1] == '.' && strchr(t, ' ')) {
        size_t k = strcspn(t, " ");
        snprintf(res->status, sizeof res->status, "%.*s", (int)k, t);
        memmove(res->reply, t + k + 1, strlen(t + k + 1) + 1);
    } else {
        snprintf(res->status, sizeof res->status, "%d.0.0", res->kind);
    }
    return 0;
}

static int command(struct relay_conn *c, int secs, struct relay_result *res, const char *fmt,
                   const char *arg)
{
    io_printf(&c->io, fmt, arg);
    return reply(c, secs, res);
}

struct relay_conn *relay_connect(const struct config *cfg, const struct relay_host *host,
                                 struct relay_result *res)
{
    struct relay_conn *c = calloc(1, sizeof *c);
    if (!c) {
        result(res, 4, 0, "4.3.0", "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    snprintf(c->host, sizeof c->host, "%s", host->name);
    inet_ntop(host->family, host->addr, c->address, sizeof c->address);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (host->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)cfg->relay_port);
        memcpy(&s4->sin_addr, host->addr, 4);
        sl = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)cfg->relay_port);
        memcpy(&s6->sin6_addr, host->addr, 16);
        sl = sizeof *s6;
    }
    c->fd = socket(host->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&ss, sl) < 0) {
        result(res, 4, 0, "4.4.1", "connection refused or failed");
        snprintf(res->host, sizeof res->host, "%s", c->host);
        snprintf(res->address, sizeof res->address, "%s", c->address);
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return NULL;
    }
    io_init(&c->io, c->fd, c->fd);
    if (reply(c, LIM_CLIENT_TIMEOUT_GREETING, res) == 0 && res->kind == 2 &&
        command(c, LIM_CLIENT_TIMEOUT_MAIL, res, "EHLO %s\r\n", cfg->hostname) == 0 &&
        (res->kind == 2 ||
         (command(c, LIM_CLIENT_TIMEOUT_MAIL, res, "HELO %s\r\n", cfg->hostname) == 0 &&
          res->kind == 2)))
        return c;
    close(c->fd);
    free(c);
    return NULL;
}

/* unanswered: every recipient without a result gets res; -1 (the connection is gone)
 * when res came from a lost connection or a 421. */
static int settle(const struct relay_msg *msg, const struct relay_result *res, int gone)
{
    for (size_t i = 0; i < msg->nrcpts; i++)
        if (msg->rcpts[i].result.kind == 0)
            msg->rcpts[i].result = *res;
    return gone ? -1 : 0;
}

static int put_body(struct relay_conn *c, const struct relay_msg *msg, relay_body_reader *read,
                    void *ctx)
{
    char buf[65536];
    long long off = 0;
    int bol = 1; /* at the beginning of a line: RFC 5321 4.5.2 transparency */
    char last[2] = {0, 0};
    for (;;) {
        long n = read(ctx, msg, off, buf, sizeof buf);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        for (long i = 0; i < n; i++) {
            if (bol && buf[i] == '.')
                io_put(&c->io, ".", 1);
            io_put(&c->io, buf + i, 1);
            bol = buf[i] == '\n';
            last[0] = last[1];
            last[1] = buf[i];
        }
        off += n;
    }
    if (!(last[0] == '\r' && last[1] == '\n') && off > 0)
        io_puts(&c->io, "\r\n");
    io_puts(&c->io, ".\r\n");
    return io_flush(&c->io);
}

int relay_send(struct relay_conn *c, const struct relay_msg *msg, relay_body_reader *read,
               void *ctx)
{
    struct relay_result res;
    for (size_t i = 0; i < msg->nrcpts; i++)
        msg->rcpts[i].result.kind = 0;
    if (command(c, LIM_CLIENT_TIMEOUT_MAIL, &res, "MAIL FROM:<%s>\r\n", msg->sender) < 0 ||
        res.kind != 2)
        return settle(msg, &res, res.code == 421 || res.code == 0);
    size_t accepted = 0;
    int *ok = calloc(msg->nrcpts, sizeof *ok);
    if (!ok)
        return -1;
    for (size_t i = 0; i < msg->nrcpts; i++) {
        if (command(c, LIM_CLIENT_TIMEOUT_RCPT, &res, "RCPT TO:<%s>\r\n", msg->rcpts[i].addr) < 0 ||
            res.code == 421) {
            free(ok);
            return settle(msg, &res, 1);
        }
        if (res.kind == 2)
            ok[i] = 1, accepted++;
        else
            msg->rcpts[i].result = res;
    }
    int gone = 0;
    if (!accepted) {
        gone = command(c, LIM_CLIENT_TIMEOUT_MAIL, &res, "RSET\r\n%s", "") < 0;
    } else if (command(c, LIM_CLIENT_TIMEOUT_DATA, &res, "DATA\r\n%s", "") < 0 || res.code != 354) {
        gone = res.code == 421 || res.code == 0;
        if (res.kind == 2)
            res.kind = 4;
        settle(msg, &res, gone);
    } else if (put_body(c, msg, read, ctx) < 0) {
        memset(&res, 0, sizeof res);
        res.kind = 4;
        snprintf(res.status, sizeof res.status, "4.3.0");
        snprintf(res.reply, sizeof res.reply, "the message could not be read or sent");
        gone = 1;
        settle(msg, &res, 1);
    } else {
        gone = reply(c, LIM_CLIENT_TIMEOUT_DOT, &res) < 0 || res.code == 421;
        settle(msg, &res, gone);
    }
    free(ok);
    return gone ? -1 : 0;
}

void relay_close(struct relay_conn *c)
{
    if (!c)
        return;
    io_puts(&c->io, "QUIT\r\n");
    io_flush(&c->io);
    close(c->fd);
    free(c);
}
