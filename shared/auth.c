/*
 * auth.c - crypt(3) verification with equal work for unknown users (see auth.h).
 *
 * The module owns its two statements, the account lookup (with the failures in the window)
 * and the failure record, so that every program checks a login the same way (pgmail-smtpd
 * and pgmail-pop3d had a copy each). Values travel only as parameters, as in the programs'
 * sql.c tables. Sharing the failures across processes and hosts: see auth.h.
 */
#include "auth.h"
#include "mail_limits.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* $1 login, $2 source, $3 window (seconds) -> one row: account id and password hash (NULL
 * for an unknown login), failures from the source and on the login in the window. The
 * failure counts come with the lookup, so that they cost no statement of their own. */
static const char lookup_sql[] =
    "SELECT a.id, a.password_hash, f.by_source, f.by_login"
    " FROM (SELECT count(*) FILTER (WHERE source = $2) AS by_source,"
    "              count(*) FILTER (WHERE login = lower($1)) AS by_login"
    "         FROM auth_failures"
    "        WHERE (source = $2 OR login = lower($1))"
    "          AND at > now() - make_interval(secs => $3::double precision)) f"
    " LEFT JOIN accounts a ON lower(a.address) = lower($1)";

/* $1 program, $2 source, $3 login, $4 window -> one failed login recorded (and counted for
 * the metrics by migrations/012's trigger). */
static const char failure_sql[] = "SELECT pgmail_auth_failure($1, $2, $3, $4::double precision)";

static char dummy_setting[CRYPT_GENSALT_OUTPUT_SIZE];
static long delay_ms = 1000;
static long source_limit = LIM_DEFAULT_AUTH_SOURCE_FAILURES;
static long account_limit = LIM_DEFAULT_AUTH_ACCOUNT_FAILURES;
static char window[24] = "900";
static char source[64] = "unknown";

static const char *prefix_of(const char *scheme)
{
    if (strcmp(scheme, "sha512crypt") == 0)
        return "$6$";
    if (strcmp(scheme, "bcrypt") == 0)
        return "$2b$";
    return "$y$";
}

void auth_wipe(void *p, size_t n)
{
    explicit_bzero(p, n);
}

/* source_key: the client as failures are counted: an IPv4 address as it is (also one
 * written as IPv4-mapped IPv6), an IPv6 address as its /64 (one host is usually given a
 * whole /64, so counting single addresses would give it 2^64 tries), anything else
 * ("unknown", "local") as it is. */
static void source_key(const char *addr, char *out, size_t n)
{
    struct in6_addr a6;
    char text[INET6_ADDRSTRLEN];
    snprintf(out, n, "%s", addr);
    if (inet_pton(AF_INET6, addr, &a6) != 1)
        return;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        if (inet_ntop(AF_INET, a6.s6_addr + 12, text, sizeof text))
            snprintf(out, n, "%s", text);
        return;
    }
    memset(a6.s6_addr + 8, 0, 8);
    if (inet_ntop(AF_INET6, &a6, text, sizeof text))
        snprintf(out, n, "%s/64", text);
}

void auth_init(const struct config *cfg, const char *peer)
{
    delay_ms = cfg->auth_failure_delay_ms;
    source_limit = cfg->auth_source_failures;
    account_limit = cfg->auth_account_failures;
    snprintf(window, sizeof window, "%ld", cfg->auth_window);
    source_key(peer, source, sizeof source);
    /* A real salt string of the configured scheme: hashing against it costs what checking
     * a real account costs, so timing does not tell whether an account exists. */
    if (!crypt_gensalt_rn(prefix_of(cfg->password_scheme), (unsigned long)cfg->password_cost, NULL,
                          0, dummy_setting, sizeof dummy_setting))
        dummy_setting[0] = '\0';
}

/* record_failure: one failed login of login from our source, by program (the database
 * application name). Only outside a transaction, so that a schema without migrations/012
 * (the function missing) cannot abort a session's transaction (AUTH never runs inside one:
 * RFC 4954 4, RFC 1939's AUTHORIZATION state); its failure changes nothing else. */
static void record_failure(struct db *db, const char *login)
{
    if (db_in_transaction(db))
        return;
    PGresult *res = NULL;
    const char *vals[4] = {db->appname ? db->appname : "unknown", source, login, window};
    (void)db_exec(db, failure_sql, 4, vals, NULL, NULL, &res);
    PQclear(res);
}

/* pause_after_failure: auth_failure_delay_ms, doubled for each of the failures in the
 * window (this one included) beyond the LIM_AUTH_FAILURES that one connection may make
 * anyway (a user who mistypes a few times waits as before), at most LIM_AUTH_DELAY_DOUBLINGS
 * times. */
static void pause_after_failure(long failures)
{
    long d = failures - LIM_AUTH_FAILURES;
    d = d < 0 ? 0 : d > LIM_AUTH_DELAY_DOUBLINGS ? LIM_AUTH_DELAY_DOUBLINGS : d;
    long ms = delay_ms << d;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

enum auth_result auth_check(struct db *db, const char *user, const char *password, char *id,
                            size_t idlen)
{
    PGresult *res = NULL;
    const char *vals[3] = {user, source, window};
    enum db_status st = db_exec(db, lookup_sql, 3, vals, NULL, NULL, &res);
    /* A name the database refuses as a value (class 22: not valid UTF-8, say) cannot be an
     * account: a failed login like any unknown user (recorded under the empty login), not a
     * temporary failure. */
    int bad_name = st == DB_PERM && strncmp(db->sqlstate, "22", 2) == 0;
    if (bad_name)
        st = DB_NOTFOUND;
    if (db_failed(st))
        return AUTH_TEMP;
    int known = st == DB_OK && !PQgetisnull(res, 0, 0);
    long by_source = st == DB_OK ? strtol(PQgetvalue(res, 0, 2), NULL, 10) : 0;
    long by_login = st == DB_OK ? strtol(PQgetvalue(res, 0, 3), NULL, 10) : 0;
    long failures = by_source > by_login ? by_source : by_login;
    /* The refusal depends on the counts alone, never on whether the account exists. */
    if (by_source >= source_limit || (by_login >= account_limit && by_source > 0)) {
        PQclear(res);
        pause_after_failure(failures);
        return AUTH_REFUSED;
    }
    const char *hash = known ? PQgetvalue(res, 0, 1) : dummy_setting;
    struct crypt_data *cd = &(struct crypt_data){0};
    const char *out = crypt_r(password, hash, cd);
    int ok = known && out && out[0] != '*' && strlen(out) == strlen(hash) && strcmp(out, hash) == 0;
    if (ok)
        snprintf(id, idlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    auth_wipe(cd, sizeof *cd);
    if (!ok) {
        record_failure(db, bad_name ? "" : user);
        pause_after_failure(failures + 1);
    }
    return ok ? AUTH_OK : AUTH_FAIL;
}

int auth_hash(const char *scheme, long cost, const char *password, char *out, size_t outlen)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn(prefix_of(scheme), (unsigned long)cost, NULL, 0, setting, sizeof setting))
        return -1;
    struct crypt_data *cd = &(struct crypt_data){0};
    const char *h = crypt_r(password, setting, cd);
    int rc = -1;
    if (h && h[0] != '*' && strlen(h) < outlen) {
        memcpy(out, h, strlen(h) + 1);
        rc = 0;
    } else {
        errno = EINVAL;
    }
    auth_wipe(cd, sizeof *cd);
    return rc;
}
