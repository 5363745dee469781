/*
 * cmd_user.c - pgmailctl user add | import | passwd | del | list | quota | limit: the local
 * accounts.
 *
 * Invariants: an address is stored lower-case, in a local domain, and is either an account
 * or an alias, never both. Passwords are read from stdin (never argv), hashed with the
 * configured crypt(3) scheme, wiped after use and never printed. Accounts are created under
 * their domain's row lock, so that exactly one "first account" creates the postmaster alias
 * (RFC 5321 4.5.1: every domain must accept mail for postmaster).
 */
#include "admin.h"
#include "auth.h"
#include "check.h"
#include "fail.h"
#include "find.h"
#include "log.h"
#include "secret.h"
#include "sql.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* check_new_address: a's domain is local and a is neither an account nor an alias. With lock
 * (inside a transaction) the domain row is locked. Stores the domain id in dom. */
static int check_new_address(struct db *db, const struct admin_address *a, int lock, char *dom,
                             size_t domlen)
{
    if (admin_domain_find(db, a->domain, lock, dom, domlen) != ADMIN_EXIT_OK)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ACCOUNT_FIND, NULL, 0, a->text);
    if (st == DB_OK)
        return admin_fail("user %s exists", a->text);
    if (st == DB_NOTFOUND)
        st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ALIAS_FIND, NULL, 0, a->text);
    if (st == DB_OK)
        return admin_fail("%s is an alias: delete it first with pgmailctl alias del", a->text);
    return st == DB_NOTFOUND ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

/* add_postmaster: when account id (address a, domain dom) is the domain's only account and
 * postmaster@domain is neither an account nor an alias, alias it to a; *added says so. */
static int add_postmaster(struct db *db, const struct admin_address *a, const char *dom,
                          const char *id, int *added)
{
    char count[24], pm[sizeof "postmaster@" + LIM_DOMAIN];
    enum db_status st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ACCOUNT_COUNT, count, sizeof count, dom);
    if (st != DB_OK)
        return ADMIN_EXIT_FAIL;
    snprintf(pm, sizeof pm, "postmaster@%s", a->domain);
    if (strcmp(count, "1") != 0 || strcmp(pm, a->text) == 0)
        return ADMIN_EXIT_OK;
    st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ACCOUNT_FIND, NULL, 0, pm);
    if (st == DB_NOTFOUND)
        st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ALIAS_FIND, NULL, 0, pm);
    if (st != DB_NOTFOUND)
        return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
    if (admin_sql_failed(ADMIN_SQL_FIRST(db, ADMIN_SQL_ALIAS_INSERT, NULL, 0, dom, pm, id)))
        return ADMIN_EXIT_FAIL;
    *added = 1;
    return ADMIN_EXIT_OK;
}

/* create_account: insert account a with hash and quota (NULL = none) in one transaction,
 * with the postmaster alias when it is the domain's first account. */
static int create_account(struct db *db, const struct admin_address *a, const char *hash,
                          const char *quota)
{
    char dom[24], id[24];
    int postmaster = 0;
    if (admin_sql_begin(db) != 0)
        return ADMIN_EXIT_FAIL;
    int rc = check_new_address(db, a, 1, dom, sizeof dom);
    if (rc == ADMIN_EXIT_OK) {
        enum db_status st =
            ADMIN_SQL_FIRST(db, ADMIN_SQL_ACCOUNT_INSERT, id, sizeof id, dom, a->text, hash, quota);
        if (st == DB_NOTFOUND)
            rc = admin_fail("user %s exists", a->text);
        else if (st != DB_OK)
            rc = ADMIN_EXIT_FAIL;
    }
    if (rc == ADMIN_EXIT_OK)
        rc = add_postmaster(db, a, dom, id, &postmaster);
    rc = admin_sql_end(db, rc);
    if (rc == ADMIN_EXIT_OK && postmaster)
        printf("added alias postmaster@%s -> %s (RFC 5321 4.5.1)\n", a->domain, a->text);
    return rc;
}

/* hash_password: read a new password from stdin and hash it into hash (CRYPT_OUTPUT_SIZE).
 * The password itself is wiped before this returns. */
static int hash_password(const struct config *cfg, char *hash, size_t hashlen)
{
    char password[ADMIN_PASSWORD_MAX + 1];
    if (admin_read_secret("password", 1, password, sizeof password) != 0)
        return ADMIN_EXIT_FAIL;
    size_t n = strlen(password);
    int rc = auth_hash(cfg->password_scheme, cfg->password_cost, password, hash, hashlen);
    int err = errno;
    auth_wipe(password, sizeof password);
    if (rc != 0)
        return admin_fail("cannot hash the password with %s (cost %ld): %s", cfg->password_scheme,
                          cfg->password_cost, strerror(err));
    if (strcmp(cfg->password_scheme, "bcrypt") == 0 && n > ADMIN_BCRYPT_USED)
        fprintf(stderr,
                "pgmailctl: warning: bcrypt uses only the first %d of the password's %zu "
                "octets; the rest is ignored at login\n",
                ADMIN_BCRYPT_USED, n);
    return ADMIN_EXIT_OK;
}

/* new_account: user add and user import. With import the hash is read from stdin as it is,
 * else a password is read and hashed. Checks come first, so that nobody types a password
 * for an account that cannot be created. */
