/*
 * milter.c - the milters of one SMTP session: connect, negotiate, send each event to each
 * milter in the configured order, and turn their answers into one verdict (see smtpd.h).
 *
 * One session, one connection per milter, as Postfix's smtpd does: events go out as the
 * client's commands arrive, with the macros Postfix sends to the same milters before each
 * (rspamd, OpenDKIM and OpenDMARC read them: the client address, the authenticated user
 * that makes OpenDKIM sign, the message id). A milter is asked and answered one event at a
 * time within its timeout (milter_command_timeout; milter_content_timeout for the message
 * content; SMFIR_PROGRESS starts it again).
 * A milter that cannot be reached, stops answering in time, closes, or answers something
 * that is not the protocol is "unavailable": logged once, closed, and then
 * milter_default_action decides: tempfail (the default: a filter that is down must not let
 * mail through unfiltered nor lose it, so mail gets 451 4.7.1 until it is back), reject
 * (550 5.7.1), or accept (the session goes on without that milter).
 */
#include "smtpd.h"
#include "log.h"
#include "milter.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* The stages whose answers concern the whole session, as Postfix's milter8 reads them. */
#define STAGE_SESSION(cmd) ((cmd) == SMFIC_CONNECT || (cmd) == SMFIC_HELO)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_fd: poll fd for events until deadline (ms). 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* dial: connect to spec ("inet:HOST:PORT", "inet:[ADDR]:PORT", "unix:/path") within
 * timeout_ms; the socket is left non-blocking (every read and write waits with poll). */
