/*
 * migrate.c - pgmailctl migrate: bring the schema up to date with the migrations compiled
 * into this binary (admin_migrations[], generated from the migrations/ files).
 *
 * Invariants: pgmail_migrations records each applied file by its number (the digits before
 * the first '_' of its name). Each file runs in its own transaction together with its record,
 * so a failed file leaves no trace and a later run retries it. Every transaction first takes
 * one transaction-level advisory lock, so concurrent runs apply each file once; the lock
 * ends with the transaction and needs no session state. Running migrate again is a no-op.
 */
#include "admin.h"
#include "fail.h"
#include "migrations.h"
#include "sql.h"

#include <stdio.h>
#include <string.h>

/* version_of: the number a migration file name starts with, or -1 when it has none. */
static long version_of(const char *name)
{
    size_t digits = strspn(name, "0123456789");
    if (digits == 0 || digits > 9 || name[digits] != '_')
        return -1;
    long v = 0;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (name[i] - '0');
    return v;
}

/* locked: BEGIN and take the migration lock. 0, or -1 (reported, transaction ended). */
static int locked(struct db *db)
{
    if (admin_sql_begin(db) != 0)
        return -1;
    if (admin_sql_failed(admin_sql_run(db, ADMIN_SQL_MIGRATE_LOCK, NULL, NULL, 0))) {
        admin_sql_end(db, ADMIN_EXIT_FAIL);
        return -1;
    }
    return 0;
}

/* apply: run migration m (number version) unless it is recorded; *applied counts it. */
static int apply(struct db *db, const struct admin_migration *m, long version, int *applied)
{
    char v[24];
    snprintf(v, sizeof v, "%ld", version);
    if (locked(db) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL_FIRST(db, ADMIN_SQL_MIGRATION_APPLIED, NULL, 0, v);
    int rc = ADMIN_EXIT_OK, ran = 0;
    if (st == DB_NOTFOUND) {
        ran = 1;
        if (admin_sql_script(db, m->name, m->sql) != 0 ||
            admin_sql_failed(ADMIN_SQL(db, ADMIN_SQL_MIGRATION_RECORD, NULL, v, m->name)))
            rc = ADMIN_EXIT_FAIL;
    } else if (st != DB_OK) {
        rc = ADMIN_EXIT_FAIL;
    }
    rc = admin_sql_end(db, rc);
    if (rc == ADMIN_EXIT_OK && ran) {
        printf("applied %s\n", m->name);
        fflush(stdout);
        (*applied)++;
    }
    return rc;
}

int admin_cmd_migrate(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct db *db = &ctx->db;
    if (locked(db) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = admin_sql_run(db, ADMIN_SQL_MIGRATIONS_CREATE, NULL, NULL, 0);
    int rc = admin_sql_end(db, admin_sql_failed(st) ? ADMIN_EXIT_FAIL : ADMIN_EXIT_OK);
    int applied = 0;
    long last = 0;
    for (const struct admin_migration *m = admin_migrations; rc == ADMIN_EXIT_OK && m->name; m++) {
        long version = version_of(m->name);
        if (version <= last)
            return admin_fail("migration %s: its name must start with a number above %ld and "
                              "an underscore",
                              m->name, last);
        rc = apply(db, m, version, &applied);
        last = version;
    }
    if (rc == ADMIN_EXIT_OK && applied == 0)
        printf("up to date\n");
    return rc;
}
