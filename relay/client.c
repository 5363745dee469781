/*
 * client.c - the SMTP client of pgmail-relay (see relay.h): one connection to one host,
 * over the shared line reader (shared/io.c) and the shared TLS transport (shared/tls.c).
 *
 * RFC 5321: greeting, EHLO (HELO when EHLO gets a 5xx, 4.1.4), MAIL/RCPT/DATA with the
 * 4.5.3.2 timeouts per step, dot-stuffing (4.5.2), every reply read whole by one bounded
 * parser (reply.c: 4.2, multiline replies, at most LIM_REMOTE_REPLY octets of text kept,
 * also a fuzz target). RFC 1870 SIZE: a message the server announced it cannot take bounces 5.3.4
 * without being sent. RFC 2920 PIPELINING: MAIL, every RCPT and DATA go out in one write
 * and the replies are read in order. RFC 3207 STARTTLS: with relay_tls = may it is used
 * whenever offered, without verification (RFC 7435 opportunistic TLS), and a failed
 * handshake is retried once in clear on a new connection; with relay_tls = encrypt a
 * server without STARTTLS, or a failed handshake, defers (4.7.4) and nothing is sent in
 * clear. The relayhost always needs STARTTLS and a certificate verified against
 * relayhost_ca (or the system CAs), then AUTH PLAIN or LOGIN (RFC 4954); wrong credentials
 * defer, they never bounce.
 *
 * Outcomes: 2xx delivered, 4xx deferred, 5xx bounced, per RCPT reply and, for the
 * recipients the server accepted, per final reply. The enhanced status code is the
 * remote's when its reply has one of the same class (RFC 3463), else X.0.0. A 421, a
 * timeout or a dropped connection defers every recipient not yet answered, and the
 * connection is gone.
 */
#include "relay.h"
#include "reply.h"
#include "base64.h"
#include "io.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

/* Connecting, and the TLS handshake (Postfix: smtp_connect_timeout 30 s; the handshake
 * gets smtp_starttls_timeout's 300 s there, a minute is plenty). Seconds. */
#define RELAY_CONNECT_TIMEOUT 30
#define RELAY_TLS_TIMEOUT     60

/* QUIT's reply is waited for this long: it is a courtesy. Seconds. */
#define RELAY_QUIT_TIMEOUT 10

struct relay_conn {
    struct io io;
    int fd;
    const struct config *cfg;
    struct relay_host host;
    char address[64];
    int port;
    int gone;               /* 421, timeout, dropped: nothing more can be sent */
    int esmtp;              /* EHLO was answered 250 */
    struct relay_ehlo ehlo; /* what it announced */
    char tls[128];
};

/* The dialogue's steps (habit 18: a protocol client is a table too): the reply each waits
 * for and how long (RFC 5321 4.5.3.2; seconds, per reply line), and its name in the text
 * of a reply that never came. */
enum step {
    S_GREETING,
    S_EHLO,
    S_HELO,
    S_STARTTLS,
    S_AUTH,
    S_MAIL,
    S_RCPT,
    S_DATA,
    S_DOT,
    S_RSET,
    S_QUIT
};

static const struct {
    const char *name;
    int timeout;
    int expect; /* the code (its class) that lets the dialogue go on */
} steps[] = {
    [S_GREETING] = {"the greeting", LIM_CLIENT_TIMEOUT_GREETING, 220},
    [S_EHLO] = {"EHLO", LIM_CLIENT_TIMEOUT_MAIL, 250},
    [S_HELO] = {"HELO", LIM_CLIENT_TIMEOUT_MAIL, 250},
    [S_STARTTLS] = {"STARTTLS", LIM_CLIENT_TIMEOUT_MAIL, 220},
    [S_AUTH] = {"AUTH", LIM_CLIENT_TIMEOUT_MAIL, 235},
    [S_MAIL] = {"MAIL FROM", LIM_CLIENT_TIMEOUT_MAIL, 250},
    [S_RCPT] = {"RCPT TO", LIM_CLIENT_TIMEOUT_RCPT, 250},
    [S_DATA] = {"DATA", LIM_CLIENT_TIMEOUT_DATA, 354},
    [S_DOT] = {"the end of the message", LIM_CLIENT_TIMEOUT_DOT, 250},
    [S_RSET] = {"RSET", LIM_CLIENT_TIMEOUT_MAIL, 250},
    [S_QUIT] = {"QUIT", RELAY_QUIT_TIMEOUT, 221},
};

