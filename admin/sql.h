/*
 * sql.h - every SQL statement of pgmailctl, in one table indexed by enum admin_stmt, and the
 * functions that run them.
 *
 * Invariants: values travel only as parameters (text format), never inside the SQL text; every
 * result is cleared on every path; a database failure is reported here, once, as
 * "pgmailctl: database error: ...", so that callers only decide what a missing row means.
 * The one exception to parameters is admin_sql_script(), which runs the text of a compiled-in
 * migration (several statements, no parameters) with the simple-query protocol.
 */
#ifndef PGMAIL_ADMIN_SQL_H
#define PGMAIL_ADMIN_SQL_H

#include <stddef.h>

#include "db.h"

enum admin_stmt {
    ADMIN_SQL_BEGIN,
    ADMIN_SQL_COMMIT,
    ADMIN_SQL_ROLLBACK,
    ADMIN_SQL_MIGRATE_LOCK,
    ADMIN_SQL_MIGRATIONS_CREATE,
    ADMIN_SQL_MIGRATION_APPLIED,
    ADMIN_SQL_MIGRATION_RECORD,
    ADMIN_SQL_DOMAIN_FIND,
    ADMIN_SQL_DOMAIN_LOCK,
    ADMIN_SQL_DOMAIN_INSERT,
    ADMIN_SQL_DOMAIN_USAGE,
    ADMIN_SQL_DOMAIN_DELETE,
    ADMIN_SQL_DOMAIN_LIST,
    ADMIN_SQL_ACCOUNT_FIND,
    ADMIN_SQL_ACCOUNT_LOCK,
    ADMIN_SQL_ACCOUNT_INSERT,
    ADMIN_SQL_ACCOUNT_COUNT,
    ADMIN_SQL_ACCOUNT_PASSWORD,
    ADMIN_SQL_ACCOUNT_QUOTA,
    ADMIN_SQL_ACCOUNT_LIMIT,
    ADMIN_SQL_ACCOUNT_UNBOX,
    ADMIN_SQL_MESSAGES_LOCK,
    ADMIN_SQL_MESSAGES_FREE,
    ADMIN_SQL_ACCOUNT_UNALIAS,
    ADMIN_SQL_ACCOUNT_DELETE,
    ADMIN_SQL_ACCOUNT_LIST,
    ADMIN_SQL_ALIAS_FIND,
    ADMIN_SQL_ALIAS_INSERT,
    ADMIN_SQL_ALIAS_DELETE,
    ADMIN_SQL_ALIAS_DELETE_TARGET,
    ADMIN_SQL_ALIAS_LIST,
    ADMIN_SQL_ORPHAN_LIST,
    ADMIN_SQL_ORPHAN_PURGE,
    ADMIN_SQL_QUEUE_LIST,
    ADMIN_SQL_QUEUE_ENVELOPE,
    ADMIN_SQL_QUEUE_RECIPIENTS,
    ADMIN_SQL_QUEUE_ATTEMPTS,
    ADMIN_SQL_QUEUE_FLUSH,
    ADMIN_SQL_QUEUE_HOLD,
    ADMIN_SQL_QUEUE_RELEASE,
    ADMIN_SQL_QUEUE_DELETE,
    ADMIN_SQL_QUEUE_BOUNCE,
    ADMIN_SQL_STATS,
    ADMIN_SQL_ABUSE_LIST,
    ADMIN_SQL_ABUSE_CLEAR,
    ADMIN_SQL_COUNT_ /* number of statements, not a statement */
};

/* admin_sql_connect: open the connection. Returns 0, or -1 after reporting
 * "cannot connect to the database: <libpq message>". */
int admin_sql_connect(struct db *db);

/* admin_sql_run: run statement stmt with the n parameters vals (NULL = SQL NULL); n must be
 * the statement's parameter count (a mismatch is a programming error and aborts). Returns
 * what db_exec returns: DB_OK (rows, if any and res != NULL, are in *res, which the caller
 * clears), DB_NOTFOUND (a query returned no row), or DB_TEMP / DB_PERM after the error has
 * been reported. Use the ADMIN_SQL macro below to count the parameters. */
enum db_status admin_sql_run(struct db *db, enum admin_stmt stmt, PGresult **res,
                             const char *const *vals, int n);

/* admin_sql_first: like admin_sql_run, but keeps no result: on DB_OK column 0 of row 0 is
 * copied into out (when out is not NULL; "" for SQL NULL; truncated to outlen - 1). */
enum db_status admin_sql_first(struct db *db, enum admin_stmt stmt, char *out, size_t outlen,
                               const char *const *vals, int n);

/* ADMIN_SQL(db, stmt, res, value...) and ADMIN_SQL_FIRST(db, stmt, out, outlen, value...)
 * pass their values (at least one) as an array with its count. */
#define ADMIN_SQL_VALS_(...)                                                                       \
    (const char *const[]){__VA_ARGS__},                                                            \
        (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define ADMIN_SQL(db, stmt, res, ...)                                                              \
    admin_sql_run((db), (stmt), (res), ADMIN_SQL_VALS_(__VA_ARGS__))
#define ADMIN_SQL_FIRST(db, stmt, out, outlen, ...)                                                \
    admin_sql_first((db), (stmt), (out), (outlen), ADMIN_SQL_VALS_(__VA_ARGS__))

/* admin_sql_failed: st is DB_TEMP or DB_PERM (already reported). */
int admin_sql_failed(enum db_status st);

/* admin_sql_begin: BEGIN. Returns 0, or -1 after reporting the error. */
int admin_sql_begin(struct db *db);

/* admin_sql_end: end the transaction begun by admin_sql_begin: COMMIT when rc is 0, else
 * ROLLBACK. Returns rc, or ADMIN_EXIT_FAIL when the COMMIT failed (reported). */
int admin_sql_end(struct db *db, int rc);

/* admin_sql_script: run the migration text sql (several statements, no parameters) in the
 * open transaction with the simple-query protocol. Returns 0, or -1 after reporting
 * "<label>: <server message>". */
int admin_sql_script(struct db *db, const char *label, const char *sql);

/* admin_sql_list: run query stmt with its n parameters and write every row to stdout,
 * columns separated by a tab, SQL NULL as "-". No row prints nothing. Returns ADMIN_EXIT_OK,
 * or ADMIN_EXIT_FAIL after the error has been reported. */
int admin_sql_list(struct db *db, enum admin_stmt stmt, const char *const *vals, int n);

#endif