static int new_account(struct admin_ctx *ctx, const char *arg, int import)
{
    struct admin_address a;
    char quota[24], dom[24], hash[CRYPT_OUTPUT_SIZE];
    const char *q = NULL;
    if (admin_check_address(arg, &a) != 0 ||
        (ctx->option && admin_check_bytes(ctx->option, 1, quota, sizeof quota, &q) != 0) ||
        check_new_address(&ctx->db, &a, 0, dom, sizeof dom) != ADMIN_EXIT_OK)
        return ADMIN_EXIT_FAIL;
    int rc = ADMIN_EXIT_FAIL;
    if (import) {
        if (admin_read_secret("hash", 0, hash, sizeof hash) == 0 && admin_check_hash(hash) == 0)
            rc = ADMIN_EXIT_OK;
    } else {
        rc = hash_password(&ctx->cfg, hash, sizeof hash);
    }
    if (rc == ADMIN_EXIT_OK)
        rc = create_account(&ctx->db, &a, hash, q);
    auth_wipe(hash, sizeof hash);
    return rc;
}

int admin_cmd_user_add(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    return new_account(ctx, argv[0], 0);
}

int admin_cmd_user_import(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    return new_account(ctx, argv[0], 1);
}

int admin_cmd_user_passwd(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct admin_address a;
    char id[24], hash[CRYPT_OUTPUT_SIZE];
    if (admin_check_address(argv[0], &a) != 0 ||
        admin_account_find(&ctx->db, &a, 0, id, sizeof id) != ADMIN_EXIT_OK ||
        hash_password(&ctx->cfg, hash, sizeof hash) != ADMIN_EXIT_OK)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_ACCOUNT_PASSWORD, NULL, 0, id, hash);
    auth_wipe(hash, sizeof hash);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown user %s", a.text); /* deleted while we were prompting */
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

int admin_cmd_user_quota(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct admin_address a;
    char buf[24];
    const char *quota;
    if (admin_check_address(argv[0], &a) != 0 ||
        admin_check_bytes(argv[1], 1, buf, sizeof buf, &quota) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_ACCOUNT_QUOTA, NULL, 0, a.text, quota);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown user %s", a.text);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

/* limit_value: N, none or default as the value of accounts.outbound_limit (migrations/006):
 * N itself, -1 for none (no limit), NULL for default (max_outbound_per_hour). */
static int limit_value(const char *arg, char *buf, size_t len, const char **value)
{
    if (strcmp(arg, "none") == 0 || strcmp(arg, "default") == 0) {
        *value = arg[0] == 'n' ? "-1" : NULL;
        return 0;
    }
    char shown[80];
    if (arg[0] == '\0' || strspn(arg, "0123456789") != strlen(arg) || strlen(arg) > 9)
        return admin_fail("invalid limit \"%s\": expected a number of recipients per hour "
                          "(at most 999999999), none or default",
                          log_clean(shown, sizeof shown, arg));
    snprintf(buf, len, "%ld", strtol(arg, NULL, 10));
    *value = buf;
    return 0;
}

int admin_cmd_user_limit(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct admin_address a;
    char buf[24];
    const char *limit = NULL;
    if (admin_check_address(argv[0], &a) != 0 || limit_value(argv[1], buf, sizeof buf, &limit) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_ACCOUNT_LIMIT, NULL, 0, a.text, limit);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown user %s", a.text);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

/* drop_account: inside the transaction, delete locked account id: its mailbox rows and the
 * messages nobody else references (see ADMIN_SQL_ACCOUNT_UNBOX for the locks and why), its
 * alias targets (kept in *unaliased to report after COMMIT), then the account itself. */
static int drop_account(struct db *db, const char *id, PGresult **unaliased)
{
    PGresult *gone = NULL;
    enum db_status st = ADMIN_SQL(db, ADMIN_SQL_ACCOUNT_UNBOX, &gone, id);
    const char *messages = st == DB_OK ? PQgetvalue(gone, 0, 0) : NULL;
    if (st == DB_OK)
        st = ADMIN_SQL(db, ADMIN_SQL_MESSAGES_LOCK, NULL, messages);
    if (!admin_sql_failed(st))
        st = ADMIN_SQL(db, ADMIN_SQL_MESSAGES_FREE, NULL, messages);
    PQclear(gone);
    if (!admin_sql_failed(st))
        st = ADMIN_SQL(db, ADMIN_SQL_ACCOUNT_UNALIAS, unaliased, id);
    if (!admin_sql_failed(st))
        st = ADMIN_SQL(db, ADMIN_SQL_ACCOUNT_DELETE, NULL, id);
    return admin_sql_failed(st) ? ADMIN_EXIT_FAIL : ADMIN_EXIT_OK;
}

int admin_cmd_user_del(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct admin_address a;
    char id[24];
    PGresult *unaliased = NULL;
    if (admin_check_address(argv[0], &a) != 0 || admin_sql_begin(&ctx->db) != 0)
        return ADMIN_EXIT_FAIL;
    int rc = admin_account_find(&ctx->db, &a, 1, id, sizeof id);
    if (rc == ADMIN_EXIT_OK)
        rc = drop_account(&ctx->db, id, &unaliased);
    rc = admin_sql_end(&ctx->db, rc);
    for (int i = 0; rc == ADMIN_EXIT_OK && unaliased && i < PQntuples(unaliased); i++)
        printf("removed %s from alias %s\n", a.text, PQgetvalue(unaliased, i, 0));
    PQclear(unaliased);
    return rc;
}

int admin_cmd_user_list(struct admin_ctx *ctx, int argc, char **argv)
{
    return admin_domain_scoped_list(&ctx->db, ADMIN_SQL_ACCOUNT_LIST, argc, argv);
}