static int step_ms(int seconds) /* the tests' cap applied */
{
    return relay_test_timeout_ms(seconds * 1000);
}

/* ---- replies */

/* read_reply: the whole reply to step (reply.c), within the step's timeout per line; the
 * EHLO keywords are noted in c. code 0 when the connection failed, was closed or timed
 * out, or the reply was malformed: then c->gone is set and text says which. */
static void read_reply(struct relay_conn *c, struct relay_reply *r, enum step step)
{
    io_set_timeout(&c->io, step_ms(steps[step].timeout));
    enum relay_reply_status st = relay_reply_read(&c->io, r, step == S_EHLO ? &c->ehlo : NULL);
    if (st != REPLY_OK) {
        c->gone = 1;
        snprintf(r->text, sizeof r->text, "%s %s while waiting for the reply to %s",
                 st == REPLY_TIMEOUT     ? "timeout with"
                 : st == REPLY_EOF       ? "connection closed by"
                 : st == REPLY_MALFORMED ? "malformed reply from"
                                         : "connection failed with",
                 c->host.name, steps[step].name);
        return;
    }
    if (r->code == 421)
        c->gone = 1;
}

/* passes: r is the reply that lets the dialogue go on after step. */
static int passes(const struct relay_reply *r, enum step step)
{
    return r->code != 0 && r->code / 100 == steps[step].expect / 100;
}

/* set_result: res from reply r (or, when r has no code, a deferral with status and why). */
static void set_result(struct relay_conn *c, struct relay_result *res, const struct relay_reply *r,
                       const char *status)
{
    memset(res, 0, sizeof *res);
    res->code = r->code;
    res->kind = r->code >= 500 ? 5 : r->code >= 400 || r->code < 200 ? 4 : 2;
    snprintf(res->status, sizeof res->status, "%s", r->code ? r->status : status);
    if (res->kind != r->code / 100) /* a 1xx or 3xx where it makes no sense */
        snprintf(res->status, sizeof res->status, "%s", status);
    /* The text only: the code is res->code (queue.last_code), and every reader of the two
     * (DSN Diagnostic-Code, pgmailctl queue list/show) writes "code text" itself. */
    snprintf(res->reply, sizeof res->reply, "%s", r->text);
    snprintf(res->host, sizeof res->host, "%s", c->host.name);
    snprintf(res->address, sizeof res->address, "%s", c->address);
    snprintf(res->tls, sizeof res->tls, "%s", c->tls);
}

/* ---- connecting */

static int open_socket(struct relay_conn *c, char *why, size_t n)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (c->host.family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)c->port);
        memcpy(&s6->sin6_addr, c->host.addr, 16);
        sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)c->port);
        memcpy(&s4->sin_addr, c->host.addr, 4);
        sl = sizeof *s4;
    }
    int fd = socket(c->host.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, n, "socket: %s", strerror(errno));
        return -1;
    }
    int err = 0;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int r = poll(&p, 1, step_ms(RELAY_CONNECT_TIMEOUT));
            socklen_t el = sizeof err;
            if (r == 0)
                err = ETIMEDOUT;
            else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
                err = errno;
        }
    }
    if (err) {
        /* A long MX name is cut: the reason stays one bounded line. */
        if (snprintf(why, n, "connect to %s[%s]:%d: %s", c->host.name, c->address, c->port,
                     strerror(err)) < 0)
            why[0] = '\0';
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    /* Output is buffered and written a whole command group at a time (io.c), so Nagle's
     * algorithm only adds waits: the final dot, sent after the body, would sit until the
     * server's delayed ACK (40 ms on Linux) came back. The handlers do the same (peer.c). */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gone = 0;
    c->tls[0] = '\0';
    io_init(&c->io, fd, fd);
    return 0;
}

