/*
 * commands.c - the SMTP command table, the one dispatcher, the session state, and the small
 * commands (RFC 5321 4.1.1: EHLO, HELO, RSET, NOOP, QUIT, VRFY, HELP; RFC 3207 STARTTLS).
 *
 * Every ordering rule is in the table: the states a command may run in (and the reply in
 * each state where it may not), the flag that makes it refused once set (AUTH, STARTTLS),
 * require_auth, and whether this session offers it at all. The dispatcher alone matches
 * whole verbs case-insensitively (so "HELOX" is unknown, not HELO), checks arity and the
 * table, and runs the error tarpit: after LIM_ERRORS_SOFT errors every reply waits
 * error_delay_ms, at LIM_ERRORS_HARD the session ends with 421 (as Postfix). State and
 * flags change in smtp_enter only (OpenSMTPD's rule).
 */
#include "smtpd.h"
#include "log.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <errno.h>
#include <time.h>

enum { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };

/* tls_offered: STARTTLS may be used: a certificate is loaded and TLS is not on yet. */
static int tls_offered(const struct smtp_session *s)
{
    return s->tls_ready && !(s->flags & SMTP_F_TLS);
}

int smtp_auth_allowed(const struct smtp_session *s)
{
    return (s->flags & SMTP_F_TLS) || s->peer.loopback || s->cfg.allow_plaintext_auth;
}

/* The table below leaves out the fields a command has no rule for: they are zero (R_NONE,
 * no flag, NULL), which C guarantees; the warning about it is off for the table alone. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct command {
    const char *verb;
    smtp_handler *fn;
    int args;
    /* per state, SMTP_CONNECTED (CONN) to SMTP_RCPT: OK, or the reply that refuses it */
    enum smtp_reply_id in[SMTP_NSTATES];
    unsigned once;            /* refused once this flag is set ... */
    enum smtp_reply_id again; /* ... with this reply */
    int needs_auth;           /* refused (530) before AUTH when require_auth is set */
    int (*offered)(const struct smtp_session *s); /* NULL: always offered; else ... */
    enum smtp_reply_id unoffered; /* ... the reply when this session does not offer it */
} commands[] = {
#define OK    R_NONE        /* may run */
#define HELO  R_NEED_HELO   /* 503 5.5.1 Send EHLO or HELO first */
#define TWICE R_NESTED_MAIL /* 503 5.5.1 Sender already specified */
#define TX    R_IN_TX       /* 503 5.5.1 Not allowed during a mail transaction */
    // clang-format off
    /* verb      handler            args          CONN   GREETED           MAIL         RCPT */
    {"EHLO",     smtp_cmd_ehlo,     ARG_REQUIRED, {OK,   OK,               OK,          OK}},
    {"HELO",     smtp_cmd_helo,     ARG_REQUIRED, {OK,   OK,               OK,          OK}},
    {"MAIL",     smtp_cmd_mail,     ARG_REQUIRED, {HELO, OK,               TWICE,       TWICE},
     .needs_auth = 1},
    {"RCPT",     smtp_cmd_rcpt,     ARG_REQUIRED, {HELO, R_NEED_MAIL,      OK,          OK}},
    {"DATA",     smtp_cmd_data,     ARG_NONE,     {HELO, R_NEED_MAIL_DATA, R_NEED_RCPT, OK}},
    {"RSET",     smtp_cmd_rset,     ARG_NONE,     {OK,   OK,               OK,          OK}},
    {"NOOP",     smtp_cmd_noop,     ARG_OPTIONAL, {OK,   OK,               OK,          OK}},
    {"QUIT",     smtp_cmd_quit,     ARG_NONE,     {OK,   OK,               OK,          OK}},
    {"VRFY",     smtp_cmd_vrfy,     ARG_REQUIRED, {OK,   OK,               OK,          OK}},
    {"HELP",     smtp_cmd_help,     ARG_OPTIONAL, {OK,   OK,               OK,          OK}},
    /* RFC 4954 4: not during a transaction, not twice; PLAIN and LOGIN only where a
     * password may travel (smtp_auth_allowed), else 538 5.7.11. */
    {"AUTH",     smtp_cmd_auth,     ARG_REQUIRED, {HELO, OK,               TX,          TX},
     .once = SMTP_F_AUTH, .again = R_AUTH_ALREADY,
     .offered = smtp_auth_allowed, .unoffered = R_AUTH_TLS},
    /* RFC 3207 4: not during a transaction, not twice, only with a certificate. */
    {"STARTTLS", smtp_cmd_starttls, ARG_NONE,     {HELO, OK,               TX,          TX},
     .once = SMTP_F_TLS, .again = R_TLS_ALREADY,
     .offered = tls_offered, .unoffered = R_TLS_UNAVAILABLE},
// clang-format on
#undef OK
#undef HELO
#undef TWICE
#undef TX
};
#pragma GCC diagnostic pop

/* refusal: R_NONE when command c may run now with argument arg, else the reply refusing it
 * (checked in this order: arity, state, flags, require_auth, offered). */
static enum smtp_reply_id refusal(const struct smtp_session *s, const struct command *c,
                                  const char *arg)
{
    if (c->args == ARG_NONE && *arg)
        return R_NO_ARGS;
    if (c->args == ARG_REQUIRED && !*arg)
        return R_SYNTAX;
    if (c->in[s->state] != R_NONE)
        return c->in[s->state];
    if (s->flags & c->once)
        return c->again;
    if (c->needs_auth && s->cfg.require_auth && !(s->flags & SMTP_F_AUTH))
        return R_AUTH_REQUIRED; /* RFC 4954 6 */
    if (c->offered && !c->offered(s))
        return c->unoffered;
    return R_NONE;
}

