/*
 * cmd_domain.c - pgmailctl domain add | del | list: the domains this server is final
 * destination for.
 *
 * Invariants: names are validated and stored lower-case; a domain is deleted only while it
 * holds no account and no alias (checked under the domain's row lock, and enforced again by
 * the schema's ON DELETE RESTRICT).
 */
#include "admin.h"
#include "check.h"
#include "fail.h"
#include "sql.h"

#include <stdlib.h>

int admin_cmd_domain_add(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    char name[LIM_DOMAIN + 1];
    if (admin_check_domain(argv[0], name, sizeof name) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_DOMAIN_INSERT, NULL, 0, name);
    if (st == DB_NOTFOUND)
        return admin_fail("domain %s exists", name);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

/* refuse_if_used: fail while the locked domain id still holds accounts or aliases. */
static int refuse_if_used(struct db *db, const char *name, const char *id)
{
    PGresult *res = NULL;
    if (ADMIN_SQL(db, ADMIN_SQL_DOMAIN_USAGE, &res, id) != DB_OK)
        return ADMIN_EXIT_FAIL;
    long accounts = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    long aliases = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    if (accounts == 0 && aliases == 0)
        return ADMIN_EXIT_OK;
    return admin_fail("domain %s still has %ld account%s and %ld alias%s: delete them first", name,
                      accounts, accounts == 1 ? "" : "s", aliases, aliases == 1 ? "" : "es");
}

int admin_cmd_domain_del(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    char name[LIM_DOMAIN + 1], id[24];
    if (admin_check_domain(argv[0], name, sizeof name) != 0)
        return ADMIN_EXIT_FAIL;
    if (admin_sql_begin(&ctx->db) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_DOMAIN_LOCK, id, sizeof id, name);
    int rc = st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
    if (st == DB_NOTFOUND)
        admin_fail("unknown domain %s", name);
    if (rc == ADMIN_EXIT_OK)
        rc = refuse_if_used(&ctx->db, name, id);
    if (rc == ADMIN_EXIT_OK &&
        admin_sql_failed(ADMIN_SQL(&ctx->db, ADMIN_SQL_DOMAIN_DELETE, NULL, id)))
        rc = ADMIN_EXIT_FAIL;
    return admin_sql_end(&ctx->db, rc);
}

int admin_cmd_domain_list(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return admin_sql_list(&ctx->db, ADMIN_SQL_DOMAIN_LIST, NULL, 0);
}