static void close_socket(struct relay_conn *c)
{
    if (c->fd < 0)
        return;
    tls_end(&c->io);
    close(c->fd);
    c->fd = -1;
}

/* hello: EHLO, or HELO after a 5xx to it; the extensions are noted. */
static int hello(struct relay_conn *c, struct relay_reply *r)
{
    c->esmtp = 0;
    c->ehlo = (struct relay_ehlo){.size = -1};
    io_printf(&c->io, "EHLO %s\r\n", c->cfg->hostname);
    read_reply(c, r, S_EHLO);
    if (r->code >= 500) {
        io_printf(&c->io, "HELO %s\r\n", c->cfg->hostname);
        read_reply(c, r, S_HELO);
        return passes(r, S_HELO) ? 0 : -1;
    }
    c->esmtp = passes(r, S_EHLO);
    if (!c->esmtp)
        c->ehlo.pipelining = c->ehlo.starttls = c->ehlo.auth_plain = c->ehlo.auth_login =
            c->ehlo.eightbitmime = 0;
    return c->esmtp ? 0 : -1;
}

/* auth: AUTH PLAIN (or LOGIN) with relayhost_user and the password file's first line.
 * Any failure is temporary: a wrong password is the operator's to fix, not the sender's. */
static int auth(struct relay_conn *c, struct relay_reply *r)
{
    char pw[LIM_PASSWORD + 2] = "";
    FILE *f = fopen(c->cfg->relayhost_password_file, "re");
    if (!f || !fgets(pw, sizeof pw, f)) {
        if (f)
            fclose(f);
        r->code = 0;
        snprintf(r->text, sizeof r->text, "cannot read relayhost_password_file");
        return -1;
    }
    fclose(f);
    pw[strcspn(pw, "\r\n")] = '\0';
    const char *user = c->cfg->relayhost_user;
    char raw[sizeof c->cfg->relayhost_user * 2 + sizeof pw], b64[sizeof raw * 4 / 3 + 8];
    int ok = -1;
    if (c->ehlo.auth_plain) {
        size_t ul = strlen(user), pl = strlen(pw);
        raw[0] = '\0';
        memcpy(raw + 1, user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, pw, pl);
        base64_encode((unsigned char *)raw, 2 + ul + pl, b64);
        io_printf(&c->io, "AUTH PLAIN %s\r\n", b64);
        read_reply(c, r, S_AUTH);
        ok = passes(r, S_AUTH) ? 0 : -1;
    } else if (c->ehlo.auth_login) {
        io_puts(&c->io, "AUTH LOGIN\r\n");
        read_reply(c, r, S_AUTH);
        for (int step = 0; step < 2 && r->code == 334; step++) {
            const char *v = step == 0 ? user : pw;
            base64_encode((const unsigned char *)v, strlen(v), b64);
            io_printf(&c->io, "%s\r\n", b64);
            read_reply(c, r, S_AUTH);
        }
        ok = passes(r, S_AUTH) ? 0 : -1;
    } else {
        r->code = 0;
        snprintf(r->text, sizeof r->text, "the relayhost offers neither AUTH PLAIN nor LOGIN");
    }
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(raw, sizeof raw);
    explicit_bzero(b64, sizeof b64);
    return ok;
}

/* session: greeting, EHLO, STARTTLS (unless in_clear), EHLO again, AUTH. 0, or -1 with
 * res set; *retry_clear is set when a may-TLS handshake failed (try again in clear). */
