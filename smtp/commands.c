/*
 * commands.c - the SMTP command table, the one dispatcher, and the small commands
 * (RFC 5321 4.1.1: EHLO, HELO, RSET, NOOP, QUIT, VRFY, HELP).
 *
 * The dispatcher alone matches whole verbs case-insensitively (so "HELOX" is unknown, not
 * HELO), checks order and arity, and runs the error tarpit: after LIM_ERRORS_SOFT errors
 * every reply waits a second, at LIM_ERRORS_HARD the session ends with 421 (as Postfix).
 */
#include "smtpd.h"
#include "log.h"
#include "tls.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <errno.h>
#include <time.h>

enum { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };
enum { NEED_NOTHING = 0, NEED_HELO = 1, NEED_MAIL = 2, NEED_RCPT = 4 };

static const struct command {
    const char *verb;
    smtp_handler *fn;
    int args;
    int needs;
} commands[] = {
    {"EHLO", smtp_cmd_ehlo, ARG_REQUIRED, NEED_NOTHING},
    {"HELO", smtp_cmd_helo, ARG_REQUIRED, NEED_NOTHING},
    {"MAIL", smtp_cmd_mail, ARG_REQUIRED, NEED_HELO},
    {"RCPT", smtp_cmd_rcpt, ARG_REQUIRED, NEED_HELO | NEED_MAIL},
    {"DATA", smtp_cmd_data, ARG_NONE, NEED_HELO | NEED_MAIL | NEED_RCPT},
    {"RSET", smtp_cmd_rset, ARG_NONE, NEED_NOTHING},
    {"NOOP", smtp_cmd_noop, ARG_OPTIONAL, NEED_NOTHING},
    {"QUIT", smtp_cmd_quit, ARG_NONE, NEED_NOTHING},
    {"VRFY", smtp_cmd_vrfy, ARG_REQUIRED, NEED_NOTHING},
    {"HELP", smtp_cmd_help, ARG_OPTIONAL, NEED_NOTHING},
    {"AUTH", smtp_cmd_auth, ARG_REQUIRED, NEED_HELO},
    {"STARTTLS", smtp_cmd_starttls, ARG_NONE, NEED_HELO},
};

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
        s->quit = 1;
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
    int rc;
    if (!c)
        rc = smtp_reply(s, R_UNKNOWN);
    else if (c->args == ARG_NONE && *arg)
        rc = smtp_reply(s, R_NO_ARGS);
    else if (c->args == ARG_REQUIRED && !*arg)
        rc = smtp_reply(s, R_SYNTAX);
    else if ((c->needs & NEED_HELO) && !s->helo[0])
        rc = smtp_reply(s, R_NEED_HELO);
    else if ((c->needs & NEED_MAIL) && !s->tx.active)
        rc = smtp_reply(s, R_NEED_MAIL);
    else if ((c->needs & NEED_RCPT) && s->tx.nrcpts == 0)
        rc = smtp_reply(s, R_NEED_RCPT);
    else
        rc = c->fn(s, arg);
    if (rc < 0)
        count_error(s);
}

void smtp_dispatch_error(struct smtp_session *s, enum smtp_reply_id id)
{
    tarpit(s);
    smtp_reply(s, id);
    count_error(s);
}

void smtp_tx_reset(struct smtp_session *s)
{
    free(s->tx.rcpts);
    free(s->tx.accounts);
    memset(&s->tx, 0, sizeof s->tx);
}

int smtp_need_db(struct smtp_session *s)
{
    if (db_connect(&s->db) == DB_OK)
        return 0;
    log_event(LOG_ERR, "db-unreachable", "error=\"%s\"", s->db.error);
    smtp_reply(s, R_DB_DOWN, s->cfg.hostname);
    s->quit = 1;
    return -1;
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
    memcpy(s->helo, arg, n);
    s->helo[n] = '\0';
    s->esmtp = esmtp;
    smtp_tx_reset(s);
    return 0;
}

int smtp_cmd_ehlo(struct smtp_session *s, char *arg)
{
    if (greet(s, arg, 1) < 0)
        return -1;
    /* RFC 5321 4.1.1.1 multi-line reply; RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152
     * 8BITMIME, RFC 2034 ENHANCEDSTATUSCODES, RFC 4954 AUTH (only where it may be used). */
    io_printf(&s->io, "250-%s greets %s\r\n", s->cfg.hostname, s->helo);
    io_puts(&s->io, "250-PIPELINING\r\n");
    io_printf(&s->io, "250-SIZE %ld\r\n", s->cfg.message_size_limit);
    io_puts(&s->io, "250-8BITMIME\r\n");
    io_puts(&s->io, "250-ENHANCEDSTATUSCODES\r\n");
    if (s->tls_ready && !tls_active(&s->io))
        io_puts(&s->io, "250-STARTTLS\r\n");
    if (smtp_auth_allowed(s))
        io_puts(&s->io, "250-AUTH PLAIN LOGIN\r\n");
    io_puts(&s->io, "250 HELP\r\n");
    return 0;
}

int smtp_auth_allowed(const struct smtp_session *s)
{
    return tls_active(&s->io) || s->peer.loopback || s->cfg.allow_plaintext_auth;
}

/* RFC 3207 4.2: after the handshake the session starts afresh: the client must EHLO again
 * and whatever it pipelined after STARTTLS in clear was discarded (tls_start). A failed
 * handshake leaves the stream unusable: the session ends. */
int smtp_cmd_starttls(struct smtp_session *s, char *arg)
{
    (void)arg;
    if (tls_active(&s->io))
        return smtp_reply(s, R_TLS_ALREADY);
    if (!s->tls_ready)
        return smtp_reply(s, R_TLS_UNAVAILABLE);
    if (s->tx.active)
        return smtp_reply(s, R_IN_TX);
    smtp_reply(s, R_TLS_GO);
    if (tls_start(&s->io, (int)(s->cfg.smtp_timeout * 1000)) < 0) {
        s->quit = 1;
        s->end_reason = "tls-failed";
        return 0;
    }
    smtp_tx_reset(s);
    s->helo[0] = '\0';
    s->esmtp = 0;
    s->auth_id[0] = '\0';
    s->auth_user[0] = '\0';
    return 0;
}

int smtp_cmd_helo(struct smtp_session *s, char *arg)
{
    if (greet(s, arg, 0) < 0)
        return -1;
    io_printf(&s->io, "250 %s\r\n", s->cfg.hostname);
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
    s->quit = 1;
    return smtp_reply(s, R_BYE, s->cfg.hostname);
}

/* RFC 5321 3.5.3: 252 neither confirms nor denies; account names are not revealed. */
int smtp_cmd_vrfy(struct smtp_session *s, char *arg)
{
    (void)arg;
    return smtp_reply(s, R_VRFY);
}

int smtp_cmd_help(struct smtp_session *s, char *arg)
{
    (void)arg;
    return smtp_reply(s, R_HELP);
}
