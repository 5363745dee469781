/*
 * cmd_alias.c - pgmailctl alias add | del | list: addresses that deliver to local accounts.
 *
 * An alias is one row per (address, target account); an address with several rows delivers
 * to each target. Invariants: the alias address is in a local domain and is not an account's
 * address; every target is an existing local account (the schema drops alias rows with
 * their account). Changes run under the alias domain's row lock, as account creation does.
 */
#include "admin.h"
#include "check.h"
#include "fail.h"
#include "find.h"
#include "sql.h"

int admin_cmd_alias_add(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct admin_address alias, target;
    char dom[24], id[24];
    struct db *db = &ctx->db;
    if (admin_check_address(argv[0], &alias) != 0 || admin_check_address(argv[1], &target) != 0 ||
        admin_sql_begin(db) != 0)
        return ADMIN_EXIT_FAIL;
    int rc = admin_domain_find(db, alias.domain, 1, dom, sizeof dom);
    if (rc == ADMIN_EXIT_OK) {
        enum db_status st = ADMIN_SQL_FIRST(db, ADMIN_SQL_ACCOUNT_FIND, NULL, 0, alias.text);
        if (st == DB_OK)
            rc = admin_fail("%s is a user: an alias cannot take an account's address", alias.text);
        else if (st != DB_NOTFOUND)
            rc = ADMIN_EXIT_FAIL;
    }
    if (rc == ADMIN_EXIT_OK)
        rc = admin_account_find(db, &target, 0, id, sizeof id);
    if (rc == ADMIN_EXIT_OK) {
        enum db_status st =
            ADMIN_SQL_FIRST(db, ADMIN_SQL_ALIAS_INSERT, NULL, 0, dom, alias.text, id);
        if (st == DB_NOTFOUND)
            rc = admin_fail("alias %s -> %s exists", alias.text, target.text);
        else if (st != DB_OK)
            rc = ADMIN_EXIT_FAIL;
    }
    return admin_sql_end(db, rc);
}

int admin_cmd_alias_del(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_address alias, target;
    if (admin_check_address(argv[0], &alias) != 0 ||
        (argc > 1 && admin_check_address(argv[1], &target) != 0))
        return ADMIN_EXIT_FAIL;
    enum db_status st =
        argc > 1 ? ADMIN_SQL(&ctx->db, ADMIN_SQL_ALIAS_DELETE_TARGET, NULL, alias.text, target.text)
                 : ADMIN_SQL(&ctx->db, ADMIN_SQL_ALIAS_DELETE, NULL, alias.text);
    if (st == DB_NOTFOUND && argc > 1)
        return admin_fail("no alias %s -> %s", alias.text, target.text);
    if (st == DB_NOTFOUND)
        return admin_fail("no alias %s", alias.text);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

int admin_cmd_alias_list(struct admin_ctx *ctx, int argc, char **argv)
{
    return admin_domain_scoped_list(&ctx->db, ADMIN_SQL_ALIAS_LIST, argc, argv);
}