static int session(struct relay_conn *c, int in_clear, int *retry_clear, struct relay_result *res)
{
    const struct config *cfg = c->cfg;
    int relayhost = cfg->relayhost[0] != '\0';
    int need_tls = relayhost || cfg->relay_tls == RELAY_TLS_ENCRYPT;
    struct relay_reply r;
    char why[256];
    if (open_socket(c, why, sizeof why) < 0) {
        struct relay_reply none = {.code = 0};
        snprintf(none.text, sizeof none.text, "%s", why);
        set_result(c, res, &none, "4.4.1");
        return -1;
    }
    read_reply(c, &r, S_GREETING);
    if (!passes(&r, S_GREETING) || hello(c, &r) < 0) {
        set_result(c, res, &r, "4.4.2");
        return -1;
    }
    if (!in_clear && c->ehlo.starttls) {
        io_puts(&c->io, "STARTTLS\r\n");
        read_reply(c, &r, S_STARTTLS);
        if (passes(&r, S_STARTTLS)) {
            if (tls_connect(&c->io, c->host.name, relayhost, relayhost ? cfg->relayhost_ca : NULL,
                            step_ms(RELAY_TLS_TIMEOUT), why, sizeof why) < 0) {
                log_event(LOG_WARNING, "relay-tls-failed", "host=%s address=%s reason=\"%s\"%s",
                          c->host.name, c->address, why, need_tls ? "" : " retry=plaintext");
                struct relay_reply none = {.code = 0};
                snprintf(none.text, sizeof none.text, "TLS handshake with %.200s failed: %.255s",
                         c->host.name, why);
                set_result(c, res, &none, "4.7.5");
                *retry_clear = !need_tls;
                return -1;
            }
            tls_describe(&c->io, c->tls, sizeof c->tls);
            if (hello(c, &r) < 0) {
                set_result(c, res, &r, "4.4.2");
                return -1;
            }
        } else if (r.code == 0 || need_tls) {
            set_result(c, res, &r, "4.7.4");
            if (r.code)
                res->kind = 4;
            return -1;
        }
    }
    if (need_tls && !c->tls[0]) {
        struct relay_reply none = {.code = 0};
        snprintf(none.text, sizeof none.text, "TLS is required, but %s does not offer STARTTLS",
                 c->host.name);
        set_result(c, res, &none, "4.7.4");
        return -1;
    }
    if (relayhost && cfg->relayhost_user[0] && auth(c, &r) < 0) {
        set_result(c, res, &r, "4.7.0");
        /* RFC 4954 535 5.7.8 and the like: deferred, never bounced */
        res->kind = 4;
        if (res->status[0] == '5')
            res->status[0] = '4';
        return -1;
    }
    return 0;
}

