/*
 * authcmd.c - AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616 PLAIN; LOGIN as deployed),
 * each with or without an initial response.
 *
 * AUTH is accepted after HELO as well as EHLO (the original project's clients did that),
 * never during a transaction (RFC 4954 4) and never twice. Both mechanisms send the
 * password in clear, so AUTH is offered only over TLS, to loopback peers or when
 * allow_plaintext_auth is set; elsewhere 538 5.7.11 (smtp_auth_allowed).
 * "*" cancels (501). Every failure answers 535 5.7.8 after the same delay whether or not
 * the account exists (shared/auth.c); the third ends the session with 421. A client that
 * failed too often over all connections and hosts is refused with 454 4.7.0 (RFC 4954 6)
 * without its password being checked (shared/auth.h); that counts as a failure too. A NUL inside a
 * decoded user name or password is such a failure in both mechanisms (PLAIN uses NUL as
 * its separator; in LOGIN it would cut the string short and check a different one).
 * Credentials are wiped from memory as soon as they have been checked and never logged.
 */
#include "smtpd.h"
#include "auth.h"
#include "base64.h"
#include "log.h"

#include <string.h>
#include <strings.h>
#include <syslog.h>

struct cred {
    char line[LIM_SMTP_AUTH_LINE + 1];
    unsigned char user[LIM_SMTP_CRED], pass[LIM_SMTP_CRED], plain[LIM_SMTP_CRED];
};

/* ask: send a 334 challenge and read the client's answer into c->line (CRLF stripped).
 * 0 on an answer, -1 after replying (cancelled, too long), -2 when the session must end. */
static int ask(struct smtp_session *s, enum smtp_reply_id challenge, struct cred *c)
{
    smtp_reply(s, challenge);
    size_t n;
    enum io_status st = io_getline(&s->io, c->line, LIM_SMTP_AUTH_LINE, &n);
    if (st == IO_TOOLONG) {
        if (io_skipline(&s->io) != IO_LINE) {
            smtp_end(s, END_EOF);
            return -2;
        }
        smtp_reply(s, R_AUTH_LINE);
        return -1;
    }
    if (st == IO_TIMEOUT) {
        smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
        smtp_end(s, END_TIMEOUT);
        return -2;
    }
    if (st != IO_LINE) {
        smtp_end(s, END_EOF);
        return -2;
    }
    c->line[strcspn(c->line, "\r\n")] = '\0';
    if (strcmp(c->line, "*") == 0) {
        smtp_reply(s, R_AUTH_CANCEL);
        return -1;
    }
    return 0;
}

/* decode: base64 text into out; "=" is the empty initial response (RFC 4954 4). */
static long decode(const char *text, unsigned char *out)
{
    if (strcmp(text, "=") == 0) {
        out[0] = '\0';
        return 0;
    }
    return base64_decode(text, strlen(text), out);
}

/* login_decode: one LOGIN answer into out as a C string. -1 for bad base64; 0 with
 * *clean = 0 when it holds a NUL (it would be checked cut short, so it is a failure). */
static int login_decode(const char *text, unsigned char *out, int *clean)
{
    long n = decode(text, out);
    if (n < 0)
        return -1;
    out[n] = '\0';
    if (memchr(out, '\0', (size_t)n))
        *clean = 0;
    return 0;
}

/* plain: split "authzid NUL authcid NUL passwd" (RFC 4616 2). -1 when malformed. */
static int plain(struct cred *c, long n)
{
    const unsigned char *p = c->plain, *end = c->plain + n;
    const unsigned char *z1 = memchr(p, '\0', (size_t)n);
    if (!z1)
        return -1;
    const unsigned char *z2 = memchr(z1 + 1, '\0', (size_t)(end - z1 - 1));
    if (!z2 || memchr(z2 + 1, '\0', (size_t)(end - z2 - 1)))
        return -1;
    size_t zlen = (size_t)(z1 - p), ulen = (size_t)(z2 - z1 - 1), plen = (size_t)(end - z2 - 1);
    /* We do not let one user act for another: an authzid must name the same user. */
    if (zlen && (zlen != ulen || memcmp(p, z1 + 1, ulen) != 0))
        return -1;
    memcpy(c->user, z1 + 1, ulen);
    c->user[ulen] = '\0';
    memcpy(c->pass, z2 + 1, plen);
    c->pass[plen] = '\0';
    return 0;
}

