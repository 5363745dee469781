/*
 * envelope.c - MAIL and RCPT (RFC 5321 4.1.1.2-3, RFC 1870 SIZE, RFC 6152 BODY).
 *
 * Each command is checked first (syntax, parameters, limits) and only then proceeds to the
 * database. Lookups are tri-state: a database failure is 451 4.3.0, never a 550, so that an
 * outage makes senders retry instead of bouncing (Postfix's rule).
 * Recipient policy: accounts and aliases of local domains; plus-addressing; a bare
 * "postmaster" (RFC 5321 4.5.1); unknown local users get 550 5.1.1 unless the sender is
 * authenticated, in which case they are accepted and bounced to the sender after DATA (the
 * original project's behaviour, kept on purpose). Other domains: accepted from an
 * authenticated sender within its outbound limit (450 4.7.1 beyond it), queued with the
 * message for pgmail-relay; relay denied (554 5.7.1) to everyone else: no open relay.
 */
#include "smtpd.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

/* sender_owned: DB_OK when the authenticated user may use addr as MAIL FROM. */
static enum db_status sender_owned(struct smtp_session *s, const char *addr)
{
    char key[LIM_PATH + 1];
    const char *domain;
    smtp_lookup_key(s, addr, 1, key, sizeof key, &domain);
    const char *vals[2] = {s->auth_id, key};
    enum db_status st = db_exec(&s->db, smtp_sql(SQL_SENDER_OWNED), 2, vals, NULL, NULL, NULL);
    if (st == DB_NOTFOUND && strcmp(key, addr) != 0) {
        smtp_lookup_key(s, addr, 0, key, sizeof key, &domain);
        st = db_exec(&s->db, smtp_sql(SQL_SENDER_OWNED), 2, vals, NULL, NULL, NULL);
    }
    return st;
}

/* bad_param: 555 naming the parameter (RFC 5321 4.1.1.11), made printable and short. */
static int bad_param(struct smtp_session *s, const char *key)
{
    char clean[32];
    return smtp_reply(s, R_BAD_PARAM, log_clean(clean, sizeof clean, key));
}

/* Order (not nested, require_auth) is checked by the command table (commands.c). */
int smtp_cmd_mail(struct smtp_session *s, char *arg)
{
    if (strncasecmp(arg, "FROM:", 5) != 0)
        return smtp_reply(s, R_SYNTAX);
    char sender[LIM_PATH + 1], *params, *key, *value;
    if (smtp_parse_path(arg + 5, 1, sender, sizeof sender, &params) < 0)
        return smtp_reply(s, R_BAD_SENDER);
    long size = 0;
    while (smtp_param_next(&params, &key, &value)) {
        if (s->esmtp && strcasecmp(key, "SIZE") == 0) {
            char *end;
            errno = 0;
            size = strtol(value, &end, 10);
            if (errno == ERANGE) /* larger than any limit we could have */
                return smtp_reply(s, R_SIZE);
            if (end == value || *end || size < 0)
                return smtp_reply(s, R_SYNTAX);
        } else if (s->esmtp && strcasecmp(key, "BODY") == 0) {
            if (strcasecmp(value, "7BIT") != 0 && strcasecmp(value, "8BITMIME") != 0)
                return smtp_reply(s, R_SYNTAX);
        } else if (s->esmtp && strcasecmp(key, "AUTH") == 0) {
            /* RFC 4954 5: AUTH=<mailbox> may be given and ignored. */
        } else {
            return bad_param(s, key);
        }
    }
    if (size > s->cfg.message_size_limit) /* RFC 1870 6.2 */
        return smtp_reply(s, R_SIZE);
    if ((s->flags & SMTP_F_AUTH) && s->cfg.sender_login_match && sender[0] &&
        strcmp(sender, s->owned_sender) != 0) {
        if (smtp_need_db(s) < 0)
            return -1;
        enum db_status st = sender_owned(s, sender);
        if (db_failed(st))
            return smtp_reply(s, R_TEMP);
        if (st == DB_NOTFOUND) {
            log_event(LOG_NOTICE, "sender-rejected", "user=%s reason=not-owned", s->auth_user);
            return smtp_reply(s, R_SENDER_NOT_OWNED, sender, s->auth_user);
        }
        memcpy(s->owned_sender, sender, strlen(sender) + 1);
    }
    smtp_enter(s, SMTP_MAIL, s->flags);
    s->tx.declared_size = size;
    memcpy(s->tx.sender, sender, strlen(sender) + 1);
    int rc = smtp_milter_mail(s);
    if (rc != -2) { /* refused by a milter: no transaction */
        smtp_tx_reset(s);
        return rc;
    }
    return smtp_reply(s, R_SENDER_OK);
}

/* add_rcpt: append an accepted recipient and its accounts (res; NULL for an unknown or a
 * remote one); -1 when memory ran out. */
