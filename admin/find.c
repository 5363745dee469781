/*
 * find.c - domain and account lookups shared by the command files (see find.h).
 */
#include "find.h"
#include "fail.h"

int admin_domain_find(struct db *db, const char *name, int lock, char *id, size_t idlen)
{
    enum db_status st =
        ADMIN_SQL_FIRST(db, lock ? ADMIN_SQL_DOMAIN_LOCK : ADMIN_SQL_DOMAIN_FIND, id, idlen, name);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown domain %s: add it with pgmailctl domain add", name);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

int admin_account_find(struct db *db, const struct admin_address *a, int lock, char *id,
                       size_t idlen)
{
    enum db_status st = ADMIN_SQL_FIRST(db, lock ? ADMIN_SQL_ACCOUNT_LOCK : ADMIN_SQL_ACCOUNT_FIND,
                                        id, idlen, a->text);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown user %s", a->text);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

int admin_domain_scoped_list(struct db *db, enum admin_stmt stmt, int argc, char **argv)
{
    char name[LIM_DOMAIN + 1], id[24];
    if (argc == 0)
        return admin_sql_list(db, stmt, (const char *const[]){NULL}, 1);
    if (admin_check_domain(argv[0], name, sizeof name) != 0 ||
        admin_domain_find(db, name, 0, id, sizeof id) != ADMIN_EXIT_OK)
        return ADMIN_EXIT_FAIL;
    return admin_sql_list(db, stmt, (const char *const[]){id}, 1);
}