struct relay_conn *relay_connect(const struct config *cfg, const struct relay_host *host,
                                 struct relay_result *res)
{
    struct relay_conn *c = calloc(1, sizeof *c);
    if (!c) {
        memset(res, 0, sizeof *res);
        res->kind = 4;
        snprintf(res->status, sizeof res->status, "4.3.0");
        snprintf(res->reply, sizeof res->reply, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->cfg = cfg;
    c->host = *host;
    c->port = (int)cfg->relay_port;
    if (cfg->relayhost[0]) {
        char name[LIM_DOMAIN + 1];
        relay_relayhost(cfg->relayhost, name, sizeof name, &c->port);
    }
    inet_ntop(host->family, host->addr, c->address, sizeof c->address);
    int retry_clear = 0;
    if (session(c, 0, &retry_clear, res) == 0)
        return c;
    close_socket(c);
    if (retry_clear && session(c, 1, &retry_clear, res) == 0)
        return c;
    close_socket(c);
    free(c);
    return NULL;
}

/* ---- one transaction */

/* send_body: the message from read, dot-stuffed (RFC 5321 4.5.2), ending in CRLF, then
 * the final dot. -1 when the body could not be read (nothing more may be sent: a final dot
 * would deliver a cut message). */
static int send_body(struct relay_conn *c, const struct relay_msg *msg, relay_body_reader *read,
                     void *ctx)
{
    char buf[8192];
    long long off = 0;
    int bol = 1;      /* at the beginning of a line */
    char last = '\n'; /* an empty body still ends "properly" */
    io_set_timeout(&c->io, step_ms(LIM_CLIENT_TIMEOUT_BLOCK));
    for (;;) {
        long n = read(ctx, msg, off, buf, sizeof buf);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        off += n;
        size_t start = 0;
        for (size_t i = 0; i < (size_t)n; i++) {
            if (bol && buf[i] == '.') {
                io_put(&c->io, buf + start, i - start);
                io_put(&c->io, ".", 1);
                start = i;
            }
            bol = buf[i] == '\n';
        }
        io_put(&c->io, buf + start, (size_t)n - start);
        last = buf[n - 1];
    }
    if (last != '\n')
        io_puts(&c->io, "\r\n");
    io_puts(&c->io, ".\r\n");
    return 0;
}

/* eight_bit: 1 when msg's body holds octets outside US-ASCII. Only a body that came with
 * the claim is looked at; a larger one is read as it is sent, after MAIL, and goes
 * undeclared as before (XXX: the store does not record it yet). */
static int eight_bit(const struct relay_msg *msg)
{
    if (!msg->body)
        return 0;
    for (size_t i = msg->start > 0 ? (size_t)msg->start : 0; i < msg->body_len; i++)
        if (msg->body[i] & 0x80)
            return 1;
    return 0;
}

/* unanswered: every recipient without a final result gets r (or a deferral saying why). */
static void unanswered(struct relay_conn *c, const struct relay_msg *msg,
                       const struct relay_reply *r)
{
    for (size_t i = 0; i < msg->nrcpts; i++)
        if (msg->rcpts[i].result.kind == 0) {
            set_result(c, &msg->rcpts[i].result, r, "4.4.2");
            if (r->code == 0 || r->code == 421)
                msg->rcpts[i].result.kind = 4;
        }
}

int relay_send(struct relay_conn *c, const struct relay_msg *msg, relay_body_reader *read,
               void *ctx)
{
    struct relay_reply r;
    for (size_t i = 0; i < msg->nrcpts; i++)
        memset(&msg->rcpts[i].result, 0, sizeof msg->rcpts[i].result);
    if (c->gone) {
        r.code = 0;
        snprintf(r.text, sizeof r.text, "connection to %s lost", c->host.name);
        unanswered(c, msg, &r);
        return -1;
    }
    /* RFC 1870 6: the server said it cannot take a message this large */
    if (c->ehlo.size > 0 && msg->size > c->ehlo.size) {
        r.code = 0;
        snprintf(r.text, sizeof r.text, "message size %lld exceeds the size limit %lld of %s",
                 msg->size, c->ehlo.size, c->host.name);
        unanswered(c, msg, &r);
        for (size_t i = 0; i < msg->nrcpts; i++) {
            msg->rcpts[i].result.kind = 5;
            snprintf(msg->rcpts[i].result.status, sizeof msg->rcpts[i].result.status, "5.3.4");
        }
        return 0;
    }
    /* MAIL, RCPTs (and DATA when pipelining): the writes wait in io's buffer and go out
     * in one write() when the first reply is read. */
    char size[32] = "";
    if (c->ehlo.size >= 0 && msg->size > 0) /* RFC 1870 6: only when announced */
        snprintf(size, sizeof size, " SIZE=%lld", msg->size);
    /* RFC 6152: 8-bit content is declared to a server that announced 8BITMIME. */
    int body8 = c->ehlo.eightbitmime && eight_bit(msg);
    io_printf(&c->io, "MAIL FROM:<%s>%s%s\r\n", msg->sender, size, body8 ? " BODY=8BITMIME" : "");
    if (c->ehlo.pipelining) {
        for (size_t i = 0; i < msg->nrcpts; i++)
            io_printf(&c->io, "RCPT TO:<%s>\r\n", msg->rcpts[i].addr);
        io_puts(&c->io, "DATA\r\n");
    }
    read_reply(c, &r, S_MAIL);
    int mail_ok = passes(&r, S_MAIL);
    if (!mail_ok && (c->gone || !c->ehlo.pipelining)) {
        unanswered(c, msg, &r); /* no transaction was opened: nothing to reset */
        return c->gone ? -1 : 0;
    }
    struct relay_reply mail = r;
    size_t accepted = 0;
    char *ok = calloc(msg->nrcpts ? msg->nrcpts : 1, 1);
    if (!ok) {
        c->gone = 1;
        r.code = 0;
        snprintf(r.text, sizeof r.text, "out of memory");
        unanswered(c, msg, &r);
        return -1;
    }
    for (size_t i = 0; i < msg->nrcpts && !c->gone; i++) {
        if (!c->ehlo.pipelining)
            io_printf(&c->io, "RCPT TO:<%s>\r\n", msg->rcpts[i].addr);
        read_reply(c, &r, S_RCPT);
        if (r.code == 0 || r.code == 421)
            break;
        if (!mail_ok) /* pipelined after a refused MAIL: MAIL's reply says why */
            set_result(c, &msg->rcpts[i].result, &mail, "5.0.0");
        else if (passes(&r, S_RCPT))
            ok[i] = 1, accepted++;
        else
            set_result(c, &msg->rcpts[i].result, &r, "5.0.0");
    }
    if (!c->gone) {
        if (!c->ehlo.pipelining && accepted > 0)
            io_puts(&c->io, "DATA\r\n");
        if (c->ehlo.pipelining || accepted > 0)
            read_reply(c, &r, S_DATA);
    }
    int rc = 0;
    if (c->gone) {
        rc = -1;
    } else if (accepted > 0 && passes(&r, S_DATA)) {
        if (send_body(c, msg, read, ctx) < 0) {
            /* the message cannot be completed: only closing the connection aborts it */
            c->gone = 1;
            r.code = 0;
            snprintf(r.text, sizeof r.text, "the message could not be read from the database");
            rc = -1;
        } else {
            read_reply(c, &r, S_DOT);
            if (r.code != 0 && r.code != 421)
                for (size_t i = 0; i < msg->nrcpts; i++)
                    if (ok[i])
                        set_result(c, &msg->rcpts[i].result, &r, "5.0.0");
            rc = c->gone ? -1 : 0;
        }
    } else if (passes(&r, S_DATA)) {
        /* RFC 2920 3.1: DATA accepted without a valid recipient: end it empty */
        io_puts(&c->io, ".\r\n");
        read_reply(c, &r, S_DOT);
        rc = c->gone ? -1 : 0;
    } else {
        /* DATA refused: the accepted recipients get its reply; the transaction is reset */
        for (size_t i = 0; i < msg->nrcpts; i++)
            if (ok[i])
                set_result(c, &msg->rcpts[i].result, &r, "5.0.0");
        if (mail_ok && r.code != 421)
            io_puts(&c->io, "RSET\r\n");
        rc = c->gone ? -1 : 0;
    }
    free(ok);
    if (rc < 0 && r.code == 0 && !r.text[0])
        snprintf(r.text, sizeof r.text, "connection to %s lost", c->host.name);
    unanswered(c, msg, &r);
    /* a RSET's reply is read before the next MAIL (it is pipelined with nothing) */
    if (rc == 0 && c->io.out_len > 0) {
        read_reply(c, &r, S_RSET);
        rc = c->gone ? -1 : 0;
    }
    return rc;
}

int relay_alive(struct relay_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->gone || c->fd < 0 || poll(&p, 1, 0) != 0) {
        c->gone = 1; /* no QUIT into whatever the server said or closed */
        return 0;
    }
    return 1;
}

void relay_close(struct relay_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0 && !c->gone) {
        struct relay_reply r;
        io_puts(&c->io, "QUIT\r\n");
        read_reply(c, &r, S_QUIT);
    }
    close_socket(c);
    free(c);
}