static int add_rcpt(struct smtp_tx *tx, const char *addr, PGresult *res, int remote)
{
    if (tx->nrcpts == tx->rcpt_cap) {
        size_t cap = tx->rcpt_cap ? tx->rcpt_cap * 2 : 8;
        void *p = realloc(tx->rcpts, cap * sizeof *tx->rcpts);
        if (!p)
            return -1;
        tx->rcpts = p;
        tx->rcpt_cap = cap;
    }
    size_t rows = res ? (size_t)PQntuples(res) : 0;
    if (smtp_accounts_reserve(tx, rows) < 0)
        return -1;
    if (rows) { /* named_by follows the accounts' capacity */
        void *p = realloc(tx->named_by, tx->account_cap * sizeof *tx->named_by);
        if (!p)
            return -1;
        tx->named_by = p;
    }
    struct smtp_rcpt *r = &tx->rcpts[tx->nrcpts++];
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->naccounts = rows;
    r->remote = remote;
    for (size_t i = 0; i < rows; i++) {
        size_t before = tx->naccounts;
        smtp_accounts_add(tx, strtoll(PQgetvalue(res, (int)i, 1), NULL, 10));
        if (tx->naccounts > before)
            tx->named_by[before] = tx->nrcpts - 1;
    }
    if (remote)
        tx->nremote++;
    else if (rows == 0)
        tx->nbounces++;
    return 0;
}

/* remote_rcpt: RCPT to a domain that is not ours from an authenticated sender (res: the
 * lookup's row for it, with the account's outbound room for the rolling hour: migrations/007
 * and 009): accepted for pgmail-relay while the room (counting the remote recipients
 * already accepted in this transaction) allows one more. The same address twice in one
 * transaction is accepted once and queued once. */
static int remote_rcpt(struct smtp_session *s, const char *rcpt, const char *clean,
                       const PGresult *res)
{
    for (size_t i = 0; i < s->tx.nrcpts; i++)
        if (s->tx.rcpts[i].remote && strcmp(s->tx.rcpts[i].addr, rcpt) == 0)
            return smtp_reply(s, R_RCPT_OK);
    if (!PQgetisnull(res, 0, 7) &&
        strtoll(PQgetvalue(res, 0, 7), NULL, 10) <= (long long)s->tx.nremote) {
        log_event(LOG_NOTICE, "rcpt-rejected", "rcpt=%s reason=outbound-limit user=%s", clean,
                  s->auth_user);
        /* Flow control, as 452 4.5.3 for too many recipients: not a client error, so it
         * does not count toward the tarpit. */
        smtp_reply(s, R_OUTBOUND_LIMIT, rcpt);
        return 0;
    }
    int rc = smtp_milter_rcpt(s, rcpt);
    if (rc != -2)
        return rc;
    if (add_rcpt(&s->tx, rcpt, NULL, 1) < 0)
        return smtp_reply(s, R_NO_MEMORY);
    log_event(LOG_INFO, "rcpt-accepted", "rcpt=%s remote=yes", clean);
    smtp_enter(s, SMTP_RCPT, s->flags);
    return smtp_reply(s, R_RCPT_OK);
}

/* over_quota: 1 when an account of the lookup is full, or would be by the SIZE= given. */
static int over_quota(PGresult *res, long size)
{
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 2))
            continue;
        long long quota = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        long long used = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        if (used + (size > 0 ? size : 1) > quota)
            return 1;
    }
    return 0;
}

/* lookup: find the accounts of address key in domain; stores the result (rows of target
 * accounts, one row with a NULL account for an unknown user of a local domain, or, for an
 * authenticated session, one row with a NULL domain for a domain that is not ours). The
 * first lookup of a transaction also draws the id its message will be stored under. */
static enum db_status lookup(struct smtp_session *s, const char *key, const char *domain,
                             PGresult **res)
{
    char limit[24];
    snprintf(limit, sizeof limit, "%ld", s->cfg.max_outbound_per_hour);
    const char *vals[5] = {key, domain, s->tx.message_id[0] ? "false" : "true",
                           s->auth_id[0] ? s->auth_id : NULL, s->auth_id[0] ? limit : NULL};
    enum db_status st = db_exec(&s->db, smtp_sql(SQL_RCPT_LOOKUP), 5, vals, NULL, NULL, res);
    if (st != DB_OK)
        return st;
    snprintf(s->db_timeout, sizeof s->db_timeout, "%s", PQgetvalue(*res, 0, 4));
    if (!s->tx.message_id[0] && !PQgetisnull(*res, 0, 5))
        snprintf(s->tx.message_id, sizeof s->tx.message_id, "%s", PQgetvalue(*res, 0, 5));
    return st;
}

