/*
 * auth.c - crypt(3) verification with equal work for unknown users (see auth.h).
 *
 * The module owns its one statement, the account lookup, so that every program checks a
 * login the same way (pgmail-smtpd and pgmail-pop3d had a copy each). Its value travels
 * only as a parameter, as in the programs' sql.c tables.
 */
#include "auth.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* $1 login -> account id, password hash; no row for an unknown login. */
static const char lookup_sql[] =
    "SELECT id, password_hash FROM accounts WHERE lower(address) = lower($1)";

/* $1 program -> one more failed login in pgmail_counters (migrations/010). */
static const char count_failure_sql[] = "SELECT pgmail_count_login_failure($1)";

static char dummy_setting[CRYPT_GENSALT_OUTPUT_SIZE];
static long delay_ms = 1000;

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

void auth_init(const char *scheme, long cost, long fail_delay_ms)
{
    delay_ms = fail_delay_ms;
    /* A real salt string of the configured scheme: hashing against it costs what checking
     * a real account costs, so timing does not tell whether an account exists. */
    if (!crypt_gensalt_rn(prefix_of(scheme), (unsigned long)cost, NULL, 0, dummy_setting,
                          sizeof dummy_setting))
        dummy_setting[0] = '\0';
}

/* count_failure: one failed login for the metrics, by program (the database application
 * name). Only outside a transaction, so that a schema without migrations/010 (the function
 * missing) cannot abort a session's transaction; its failure changes nothing else. */
static void count_failure(struct db *db)
{
    if (db_in_transaction(db))
        return;
    PGresult *res = NULL;
    const char *vals[1] = {db->appname ? db->appname : "unknown"};
    (void)db_exec(db, count_failure_sql, 1, vals, NULL, NULL, &res);
    PQclear(res);
}

static void pause_after_failure(void)
{
    struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

enum auth_result auth_check(struct db *db, const char *user, const char *password, char *id,
                            size_t idlen)
{
    PGresult *res = NULL;
    const char *vals[1] = {user};
    enum db_status st = db_exec(db, lookup_sql, 1, vals, NULL, NULL, &res);
    /* A name the database refuses as a value (class 22: not valid UTF-8, say) cannot be an
     * account: a failed login like any unknown user, not a temporary failure. */
    if (st == DB_PERM && strncmp(db->sqlstate, "22", 2) == 0)
        st = DB_NOTFOUND;
    if (db_failed(st))
        return AUTH_TEMP;
    const char *hash = st == DB_OK ? PQgetvalue(res, 0, 1) : dummy_setting;
    struct crypt_data *cd = &(struct crypt_data){0};
    const char *out = crypt_r(password, hash, cd);
    int ok = st == DB_OK && out && out[0] != '*' && strlen(out) == strlen(hash) &&
             strcmp(out, hash) == 0;
    if (ok)
        snprintf(id, idlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    auth_wipe(cd, sizeof *cd);
    if (!ok) {
        count_failure(db);
        pause_after_failure();
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