/* tarpit: past LIM_ERRORS_SOFT errors, every reply waits (error_delay_ms, default 1 s). */
static void tarpit(const struct smtp_session *s)
{
    if (s->errors < LIM_ERRORS_SOFT || s->cfg.error_delay_ms <= 0)
        return;
    struct timespec ts = {s->cfg.error_delay_ms / 1000, (s->cfg.error_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* count_error: one more protocol error; at the hard limit, 421 and end the session. */
static void count_error(struct smtp_session *s)
{
    if (++s->errors >= LIM_ERRORS_HARD && !s->quit) {
        log_event(LOG_NOTICE, "too-many-errors", "errors=%d", s->errors);
        smtp_reply(s, R_TOO_MANY_ERRORS, s->cfg.hostname);
        smtp_end(s, END_ERRORS);
    }
}

void smtp_dispatch(struct smtp_session *s, char *line)
{
    tarpit(s);
    size_t vlen = strcspn(line, " ");
    char *arg = line + vlen;
    while (*arg == ' ')
        arg++;
    const struct command *c = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strlen(commands[i].verb) == vlen && strncasecmp(commands[i].verb, line, vlen) == 0)
            c = &commands[i];
    enum smtp_reply_id no = c ? refusal(s, c, arg) : R_UNKNOWN;
    int rc = no != R_NONE ? smtp_reply(s, no) : c->fn(s, arg);
    if (rc < 0)
        count_error(s);
}

void smtp_dispatch_error(struct smtp_session *s, enum smtp_reply_id id)
{
    tarpit(s);
    smtp_reply(s, id);
    count_error(s);
}

/* greet: HELO and EHLO both (re)start the session state: RFC 5321 4.1.4. */
static int greet(struct smtp_session *s, char *arg, int esmtp)
{
    size_t n = strcspn(arg, " ");
    if (n > LIM_HELO)
        return smtp_reply(s, R_SYNTAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)arg[i] <= 0x20 || (unsigned char)arg[i] >= 0x7f)
            return smtp_reply(s, R_SYNTAX);
    smtp_enter(s, SMTP_GREETED, s->flags);
    memcpy(s->helo, arg, n);
    s->helo[n] = '\0';
    s->esmtp = esmtp;
    int rc = smtp_milter_helo(s);
    if (rc != -2) { /* refused by a milter: the client is not greeted */
        smtp_enter(s, SMTP_CONNECTED, s->flags);
        return rc == 0 ? -1 : rc;
    }
    return 0;
}

/* RFC 5321 4.1.1.1: a multi-line reply naming the extensions (reply.c lists them). */
int smtp_cmd_ehlo(struct smtp_session *s, char *arg)
{
    if (greet(s, arg, 1) < 0)
        return -1;
    smtp_reply(s, R_EHLO_FIRST, s->cfg.hostname, s->helo);
    smtp_reply(s, R_EHLO_PIPELINING);
    smtp_reply(s, R_EHLO_SIZE, s->cfg.message_size_limit);
    smtp_reply(s, R_EHLO_8BITMIME);
    smtp_reply(s, R_EHLO_ENHANCEDSTATUSCODES);
    if (tls_offered(s))
        smtp_reply(s, R_EHLO_STARTTLS);
    if (smtp_auth_allowed(s))
        smtp_reply(s, R_EHLO_AUTH);
    return smtp_reply(s, R_EHLO_LAST);
}

int smtp_cmd_helo(struct smtp_session *s, char *arg)
{
    if (greet(s, arg, 0) < 0)
        return -1;
    return smtp_reply(s, R_HELO, s->cfg.hostname);
}

/* RFC 3207 4.2: after the handshake the session starts afresh: the client must EHLO again
 * and whatever it pipelined after STARTTLS in clear was discarded (tls_start). A failed
 * handshake leaves the stream unusable: the session ends. */
int smtp_cmd_starttls(struct smtp_session *s, char *arg)
{
    (void)arg;
    smtp_reply(s, R_TLS_GO);
    if (tls_start(&s->io, (int)(s->cfg.smtp_timeout * 1000)) < 0) {
        smtp_end(s, END_TLS_FAILED);
        return 0;
    }
    smtp_enter(s, SMTP_CONNECTED, SMTP_F_TLS);
    return 0;
}

int smtp_cmd_rset(struct smtp_session *s, char *arg)
{
    (void)arg;
    smtp_tx_reset(s);
    return smtp_reply(s, R_DONE);
}

int smtp_cmd_noop(struct smtp_session *s, char *arg)
{
    (void)arg;
    return smtp_reply(s, R_DONE);
}

int smtp_cmd_quit(struct smtp_session *s, char *arg)
{
    (void)arg;
    smtp_end(s, END_QUIT);
    return smtp_reply(s, R_BYE, s->cfg.hostname);
}

/* RFC 5321 3.5.3: 252 neither confirms nor denies; account names are not revealed. */
int smtp_cmd_vrfy(struct smtp_session *s, char *arg)
{
    (void)arg;
    return smtp_reply(s, R_VRFY);
}

/* RFC 5321 4.1.1.8: the commands this session offers now, in table order (no STARTTLS
 * without a certificate or once TLS is on; no AUTH where it would be refused). */
int smtp_cmd_help(struct smtp_session *s, char *arg)
{
    (void)arg;
    char list[128];
    size_t n = 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const struct command *c = &commands[i];
        if ((s->flags & c->once) || (c->offered && !c->offered(s)))
            continue;
        size_t len = strlen(c->verb);
        if (n + len + 2 > sizeof list)
            break;
        if (n)
            list[n++] = ' ';
        memcpy(list + n, c->verb, len);
        n += len;
    }
    list[n] = '\0';
    return smtp_reply(s, R_HELP, list);
}
