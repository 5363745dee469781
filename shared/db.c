/*
 * db.c - libpq connection, statement execution and SQLSTATE classification (see db.h).
 *
 * Invariant: db->in_tx changes only from what a live connection reports after a statement
 * (PQtransactionStatus) and in db_rollback / db_close; a dead connection keeps the last
 * belief, which is what forbids replacing it (db_connect) until the caller lets go.
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
    db->in_tx = 0;
}

static void set_error(struct db *db, const char *state, const char *msg)
{
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
    snprintf(db->error, sizeof db->error, "%s", msg ? msg : "unknown error");
    /* libpq messages end in a newline and may hold several lines: keep the first. */
    db->error[strcspn(db->error, "\r\n")] = '\0';
}

/* lost: the connection broke (or was found broken): record why. DB_LOST. */
static enum db_status lost(struct db *db)
{
    set_error(db, "08006",
              db->in_tx ? "connection to the database lost inside a transaction"
                        : (db->conn ? PQerrorMessage(db->conn) : "connection lost"));
    return DB_LOST;
}

/* track: after a statement on a live connection, remember whether it left a transaction
 * open (INTRANS, INERROR, or ACTIVE during a COPY). A dead one (UNKNOWN) changes nothing. */
static void track(struct db *db)
{
    PGTransactionStatusType ts = PQtransactionStatus(db->conn);
    if (PQstatus(db->conn) == CONNECTION_OK && ts != PQTRANS_UNKNOWN)
        db->in_tx = ts != PQTRANS_IDLE;
}

enum db_status db_connect(struct db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return DB_OK;
    if (db->in_tx) /* never a fresh connection in the middle of a transaction */
        return lost(db);
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

int db_failed(enum db_status st)
{
    return st == DB_TEMP || st == DB_PERM || st == DB_LOST;
}

/* failed: record and classify the failure that result r (NULL: none came) reports, and
 * free r. A connection that broke on the way is DB_LOST whatever the result says (the
 * server sends 57P01 before it closes a terminated backend's connection). */
static enum db_status failed(struct db *db, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    set_error(db, state, r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
    enum db_status cls = db_classify(state);
    PQclear(r);
    if (PQstatus(db->conn) != CONNECTION_OK)
        return DB_LOST; /* db->in_tx stays as it was: see db_connect */
    track(db);
    return cls;
}

/* exec: db_exec and db_exec_binary, which differ only in the format of the results. */
static enum db_status exec(struct db *db, const char *sql, int n, const char *const *vals,
                           const int *lens, const int *fmts, int resfmt, PGresult **res)
{
    if (res)
        *res = NULL;
    enum db_status c = db_connect(db);
    if (c != DB_OK)
        return c;
    PGresult *r = PQexecParams(db->conn, sql, n, NULL, vals, lens, fmts, resfmt);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        track(db);
    if (st == PGRES_COMMAND_OK) {
        /* COMMIT of a transaction that an earlier failure aborted "succeeds" with the tag
         * ROLLBACK: nothing was committed, and the caller must hear it. */
        int rolled_back = strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
        PQclear(r);
        if (rolled_back) {
            set_error(db, "40000", "the transaction was rolled back, nothing was committed");
            return DB_TEMP;
        }
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
    enum db_status c = db_connect(db);
    if (c != DB_OK)
        return c;
    PGresult *r = PQexecParams(db->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (r && PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        db->in_tx = 1; /* until the COPY ends: a lost connection now loses the rows */
        return DB_OK;
    }
    return failed(db, r);
}

enum db_status db_copy_put(struct db *db, const char *buf, size_t n)
{
    while (n > 0) {
        int chunk = n > 65536 ? 65536 : (int)n;
        if (PQputCopyData(db->conn, buf, chunk) != 1)
            return lost(db);
        buf += chunk;
        n -= (size_t)chunk;
    }
    return DB_OK;
}

enum db_status db_copy_end(struct db *db, const char *error)
{
    enum db_status st = DB_OK;
    if (PQputCopyEnd(db->conn, error) != 1)
        st = lost(db);
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
    if (PQstatus(db->conn) != CONNECTION_OK) {
        if (st != DB_LOST)
            lost(db);
        return DB_LOST;
    }
    track(db);
    return error ? DB_TEMP : st;
}

int db_in_transaction(const struct db *db)
{
    return db->in_tx;
}

void db_rollback(struct db *db, const char *rollback_sql)
{
    if (!db->in_tx)
        return;
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) {
        PGresult *r = PQexecParams(db->conn, rollback_sql, 0, NULL, NULL, NULL, NULL, 0);
        PQclear(r);
        track(db);
    }
    if (db->in_tx) /* dead, or ROLLBACK failed: closing the connection ends it for sure */
        db_close(db);
}

void db_close(struct db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
    db->in_tx = 0;
}

int db_append(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o + n + 1 > cap)
        return -1;
    memcpy(out + *o, s, n);
    *o += n;
    out[*o] = '\0';
    return 0;
}

size_t db_text_array(char *out, size_t cap, const char *const *elems, size_t n)
{
    size_t o = 0;
    if (db_append(out, cap, &o, "{", 1) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (i && db_append(out, cap, &o, ",", 1) < 0)
            return 0;
        if (!elems[i]) {
            if (db_append(out, cap, &o, "NULL", 4) < 0)
                return 0;
            continue;
        }
        if (db_append(out, cap, &o, "\"", 1) < 0)
            return 0;
        for (const char *p = elems[i]; *p; p++)
            if (((*p == '"' || *p == '\\') && db_append(out, cap, &o, "\\", 1) < 0) ||
                db_append(out, cap, &o, p, 1) < 0)
                return 0;
        if (db_append(out, cap, &o, "\"", 1) < 0)
            return 0;
    }
    return db_append(out, cap, &o, "}", 1) < 0 ? 0 : o;
}
