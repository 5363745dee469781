/*
 * login.c - the AUTHORIZATION state: USER/PASS (RFC 1939 7) and AUTH PLAIN (RFC 5034,
 * RFC 4616), then taking the maildrop (RFC 1939 8: exclusive access).
 *
 * USER answers +OK whether or not the account exists; a failure is "-ERR [AUTH]" after the
 * same delay for unknown users and wrong passwords (shared/auth.c); the third failure
 * closes the session. Too many failed logins from a client, over every connection and
 * host, are refused with "-ERR [AUTH] Too many failed logins" (shared/auth.h); a refusal
 * counts as a failure of the session. APOP is not offered: passwords are stored as hashes only.
 * A database problem is "-ERR [SYS/TEMP]" (RFC 3206), never a failed login.
 */
#include "pop3d.h"
#include "auth.h"
#include "base64.h"
#include "log.h"
#include "sql.h"
#include "tls.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

int pop3_plaintext_ok(const struct pop3_session *s)
{
    return tls_active(&s->io) || s->peer.loopback || s->cfg.allow_plaintext_auth;
}

/* RFC 2595 4: STLS in the AUTHORIZATION state; plaintext pipelined after it is discarded
 * (tls_start), and the client starts over (a USER given before is forgotten). A failed
 * handshake leaves the stream unusable: the session ends. */
int pop3_cmd_stls(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (tls_active(&s->io))
        return pop3_reply(s, R_TLS_ACTIVE);
    if (!s->tls_ready)
        return pop3_reply(s, R_TLS_UNAVAILABLE);
    pop3_reply(s, R_STLS_GO);
    if (tls_start(&s->io, (int)(s->cfg.pop3_timeout * 1000)) < 0) {
        s->quit = 1;
        s->end_reason = "tls-failed";
        return 0;
    }
    s->user[0] = '\0';
    return 0;
}

static int refuse_plaintext(struct pop3_session *s)
{
    return pop3_reply(s, R_PLAINTEXT_REFUSED);
}

int pop3_cmd_user(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    if (!pop3_plaintext_ok(s))
        return refuse_plaintext(s);
    if (strlen(argv[0]) > LIM_PATH)
        return pop3_reply(s, R_USER_TOO_LONG);
    snprintf(s->user, sizeof s->user, "%s", argv[0]);
    return pop3_reply(s, R_SEND_PASS);
}

/* login: after a good password: open the session transaction, take the mailbox lock and
 * read the maildrop's totals (RFC 1939 8). Replies itself (+OK, -ERR [IN-USE], -ERR
 * [SYS/TEMP]: then the session stays in the AUTHORIZATION state). */
static int login(struct pop3_session *s);

/* check: verify user/password; on success take the mailbox (pop3_login). */
static int check(struct pop3_session *s, const char *user, const char *password)
{
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, user);
    if (db_connect(&s->db) != DB_OK) {
        log_event(LOG_ERR, "db-unreachable", "error=\"%s\"", s->db.error);
        return pop3_reply(s, R_DB_DOWN);
    }
    enum auth_result r = auth_check(&s->db, user, password, s->account, sizeof s->account);
    if (r == AUTH_TEMP) {
        log_event(LOG_WARNING, "auth", "user=%s result=tempfail error=\"%s\"", clean, s->db.error);
        return pop3_reply(s, R_AUTH_TEMP);
    }
    if (r == AUTH_FAIL || r == AUTH_REFUSED) {
        s->auth_failures++;
        log_event(LOG_NOTICE, "auth", "user=%s result=%s failures=%d", clean,
                  r == AUTH_FAIL ? "fail" : "refused", s->auth_failures);
        if (s->auth_failures >= LIM_AUTH_FAILURES)
            s->quit = 1;
        return pop3_reply(s, r == AUTH_FAIL ? R_AUTH_FAILED : R_AUTH_REFUSED);
    }
    if (user != s->user)
        snprintf(s->user, sizeof s->user, "%s", user);
    return login(s);
}