int smtp_cmd_rcpt(struct smtp_session *s, char *arg)
{
    if (strncasecmp(arg, "TO:", 3) != 0)
        return smtp_reply(s, R_SYNTAX);
    char rcpt[LIM_PATH + 1], *params, *key, *value;
    char *p = arg + 3;
    while (*p == ' ')
        p++;
    if (strncasecmp(p, "<postmaster>", 12) == 0 && (p[12] == '\0' || p[12] == ' ')) {
        /* RFC 5321 4.5.1: "postmaster" without a domain must be accepted. */
        snprintf(rcpt, sizeof rcpt, "postmaster");
        params = p + 12;
    } else if (smtp_parse_path(p, 0, rcpt, sizeof rcpt, &params) < 0) {
        return smtp_reply(s, R_BAD_ADDRESS);
    }
    if (smtp_param_next(&params, &key, &value))
        return bad_param(s, key);
    if (s->tx.nrcpts >= (size_t)s->cfg.max_recipients) {
        /* RFC 5321 4.5.3.1.10: flow control, not a client error: the client sends the
         * rest in another transaction, so it does not count toward the error limits. */
        smtp_reply(s, R_TOO_MANY_RCPT);
        return 0;
    }
    if (smtp_need_db(s) < 0)
        return -1;

    char lkey[LIM_PATH + 1], pm[LIM_PATH + 1];
    const char *domain;
    if (strcmp(rcpt, "postmaster") == 0) {
        PGresult *d = NULL;
        const char *vals[1] = {s->cfg.hostname};
        enum db_status st = db_exec(&s->db, smtp_sql(SQL_POSTMASTER), 1, vals, NULL, NULL, &d);
        if (db_failed(st))
            return smtp_reply(s, R_TEMP);
        snprintf(pm, sizeof pm, "postmaster@%s", st == DB_OK ? PQgetvalue(d, 0, 0) : "invalid");
        PQclear(d);
        smtp_lookup_key(s, pm, 0, lkey, sizeof lkey, &domain);
    } else {
        smtp_lookup_key(s, rcpt, 0, lkey, sizeof lkey, &domain);
    }
    PGresult *res = NULL;
    enum db_status st = lookup(s, lkey, domain, &res);
    if (st == DB_OK && !PQgetisnull(res, 0, 0) && PQgetisnull(res, 0, 1)) {
        /* Unknown as given: try without the +extension. */
        char stripped[LIM_PATH + 1];
        const char *d2;
        smtp_lookup_key(s, rcpt, 1, stripped, sizeof stripped, &d2);
        if (strcmp(stripped, lkey) != 0) {
            PGresult *res2 = NULL;
            enum db_status st2 = lookup(s, stripped, d2, &res2);
            if (st2 == DB_OK && !PQgetisnull(res2, 0, 1)) {
                PQclear(res);
                res = res2;
            } else {
                PQclear(res2);
                if (db_failed(st2))
                    st = st2;
            }
        }
    }
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, rcpt);
    int rc;
    if (db_failed(st)) {
        log_event(LOG_WARNING, "rcpt-tempfail", "rcpt=%s error=\"%s\"", clean, s->db.error);
        rc = smtp_reply(s, R_TEMP);
    } else if (st == DB_OK && PQgetisnull(res, 0, 0)) {
        rc = remote_rcpt(s, rcpt, clean, res);
    } else if (st == DB_NOTFOUND) {
        /* No open relay: only an authenticated sender reaches other domains. */
        log_event(LOG_NOTICE, "rcpt-rejected", "rcpt=%s reason=relay auth=no", clean);
        rc = smtp_reply(s, R_RELAY_DENIED, rcpt);
    } else if (PQgetisnull(res, 0, 1) && !(s->flags & SMTP_F_AUTH)) {
        log_event(LOG_NOTICE, "rcpt-rejected", "rcpt=%s reason=unknown-user", clean);
        rc = smtp_reply(s, R_NO_USER, rcpt);
    } else if (PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
        /* No room for the notice in the sender's own mailbox (pgmail_notice_room,
         * migrations/005): refuse now, as for an unauthenticated sender. */
        log_event(LOG_NOTICE, "rcpt-rejected", "rcpt=%s reason=unknown-user notice=no-room", clean);
        rc = smtp_reply(s, R_NO_USER, rcpt);
    } else if (!PQgetisnull(res, 0, 1) && over_quota(res, s->tx.declared_size)) {
        log_event(LOG_NOTICE, "rcpt-rejected", "rcpt=%s reason=quota", clean);
        rc = smtp_reply(s, R_QUOTA_RCPT, rcpt);
    } else if ((rc = smtp_milter_rcpt(s, rcpt)) != -2) {
        /* refused by a milter: this recipient only */
    } else {
        int unknown = PQgetisnull(res, 0, 1);
        if (add_rcpt(&s->tx, rcpt, unknown ? NULL : res, 0) < 0) {
            rc = smtp_reply(s, R_NO_MEMORY);
        } else {
            log_event(LOG_INFO, "rcpt-accepted", unknown ? "rcpt=%s bounce=yes" : "rcpt=%s", clean);
            smtp_enter(s, SMTP_RCPT, s->flags);
            rc = smtp_reply(s, R_RCPT_OK);
        }
    }
    PQclear(res);
    return rc;
}