static int finish(struct smtp_session *s, struct cred *c, int wellformed)
{
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, (const char *)c->user);
    /* A malformed exchange is checked as an unknown user: the same delay, the same reply. */
    if (!wellformed || strlen((char *)c->user) > LIM_PATH)
        c->user[0] = '\0';
    if (smtp_need_db(s) < 0)
        return -1;
    enum auth_result r = auth_check(&s->db, (const char *)c->user, (const char *)c->pass,
                                    s->auth_id, sizeof s->auth_id);
    if (r == AUTH_OK) {
        snprintf(s->auth_user, sizeof s->auth_user, "%s", (const char *)c->user);
        smtp_enter(s, s->state, s->flags | SMTP_F_AUTH);
        log_event(LOG_INFO, "auth", "user=%s result=ok", clean);
        return smtp_reply(s, R_AUTH_OK);
    }
    if (r == AUTH_TEMP) {
        log_event(LOG_WARNING, "auth", "user=%s result=tempfail error=\"%s\"", clean, s->db.error);
        return smtp_reply(s, R_AUTH_TEMP);
    }
    s->auth_failures++;
    log_event(LOG_NOTICE, "auth", "user=%s result=%s failures=%d", clean,
              r == AUTH_FAIL ? "fail" : "refused", s->auth_failures);
    if (s->auth_failures >= LIM_AUTH_FAILURES) {
        smtp_reply(s, R_AUTH_TOO_MANY, s->cfg.hostname);
        smtp_end(s, END_AUTH_FAILURES);
        return -1;
    }
    return smtp_reply(s, r == AUTH_FAIL ? R_AUTH_FAILED : R_AUTH_TEMP);
}

static int run(struct smtp_session *s, char *mech, char *initial, struct cred *c)
{
    long n;
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (!*initial) {
            if (ask(s, R_AUTH_ASK_PLAIN, c) < 0)
                return -1;
            initial = c->line;
        }
        if ((n = decode(initial, c->plain)) < 0)
            return smtp_reply(s, R_AUTH_BAD64);
        return finish(s, c, plain(c, n) == 0);
    }
    if (strcasecmp(mech, "LOGIN") == 0) {
        if (!*initial) {
            if (ask(s, R_AUTH_ASK_USER, c) < 0)
                return -1;
            initial = c->line;
        }
        int clean = 1;
        if (login_decode(initial, c->user, &clean) < 0)
            return smtp_reply(s, R_AUTH_BAD64);
        if (ask(s, R_AUTH_ASK_PASS, c) < 0)
            return -1;
        if (login_decode(c->line, c->pass, &clean) < 0)
            return smtp_reply(s, R_AUTH_BAD64);
        return finish(s, c, clean);
    }
    return smtp_reply(s, R_AUTH_MECH);
}

/* When AUTH may be used at all is in the command table (commands.c). */
int smtp_cmd_auth(struct smtp_session *s, char *arg)
{
    char *mech = arg, *initial = arg + strcspn(arg, " ");
    if (*initial)
        *initial++ = '\0';
    /* The mechanism as milters see it ({auth_type}); only a successful AUTH shows it. */
    snprintf(s->auth_mech, sizeof s->auth_mech, "%s",
             strcasecmp(mech, "PLAIN") == 0 ? "PLAIN" : "LOGIN");
    while (*initial == ' ')
        initial++;
    static struct cred c; /* ~45 KiB: static rather than on the stack; wiped after use */
    int rc = run(s, mech, initial, &c);
    auth_wipe(&c, sizeof c);
    auth_wipe(initial, strlen(initial));
    return rc;
}