int pop3_cmd_pass(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    if (!pop3_plaintext_ok(s))
        return refuse_plaintext(s);
    if (!s->user[0])
        return pop3_reply(s, R_USER_FIRST);
    int rc = check(s, s->user, argv[0]);
    auth_wipe(argv[0], strlen(argv[0]));
    if (rc < 0)
        s->user[0] = '\0';
    return rc;
}

/* The longest decoded PLAIN message from a line of LIM_POP3_LINE octets... but RFC 5034 4
 * lets the continuation be longer: AUTH responses may be up to LIM_SMTP_AUTH_LINE. */
#define SASL_LINE LIM_SMTP_AUTH_LINE

int pop3_cmd_auth(struct pop3_session *s, int argc, char **argv)
{
    if (strcasecmp(argv[0], "PLAIN") != 0)
        return pop3_reply(s, R_SASL_MECH);
    if (!pop3_plaintext_ok(s))
        return refuse_plaintext(s);
    static char line[SASL_LINE + 1];
    static unsigned char plain[SASL_LINE / 4 * 3 + 2];
    const char *b64;
    if (argc == 2) {
        b64 = argv[1];
    } else {
        pop3_reply(s, R_SASL_GO);
        size_t n;
        enum io_status st = io_getline(&s->io, line, SASL_LINE, &n);
        if (st == IO_TOOLONG) {
            st = io_skipline(&s->io);
            if (st != IO_LINE) {
                s->quit = 1;
                return -1;
            }
            return pop3_reply(s, R_SASL_LINE_TOO_LONG);
        }
        if (st != IO_LINE) {
            s->quit = 1;
            return -1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "*") == 0)
            return pop3_reply(s, R_SASL_CANCELLED);
        b64 = line;
    }
    long n = strcmp(b64, "=") == 0 ? 0 : base64_decode(b64, strlen(b64), plain);
    int rc;
    if (n < 0) {
        rc = pop3_reply(s, R_SASL_BASE64);
    } else {
        /* authzid NUL authcid NUL passwd; an authzid must name the same user. */
        const unsigned char *z1 = memchr(plain, '\0', (size_t)n);
        const unsigned char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(plain + n - z1 - 1)) : NULL;
        const char *user = z1 ? (const char *)z1 + 1 : "";
        int ok = z2 && (z1 == plain || strcmp((const char *)plain, user) == 0) &&
                 strlen(user) <= LIM_PATH;
        /* Malformed: checked as an unknown user, for the same delay and answer. */
        rc = check(s, ok ? user : "", ok ? (const char *)z2 + 1 : "");
    }
    auth_wipe(plain, sizeof plain);
    auth_wipe(line, sizeof line);
    return rc;
}

static int login(struct pop3_session *s)
{
    const char *vals[1] = {s->account};
    PGresult *res = NULL;
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, s->user);
    enum db_status st = db_exec(&s->db, pop3_sql(SQL_BEGIN), 0, NULL, NULL, NULL, NULL);
    if (st == DB_OK)
        st = db_exec(&s->db, pop3_sql(SQL_OPEN), 1, vals, NULL, NULL, &res);
    if (st == DB_OK && strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        PQclear(res);
        db_rollback(&s->db, pop3_sql(SQL_ROLLBACK));
        log_event(LOG_NOTICE, "login-refused", "user=%s reason=in-use", clean);
        s->account[0] = '\0';
        return pop3_reply(s, R_IN_USE);
    }
    if (st != DB_OK) { /* DB_NOTFOUND too: the account vanished since the password check */
        PQclear(res);
        db_rollback(&s->db, pop3_sql(SQL_ROLLBACK));
        log_event(LOG_WARNING, "login-tempfail", "user=%s error=\"%s\"", clean,
                  st == DB_NOTFOUND ? "account removed" : s->db.error);
        s->account[0] = '\0';
        return pop3_reply(s, R_OPEN_TEMP);
    }
    s->nmsgs = (size_t)strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    s->octets = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    s->last_id = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
    s->state = ST_TRANSACTION;
    s->temp_failure = 0; /* an earlier [SYS/TEMP] at login is behind us */
    log_event(LOG_INFO, "login", "user=%s messages=%zu octets=%lld", clean, s->nmsgs, s->octets);
    return pop3_reply(s, R_LOGGED_IN, s->nmsgs, s->octets);
}