static int dial(const char *spec, long timeout_ms, char *why, size_t whylen)
{
    long long deadline = now_ms() + timeout_ms;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    memset(&ss, 0, sizeof ss);
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        if (strlen(spec + 5) >= sizeof un->sun_path) {
            snprintf(why, whylen, "socket path too long");
            return -1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, spec + 5);
        sslen = sizeof *un;
    } else {
        char host[256];
        const char *h = spec + 5, *colon = strrchr(h, ':');
        size_t hl = colon ? (size_t)(colon - h) : 0;
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        if (!colon || hl == 0 || hl >= sizeof host) {
            snprintf(why, whylen, "bad address");
            return -1;
        }
        memcpy(host, h, hl);
        host[hl] = '\0';
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
        int e = getaddrinfo(host, colon + 1, &hints, &ai);
        if (e != 0) {
            snprintf(why, whylen, "%s", gai_strerror(e));
            return -1;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sslen = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS) {
        snprintf(why, whylen, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (wait_fd(fd, POLLOUT, deadline) != 1) {
        snprintf(why, whylen, "connect: timed out");
        close(fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0) {
        snprintf(why, whylen, "connect: %s", strerror(err ? err : errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* transfer: send (out) or receive exactly n octets within the deadline. 0, or -1 when the
 * peer closed, failed or took too long. */
static int transfer(int fd, char *p, size_t n, long long deadline, int out)
{
    while (n > 0) {
        ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        int again = k < 0 && (errno == EAGAIN || errno == EINTR);
        if (!again || wait_fd(fd, out ? POLLOUT : POLLIN, deadline) != 1)
            return -1;
    }
    return 0;
}

/* The one outgoing packet: length, command, data (built in place). */
struct packet {
    size_t len;
    char buf[5 + LIM_MILTER_CHUNK + 1024];
};

static void pk_start(struct packet *p, char cmd)
{
    p->len = 5;
    p->buf[4] = cmd;
}

/* pk_add: n octets of data (strings add their NUL with n = strlen + 1); what does not fit
 * is cut off, which only a macro value of absurd length could reach. */
static void pk_add(struct packet *p, const void *d, size_t n)
{
    if (n > sizeof p->buf - p->len)
        n = sizeof p->buf - p->len;
    memcpy(p->buf + p->len, d, n);
    p->len += n;
}

static void pk_str(struct packet *p, const char *s)
{
    pk_add(p, s, strlen(s) + 1);
}

static int pk_send(struct milter_conn *m, struct packet *p, long long deadline)
{
    uint32_t n = (uint32_t)(p->len - 4);
    p->buf[0] = (char)(n >> 24);
    p->buf[1] = (char)(n >> 16);
    p->buf[2] = (char)(n >> 8);
    p->buf[3] = (char)n;
    return transfer(m->fd, p->buf, p->len, deadline, 1);
}

/* read_reply: the next packet from m, parsed into *r (pkt holds its text). 0, or -1 with
 * why set: closed, timed out, too long, or not the protocol. */
static int read_reply(struct milter_conn *m, char *pkt, struct milter_reply *r, long long deadline,
                      const char **why)
{
    char head[4];
    if (transfer(m->fd, head, 4, deadline, 0) < 0) {
        *why = now_ms() >= deadline ? "timed out" : "connection closed";
        return -1;
    }
    uint32_t n = (uint32_t)(unsigned char)head[0] << 24 | (uint32_t)(unsigned char)head[1] << 16 |
                 (uint32_t)(unsigned char)head[2] << 8 | (unsigned char)head[3];
    if (n == 0 || n > LIM_MILTER_PACKET) {
        *why = "packet length out of bounds";
        return -1;
    }
    if (transfer(m->fd, pkt, n, deadline, 0) < 0) {
        *why = now_ms() >= deadline ? "timed out" : "connection closed";
        return -1;
    }
    if (milter_parse(pkt, n, r) < 0) {
        *why = "malformed reply";
        return -1;
    }
    return 0;
}

/* The events, with the protocol bits by which a milter declines each (NO*) or its reply
 * (NR_*), and their names in the logs. */
static const struct event {
    char cmd;
    const char *name;
    uint32_t no_event, no_reply;
} events[] = {
    {SMFIC_CONNECT, "connect", SMFIP_NOCONNECT, SMFIP_NR_CONN},
    {SMFIC_HELO, "helo", SMFIP_NOHELO, SMFIP_NR_HELO},
    {SMFIC_MAIL, "mail", SMFIP_NOMAIL, SMFIP_NR_MAIL},
    {SMFIC_RCPT, "rcpt", SMFIP_NORCPT, SMFIP_NR_RCPT},
    {SMFIC_DATA, "data", SMFIP_NODATA, SMFIP_NR_DATA},
    {SMFIC_HEADER, "header", SMFIP_NOHDRS, SMFIP_NR_HDR},
    {SMFIC_EOH, "eoh", SMFIP_NOEOH, SMFIP_NR_EOH},
    {SMFIC_BODY, "body", SMFIP_NOBODY, SMFIP_NR_BODY},
    {SMFIC_BODYEOB, "eom", 0, 0}, /* also what event() gives for any other command */
};

static const struct event *event(char cmd)
{
    size_t i = 0;
    while (i + 1 < sizeof events / sizeof events[0] && events[i].cmd != cmd)
        i++;
    return &events[i];
}

/* ---- verdicts */

static const char *kind_event[] = {
    [MK_REJECT] = "milter-reject",
    [MK_TEMPFAIL] = "milter-tempfail",
    [MK_DISCARD] = "milter-discard",
};

/* fail: m is unavailable (why): logged, closed, and milter_default_action applies: the
 * verdict for what is under way becomes tempfail or reject (and stays so for the rest of
 * the session), or the session goes on without m. */
static void fail(struct smtp_session *s, struct milter_conn *m, const char *why,
                 struct milter_verdict *v)
{
    static const char *const actions[] = {"tempfail", "accept", "reject"};
    log_event(LOG_WARNING, "milter-unavailable", "milter=%s reason=\"%s\" action=%s", m->spec, why,
              actions[s->cfg.milter_default_action]);
    if (m->fd >= 0)
        close(m->fd);
    m->fd = -1;
    if (s->cfg.milter_default_action == MILTER_ACCEPT)
        return;
    s->milter_down = s->cfg.milter_default_action == MILTER_TEMPFAIL ? MK_TEMPFAIL : MK_REJECT;
    if (v->kind != MK_REJECT && v->kind != MK_REPLY && v->kind != MK_TEMPFAIL) {
        v->kind = s->milter_down;
        v->down = 1;
    }
}

/* decide: m's final answer r to event cmd, into the verdict v (the first refusal wins). */
static void decide(struct milter_conn *m, char cmd, const struct milter_reply *r,
                   struct milter_verdict *v)
{
    if (r->kind == MK_ACCEPT) {
        if (STAGE_SESSION(cmd))
            m->session_done = 1;
        m->msg_done = 1;
        m->in_msg = 0;
        return;
    }
    if (r->kind != MK_REJECT && r->kind != MK_TEMPFAIL && r->kind != MK_REPLY &&
        r->kind != MK_DISCARD)
        return;
    enum milter_kind k = r->kind == MK_REPLY ? (r->temporary ? MK_TEMPFAIL : MK_REJECT) : r->kind;
    log_event(LOG_NOTICE, kind_event[k], "milter=%s stage=%s reply=\"%s\"", m->spec,
              event(cmd)->name, r->kind == MK_REPLY ? r->text : "");
    if (cmd != SMFIC_RCPT) {
        m->msg_done = 1; /* the milter is out of this message (libmilter's state too) */
        m->in_msg = 0;
    }
    if (v->kind == MK_REJECT || v->kind == MK_REPLY || v->kind == MK_TEMPFAIL)
        return;
    if (v->kind == MK_DISCARD && k == MK_DISCARD)
        return;
    v->kind = r->kind == MK_REPLY ? MK_REPLY : k;
    v->down = 0;
    v->temporary = r->kind == MK_REPLY ? r->temporary : k == MK_TEMPFAIL;
    snprintf(v->text, sizeof v->text, "%s", r->kind == MK_REPLY ? r->text : "");
}

/* The recipient of the RCPT event under way: the milters hear of it before it joins the
 * transaction (a refusal must leave the transaction as it was). */
static const char *current_rcpt = "";

/* macros: the Postfix macros of the stage cmd (its milter_*_macros defaults, with the
 * client's name and address at connect as well), as one SMFIC_MACRO packet. */
static void macros(struct smtp_session *s, char cmd, struct packet *p)
{
    char pair[LIM_PATH + 300];
    pk_start(p, SMFIC_MACRO);
    pk_add(p, &cmd, 1);
#define MACRO(name, ...)                                                                           \
    do {                                                                                           \
        pk_str(p, name);                                                                           \
        snprintf(pair, sizeof pair, __VA_ARGS__);                                                  \
        pk_str(p, pair);                                                                           \
    } while (0)
    switch (cmd) {
    case SMFIC_CONNECT:
        MACRO("j", "%s", s->cfg.hostname);
        MACRO("{daemon_name}", "%s", s->cfg.hostname);
        MACRO("v", "pgmail");
        /* No reverse lookup here (none is made anywhere): the name is "unknown", as
         * Postfix says for a client without a verified name. */
        MACRO("_", "unknown [%s]", s->peer.addr);
        MACRO("{client_addr}", "%s", s->peer.addr);
        MACRO("{client_name}", "unknown");
        break;
    case SMFIC_HELO:
        if (tls_active(&s->io)) {
            char info[128], *with;
            tls_describe(&s->io, info, sizeof info);
            if ((with = strstr(info, " with cipher ")) != NULL) {
                MACRO("{cipher}", "%s", with + 13);
                *with = '\0';
            }
            MACRO("{tls_version}", "%s", info);
        }
        break;
    case SMFIC_MAIL:
        if (s->auth_id[0]) {
            MACRO("{auth_type}", "%s", s->auth_mech);
            MACRO("{auth_authen}", "%s", s->auth_user);
        }
        MACRO("{mail_addr}", "%s", s->tx.sender);
        break;
    case SMFIC_RCPT:
        MACRO("i", "%s", s->tx.message_id);
        MACRO("{rcpt_addr}", "%s", current_rcpt);
        break;
    default: /* DATA, end of headers, end of message */
        MACRO("i", "%s", s->tx.message_id);
        break;
    }
#undef MACRO
}

/* ask: send event p (command cmd) to m with its macros, and read the answer unless m asked
 * for none: modification requests at the end of the message go to h. Returns 0 with m's
 * verdict in v, or -1 after fail(). */
static int ask(struct smtp_session *s, struct milter_conn *m, char cmd, struct packet *p,
               struct hdrs *h, struct milter_verdict *v)
{
    static char pkt[LIM_MILTER_PACKET];
    static struct packet mac;
    int content =
        cmd == SMFIC_BODY || cmd == SMFIC_BODYEOB || cmd == SMFIC_HEADER || cmd == SMFIC_EOH;
    long timeout = content ? s->cfg.milter_content_timeout : s->cfg.milter_command_timeout;
    long long deadline = now_ms() + timeout * 1000;
    if (cmd != SMFIC_HEADER && cmd != SMFIC_BODY && cmd != SMFIC_OPTNEG) {
        macros(s, cmd, &mac);
        if (pk_send(m, &mac, deadline) < 0) {
            fail(s, m, "connection closed", v);
            return -1;
        }
    }
    if (pk_send(m, p, deadline) < 0) {
        fail(s, m, "connection closed", v);
        return -1;
    }
    if (m->protocol & event(cmd)->no_reply)
        return 0;
    int leadspc = (m->protocol & SMFIP_HDR_LEADSPC) != 0;
    for (;;) {
        struct milter_reply r;
        const char *why;
        if (read_reply(m, pkt, &r, deadline, &why) < 0) {
            fail(s, m, why, v);
            return -1;
        }
        switch (r.kind) {
        case MK_PROGRESS:
            deadline = now_ms() + timeout * 1000;
            continue;
        case MK_ADDHEADER:
        case MK_INSHEADER:
        case MK_CHGHEADER:
            if (cmd != SMFIC_BODYEOB) {
                fail(s, m, "header change before the end of the message", v);
                return -1;
            }
            if (((r.kind == MK_CHGHEADER ? SMFIF_CHGHDRS : SMFIF_ADDHDRS) & m->actions) == 0) {
                log_event(LOG_WARNING, "milter-ignored", "milter=%s request=%c", m->spec, r.cmd);
                continue;
            }
            if ((r.kind == MK_ADDHEADER ? hdrs_add(h, r.name, r.value, leadspc)
                 : r.kind == MK_INSHEADER
                     ? hdrs_insert(h, r.index, r.name, r.value, leadspc)
                     : hdrs_change(h, r.index, r.name, r.value, leadspc)) < 0) {
                fail(s, m, "header changes exceed their room", v);
                return -1;
            }
            continue;
        case MK_UNSUPPORTED:
            /* Not offered at negotiation; a milter that asks anyway is told nothing (the
             * protocol has no answer to these) and the message goes on unchanged. */
            log_event(LOG_WARNING, "milter-ignored", "milter=%s request=%c", m->spec, r.cmd);
            continue;
        case MK_OPTNEG:
            fail(s, m, "unexpected negotiation", v);
            return -1;
        case MK_SKIP:
            if (cmd != SMFIC_BODY) {
                fail(s, m, "skip outside the body", v);
                return -1;
            }
            m->skip_body = 1;
            return 0;
        default:
            decide(m, cmd, &r, v);
            return 0;
        }
    }
}

/* live: m takes the event cmd of the current session/message. */
static int live(const struct milter_conn *m, char cmd)
{
    if (m->fd < 0 || m->session_done || (m->protocol & event(cmd)->no_event))
        return 0;
    if (STAGE_SESSION(cmd) || cmd == SMFIC_MAIL)
        return 1;
    return !m->msg_done && !(cmd == SMFIC_BODY && m->skip_body);
}

/* broadcast: event p to every live milter in order, until one refuses. */
static void broadcast(struct smtp_session *s, char cmd, struct packet *p, struct hdrs *h,
                      struct milter_verdict *v)
{
    for (size_t i = 0; i < s->nmilters; i++) {
        struct milter_conn *m = &s->milters[i];
        if (!live(m, cmd))
            continue;
        if (ask(s, m, cmd, p, h, v) == 0 && cmd == SMFIC_MAIL && !m->msg_done)
            m->in_msg = 1;
        if (v->kind == MK_REJECT || v->kind == MK_REPLY || v->kind == MK_TEMPFAIL)
            break;
    }
}

/* answer: say the verdict v of a command (its own reply), or nothing (-2) when it lets the
 * command go on. Discard at a command stage is the message's, said after DATA. */
static int answer(struct smtp_session *s, const struct milter_verdict *v)
{
    if (v->down)
        return smtp_reply(s, v->kind == MK_TEMPFAIL ? R_MILTER_TEMPFAIL : R_MILTER_DOWN);
    switch (v->kind) {
    case MK_REPLY:
        return smtp_reply_text(s, v->text);
    case MK_REJECT:
        return smtp_reply(s, R_MILTER_REJECT);
    case MK_TEMPFAIL:
        return smtp_reply(s, R_MILTER_TEMPFAIL);
    case MK_DISCARD:
        s->tx.milter.kind = MK_DISCARD;
        return -2;
    default:
        return -2;
    }
}

static struct packet pkt_out;

void smtp_milter_start(struct smtp_session *s)
{
    char list[sizeof s->cfg.milters];
    snprintf(list, sizeof list, "%s", s->cfg.milters);
    char *save, *spec;
    s->nmilters = 0;
    for (spec = strtok_r(list, " ,\t", &save); spec && s->nmilters < LIM_MILTERS;
         spec = strtok_r(NULL, " ,\t", &save)) {
        struct milter_conn *m = &s->milters[s->nmilters++];
        memset(m, 0, sizeof *m);
        snprintf(m->spec, sizeof m->spec, "%s", spec);
        char why[160];
        struct milter_verdict v = {0};
        m->fd = dial(spec, s->cfg.milter_connect_timeout * 1000, why, sizeof why);
        if (m->fd < 0) {
            fail(s, m, why, &v);
            continue;
        }
        /* Negotiation (protocol version 6): what we offer, and what the milter takes of it.
         * A milter that asks for actions we do not offer gets them masked away (rspamd
         * names its whole set); libmilter-based milters refuse on their side instead. */
        uint32_t offer[3] = {htonl(MILTER_VERSION), htonl(MILTER_ACTIONS), htonl(MILTER_STEPS)};
        pk_start(&pkt_out, SMFIC_OPTNEG);
        pk_add(&pkt_out, offer, sizeof offer);
        long long deadline = now_ms() + s->cfg.milter_command_timeout * 1000;
        static char pkt[LIM_MILTER_PACKET];
        struct milter_reply r;
        const char *err = "connection closed";
        if (pk_send(m, &pkt_out, deadline) < 0 || read_reply(m, pkt, &r, deadline, &err) < 0) {
            fail(s, m, err, &v);
            continue;
        }
        /* Steps we did not offer would be events we never send or replies we never read. */
        if (r.kind != MK_OPTNEG || r.version < 2 || (r.protocol & ~MILTER_STEPS) != 0) {
            fail(s, m, "negotiation refused", &v);
            continue;
        }
        m->actions = r.actions & MILTER_ACTIONS;
        m->protocol = r.protocol;
    }
    /* The connect event: hostname, family, port, address (SMFIA_INET, _INET6, or
     * _UNKNOWN for a pipe). */
    pk_start(&pkt_out, SMFIC_CONNECT);
    pk_str(&pkt_out, "unknown");
    int v6 = strchr(s->peer.addr, ':') != NULL,
        known = strcmp(s->peer.addr, "unknown") != 0 && strcmp(s->peer.addr, "local") != 0;
    char family = known ? (v6 ? '6' : '4') : 'U';
    pk_add(&pkt_out, &family, 1);
    if (known) {
        unsigned char port[2] = {(unsigned char)(s->peer.port >> 8), (unsigned char)s->peer.port};
        pk_add(&pkt_out, port, 2);
        pk_str(&pkt_out, s->peer.addr);
    }
    memset(&s->milter_session, 0, sizeof s->milter_session);
    broadcast(s, SMFIC_CONNECT, &pkt_out, NULL, &s->milter_session);
}

int smtp_milter_helo(struct smtp_session *s)
{
    if (s->nmilters == 0)
        return -2;
    struct milter_verdict v = {0};
    pk_start(&pkt_out, SMFIC_HELO);
    pk_str(&pkt_out, s->helo);
    broadcast(s, SMFIC_HELO, &pkt_out, NULL, &v);
    if (v.kind == MK_DISCARD) { /* every message of the session (Postfix) */
        s->milter_session.kind = MK_DISCARD;
        return -2;
    }
    return answer(s, &v);
}

/* refused_before: the session's standing verdict (a connect-time refusal, or a milter
 * down with tempfail/reject), said to MAIL. -2 when there is none. */
static int refused_before(struct smtp_session *s)
{
    if (s->milter_session.kind == MK_REJECT || s->milter_session.kind == MK_REPLY ||
        s->milter_session.kind == MK_TEMPFAIL)
        return answer(s, &s->milter_session);
    if (s->milter_down) {
        struct milter_verdict down = {.kind = s->milter_down, .down = 1};
        return answer(s, &down);
    }
    return -2;
}

int smtp_milter_mail(struct smtp_session *s)
{
    if (s->nmilters == 0)
        return -2;
    int rc = refused_before(s);
    if (rc != -2)
        return rc;
    for (size_t i = 0; i < s->nmilters; i++) {
        s->milters[i].msg_done = 0;
        s->milters[i].skip_body = 0;
    }
    struct milter_verdict v = {0};
    char path[LIM_PATH + 3];
    snprintf(path, sizeof path, "<%s>", s->tx.sender);
    pk_start(&pkt_out, SMFIC_MAIL);
    pk_str(&pkt_out, path);
    broadcast(s, SMFIC_MAIL, &pkt_out, NULL, &v);
    if (s->milter_session.kind == MK_DISCARD)
        s->tx.milter.kind = MK_DISCARD;
    return answer(s, &v);
}

int smtp_milter_rcpt(struct smtp_session *s, const char *rcpt)
{
    if (s->nmilters == 0)
        return -2;
    struct milter_verdict v = {0};
    char path[LIM_PATH + 3];
    snprintf(path, sizeof path, "<%s>", rcpt);
    current_rcpt = rcpt;
    pk_start(&pkt_out, SMFIC_RCPT);
    pk_str(&pkt_out, path);
    broadcast(s, SMFIC_RCPT, &pkt_out, NULL, &v);
    return answer(s, &v);
}

int smtp_milter_data(struct smtp_session *s)
{
    if (s->nmilters == 0)
        return -2;
    int rc = refused_before(s);
    if (rc != -2)
        return rc;
    struct milter_verdict v = {0};
    pk_start(&pkt_out, SMFIC_DATA);
    broadcast(s, SMFIC_DATA, &pkt_out, NULL, &v);
    return answer(s, &v);
}

/* refused: the message's verdict is a refusal already: no more content goes out. */
static int refused(const struct smtp_session *s)
{
    return s->tx.milter.kind == MK_REJECT || s->tx.milter.kind == MK_REPLY ||
           s->tx.milter.kind == MK_TEMPFAIL;
}

void smtp_milter_headers(struct smtp_session *s, struct hdrs *h)
{
    static char value[LIM_HEADER_SIZE_MAX];
    for (size_t f = 0; f < h->n && !refused(s); f++) {
        for (size_t i = 0; i < s->nmilters && !refused(s); i++) {
            struct milter_conn *m = &s->milters[i];
            if (!live(m, SMFIC_HEADER))
                continue;
            pk_start(&pkt_out, SMFIC_HEADER);
            char name[1000];
            size_t nl = h->f[f].namelen < sizeof name - 1 ? h->f[f].namelen : sizeof name - 1;
            memcpy(name, h->buf + h->f[f].off, nl);
            name[nl] = '\0';
            pk_str(&pkt_out, name);
            size_t n =
                hdrs_value(h, f, value, sizeof value, (m->protocol & SMFIP_HDR_LEADSPC) != 0);
            /* A field longer than one packet (a 64 KiB folded header) is cut for the
             * milter only; what is stored is the field as sent. */
            if (n + 1 > sizeof pkt_out.buf - pkt_out.len)
                n = sizeof pkt_out.buf - pkt_out.len - 1;
            pk_add(&pkt_out, value, n);
            pk_add(&pkt_out, "", 1);
            ask(s, m, SMFIC_HEADER, &pkt_out, NULL, &s->tx.milter);
        }
    }
    if (!refused(s)) {
        pk_start(&pkt_out, SMFIC_EOH);
        broadcast(s, SMFIC_EOH, &pkt_out, NULL, &s->tx.milter);
    }
}

/* flush_body: the body octets gathered so far, as one SMFIC_BODY to each live milter. */
static void flush_body(struct smtp_session *s)
{
    if (s->milter_body_len == 0 || refused(s))
        return;
    pk_start(&pkt_out, SMFIC_BODY);
    pk_add(&pkt_out, s->milter_body, s->milter_body_len);
    s->milter_body_len = 0;
    broadcast(s, SMFIC_BODY, &pkt_out, NULL, &s->tx.milter);
}

void smtp_milter_body(struct smtp_session *s, const char *p, size_t n)
{
    while (n > 0 && !refused(s)) {
        size_t take = LIM_MILTER_CHUNK - s->milter_body_len;
        if (take > n)
            take = n;
        memcpy(s->milter_body + s->milter_body_len, p, take);
        s->milter_body_len += take;
        p += take;
        n -= take;
        if (s->milter_body_len == LIM_MILTER_CHUNK)
            flush_body(s);
    }
}

void smtp_milter_eom(struct smtp_session *s, struct hdrs *h)
{
    flush_body(s);
    if (refused(s))
        return;
    pk_start(&pkt_out, SMFIC_BODYEOB);
    for (size_t i = 0; i < s->nmilters && !refused(s); i++) {
        struct milter_conn *m = &s->milters[i];
        if (!live(m, SMFIC_BODYEOB))
            continue;
        ask(s, m, SMFIC_BODYEOB, &pkt_out, h, &s->tx.milter);
        m->in_msg = 0; /* the end of the message ends it for the milter, whatever it said */
        m->msg_done = 1;
    }
}

int smtp_milter_verdict(struct smtp_session *s)
{
    struct milter_verdict v = s->tx.milter;
    if (v.kind == MK_DISCARD)
        return -2;
    int rc = answer(s, &v);
    return rc == -2 ? 0 : rc;
}

void smtp_milter_abort(struct smtp_session *s)
{
    s->milter_body_len = 0;
    for (size_t i = 0; i < s->nmilters; i++) {
        struct milter_conn *m = &s->milters[i];
        if (m->fd < 0 || !m->in_msg)
            continue;
        m->in_msg = 0;
        pk_start(&pkt_out, SMFIC_ABORT); /* no reply (protocol) */
        struct milter_verdict v = {0};
        if (pk_send(m, &pkt_out, now_ms() + s->cfg.milter_command_timeout * 1000) < 0)
            fail(s, m, "connection closed", &v);
    }
}

void smtp_milter_quit(struct smtp_session *s)
{
    for (size_t i = 0; i < s->nmilters; i++) {
        struct milter_conn *m = &s->milters[i];
        if (m->fd < 0)
            continue;
        pk_start(&pkt_out, SMFIC_QUIT);
        pk_send(m, &pkt_out, now_ms() + 1000);
        close(m->fd);
        m->fd = -1;
    }
    s->nmilters = 0;
}
