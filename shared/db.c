/*
 * db.c - libpq connection, statement execution and SQLSTATE classification (see db.h).
 */
#include "db.h"

#include <stdio.h>
#include <string.h>

void db_init(struct db *db, const char *conninfo, const char *appname)
{
    db->conn = NULL;
    db->conninfo = conninfo ? conninfo : "";
    db->appname = appname;
    db->sqlstate[0] = '\0';
    db->error[0] = '\0';
}

static void set_error(struct db *db, const char *state, const char *msg)
{
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
    snprintf(db->error, sizeof db->error, "%s", msg ? msg : "unknown error");
    /* libpq messages end in a newline and may hold several lines: keep the first. */
    db->error[strcspn(db->error, "\r\n")] = '\0';
}

enum db_status db_connect(struct db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return DB_OK;
    if (db->conn) {
        /* The backend went away between transactions: one fresh attempt. */
        PQfinish(db->conn);
        db->conn = NULL;
    }
    const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *const vals[] = {db->conninfo, db->appname, NULL};
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        set_error(db, "08001", db->conn ? PQerrorMessage(db->conn) : "out of memory");
        PQfinish(db->conn);
        db->conn = NULL;
        return DB_TEMP;
    }
    return DB_OK;
}

enum db_status db_classify(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return DB_TEMP;
    /* Class 22 data exception and 23 integrity violation depend only on the values we sent;
     * 42 (syntax/undefined object) means the schema is not what we expect, which an
     * operator fixes by migrating: temporary, so mail waits instead of bouncing. */
    if (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0)
        return DB_PERM;
    return DB_TEMP;
}

/* failed: record and classify the failure that result r (NULL: none came) reports, and
 * free r. */
static enum db_status failed(struct db *db, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    set_error(db, state, r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
    enum db_status cls = db_classify(state);
    PQclear(r);
    return cls;
}

/* exec: db_exec and db_exec_binary, which differ only in the format of the results. */
static enum db_status exec(struct db *db, const char *sql, int n, const char *const *vals,
                           const int *lens, const int *fmts, int resfmt, PGresult **res)
{
    if (res)
        *res = NULL;
    if (db_connect(db) != DB_OK)
        return DB_TEMP;
    PGresult *r = PQexecParams(db->conn, sql, n, NULL, vals, lens, fmts, resfmt);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK) {
        PQclear(r);
        return DB_OK;
    }
    if (st == PGRES_TUPLES_OK) {
        if (PQntuples(r) == 0) {
            PQclear(r);
            return DB_NOTFOUND;
        }
        if (res)
            *res = r;
        else
            PQclear(r);
        return DB_OK;
    }
    return failed(db, r);
}

enum db_status db_exec(struct db *db, const char *sql, int n, const char *const *vals,
                       const int *lens, const int *fmts, PGresult **res)
{
    return exec(db, sql, n, vals, lens, fmts, 0, res);
}

enum db_status db_exec_binary(struct db *db, const char *sql, int n, const char *const *vals,
                              const int *lens, const int *fmts, PGresult **res)
{
    return exec(db, sql, n, vals, lens, fmts, 1, res);
}

enum db_status db_copy_begin(struct db *db, const char *sql)
{
    if (db_connect(db) != DB_OK)
        return DB_TEMP;
    PGresult *r = PQexecParams(db->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (r && PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        return DB_OK;
    }
    return failed(db, r);
}

enum db_status db_copy_put(struct db *db, const char *buf, size_t n)
{
    while (n > 0) {
        int chunk = n > 65536 ? 65536 : (int)n;
        if (PQputCopyData(db->conn, buf, chunk) != 1) {
            set_error(db, "08006", PQerrorMessage(db->conn));
            return DB_TEMP;
        }
        buf += chunk;
        n -= (size_t)chunk;
    }
    return DB_OK;
}

enum db_status db_copy_end(struct db *db, const char *error)
{
    enum db_status st = DB_OK;
    if (PQputCopyEnd(db->conn, error) != 1) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        st = DB_TEMP;
    }
    /* Read every result the COPY produced; the first failure decides. */
    PGresult *r;
    while ((r = PQgetResult(db->conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && st == DB_OK) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            set_error(db, state, PQresultErrorMessage(r));
            st = db_classify(state);
        }
        PQclear(r);
        if (PQstatus(db->conn) == CONNECTION_BAD)
            break;
    }
    /* Without an explicit transaction the end of the COPY is its commit: a connection that
     * broke before the server said it was ready again may have lost it. */
    if (st == DB_OK && PQstatus(db->conn) == CONNECTION_BAD) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        st = DB_TEMP;
    }
    return error ? DB_TEMP : st;
}

int db_in_transaction(const struct db *db)
{
    return db->conn && PQtransactionStatus(db->conn) != PQTRANS_IDLE &&
           PQtransactionStatus(db->conn) != PQTRANS_UNKNOWN;
}

void db_close(struct db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
}
