/*
 * memstore.c - an in-memory stand-in for PostgreSQL, for the fuzzers only.
 *
 * The seam is libpq itself: this file defines the libpq functions that talk to a server
 * (connect, exec, COPY, status), and the fuzz binaries link it before libpq, so that the
 * handlers' production code - shared/db.c, the statement tables, every handler - runs
 * unchanged against a tiny fixed store. Results are real PGresults, made with libpq's own
 * PQmakeEmptyPGresult/PQsetResultAttrs/PQsetvalue. Statements are recognised by a phrase
 * of their text (both programs' tables), so a new statement that is not taught here fails
 * loudly (abort) instead of passing silently.
 *
 * The store: domain example.test; alice (id 1, password "secret", aliases postmaster@ and
 * info@), bob (id 2), carol (id 3, quota 100 octets); alice's mailbox holds three messages.
 * Every other domain is remote, and an authenticated sender has room for two remote
 * recipients (pgmail_rcpt_lookup's room), so the third meets the outbound limit.
 * memstore_reset(fail_at) makes the fail_at-th statement of the next session fail (a
 * database error; the end of a COPY counts as a statement), so that the fuzzer explores the
 * temporary-failure paths too; and every third value of fail_at makes the server report a
 * statement_timeout, which takes pgmail-smtpd's explicit-transaction path.
 */
#include "memstore.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fake_conn; /* PGconn is opaque: any address stands for "the" connection */
static int connected, in_tx, copying, copy_done, copy_failed, statements, fail_at;
static long long next_id = 100;

static const char *const bodies[] = {
    "Return-Path: <a@b.test>\r\nSubject: one\r\n\r\nfirst\r\n.dot line\r\n",
    "Subject: two\r\n\r\n",
    "Subject: three\r\nX: y\r\n\r\nbody 1\r\nbody 2\r\nbody 3\r\n",
};

void memstore_reset(int fail)
{
    connected = in_tx = copying = copy_done = copy_failed = statements = 0;
    fail_at = fail;
}

static PGresult *rows(int ncols, int nrows, const char *const *cells, int binary)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[8];
    memset(attrs, 0, sizeof attrs);
    for (int c = 0; c < ncols; c++) {
        attrs[c].name = (char *)"c";
        attrs[c].format = binary;
        attrs[c].typlen = -1;
    }
    PQsetResultAttrs(r, ncols, attrs);
    for (int i = 0; i < nrows; i++)
        for (int c = 0; c < ncols; c++) {
            const char *v = cells[i * ncols + c];
            PQsetvalue(r, i, c, (char *)v, v ? (int)strlen(v) : -1);
        }
    return r;
}

static PGresult *command_ok(void)
{
    return PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
}

/* account: the id of a lower-case address, or NULL. */
static const char *account(const char *a)
{
    if (!strcmp(a, "alice@example.test") || !strcmp(a, "postmaster@example.test") ||
        !strcmp(a, "info@example.test"))
        return "1";
    if (!strcmp(a, "bob@example.test"))
        return "2";
    if (!strcmp(a, "carol@example.test"))
        return "3";
    return NULL;
}

/* array_len: how many elements a "{1,2,3}" literal holds. */
static int array_len(const char *a)
{
    if (!a || strlen(a) <= 2)
        return 0;
    int n = 1;
    for (; *a; a++)
        n += *a == ',';
    return n;
}

PGresult *PQexecParams(PGconn *conn, const char *sql, int n, const Oid *types, const char *const *v,
                       const int *lens, const int *fmts, int resfmt)
{
    (void)conn, (void)n, (void)types, (void)lens, (void)fmts, (void)resfmt;
    static char cell[3][64];
    if (++statements == fail_at)
        return NULL; /* shared/db.c sees a failure without SQLSTATE: temporary */
    if (!strncmp(sql, "BEGIN", 5)) {
        in_tx = 1;
        return command_ok();
    }
    if (!strcmp(sql, "COMMIT") || !strcmp(sql, "ROLLBACK")) {
        in_tx = 0;
        return command_ok();
    }
    if (strstr(sql, "a.password_hash")) { /* shared/auth.c: the lookup, no failures */
        char lower[300];
        snprintf(lower, sizeof lower, "%s", v[0]);
        for (char *p = lower; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        const char *id = account(lower);
        const char *cells[] = {id,
                               id ? "$6$rounds=1000$fuzzsalt$VaozQpX6.rHlYgQ8XkQuQwnkNdGdaeCOvmZ"
                                    "C4qxWknLh/eg/UKI7XrlNFcouj7rjYRe.I0VJYPdKlgC8OexQQ0"
                                  : NULL,
                               "0", "0"};
        return rows(4, 1, cells, 0);
    }
    if (strstr(sql, "FROM aliases WHERE account_id")) {
        const char *id = account(v[1]);
        const char *cells[] = {"1"};
        return rows(1, id && !strcmp(id, v[0]) ? 1 : 0, cells, 0);
    }
    if (strstr(sql, "pgmail_rcpt_lookup")) {
        const char *msg = NULL;
        if (!strcmp(v[2], "true")) {
            snprintf(cell[0], sizeof cell[0], "%lld", next_id++);
            msg = cell[0];
        }
        const char *timeout = fail_at % 3 == 2 ? "30s" : "0";
        if (strcmp(v[1], "example.test") != 0) { /* remote: a row only for AUTH ($5) */
            /* room for two remote recipients per transaction */
            const char *cells[] = {NULL, NULL, NULL, NULL, timeout, msg, NULL, "2"};
            return rows(8, v[4] ? 1 : 0, cells, 0);
        }
        const char *id = account(v[0]);
        const char *cells[] = {
            "1", id, id && !strcmp(id, "3") ? "100" : NULL, "0", timeout, msg, id ? NULL : "t",
            NULL};
        return rows(8, 1, cells, 0);
    }
    if (strstr(sql, "FROM domains ORDER BY")) {
        const char *cells[] = {"example.test"};
        return rows(1, 1, cells, 0);
    }
    if (strstr(sql, "set_config")) {
        const char *cells[] = {"0", "0"};
        return rows(strstr(sql, "current_setting") ? 2 : 1, 1, cells, 0);
    }
    if (!strncmp(sql, "COPY", 4)) {
        copying = 1;
        copy_done = 0;
        return PQmakeEmptyPGresult(NULL, PGRES_COPY_IN);
    }
    if (strstr(sql, "pgmail_deliver_later")) {
        const char *cells[] = {v[0]};
        return rows(1, 1, cells, 0);
    }
    if (strstr(sql, "pgmail_deliver_notice")) { /* the notice of unknown recipients */
        const char *cells[] = {"7"};
        return rows(1, 1, cells, 0);
    }
    if (strstr(sql, "pgmail_pop3_open")) {
        size_t total = strlen(bodies[0]) + strlen(bodies[1]) + strlen(bodies[2]);
        snprintf(cell[0], sizeof cell[0], "%zu", total);
        const char *cells[] = {"t", "3", cell[0], "12"};
        return rows(4, 1, cells, 0);
    }
    if (strstr(sql, "SELECT id, size FROM mailbox")) {
        for (int i = 0; i < 3; i++)
            snprintf(cell[i], sizeof cell[i], "%zu", strlen(bodies[i]));
        const char *cells[] = {"10", cell[0], "11", cell[1], "12", cell[2]};
        return rows(2, 3, cells, 0);
    }
    if (strstr(sql, "substring(m.body")) {
        long id = strtol(v[0], NULL, 10) - 10, from = strtol(v[2], NULL, 10) - 1;
        long len = strtol(v[3], NULL, 10);
        if (id < 0 || id > 2)
            return rows(1, 0, NULL, 1);
        const char *b = bodies[id];
        long blen = (long)strlen(b);
        if (from > blen)
            from = blen;
        if (len > blen - from)
            len = blen - from;
        PGresult *r = rows(1, 1, (const char *[]){""}, 1);
        PQsetvalue(r, 0, 0, (char *)b + from, (int)len);
        return r;
    }
    if (strstr(sql, "DELETE FROM mailbox") || strstr(sql, "FOR UPDATE")) {
        int k = array_len(v[strstr(sql, "DELETE FROM mailbox") ? 1 : 0]);
        const char *cells[] = {"1", "2", "3"};
        return rows(1, k < 3 ? k : 3, cells, 0);
    }
    if (strstr(sql, "DELETE FROM messages"))
        return command_ok();
    if (strstr(sql, "pgmail_auth_failure")) /* shared/auth.c after a failed login */
        return rows(1, 1, (const char *[]){""}, 0);
    fprintf(stderr, "memstore: statement not taught: %s\n", sql);
    abort();
}

PGconn *PQconnectdbParams(const char *const *keys, const char *const *values, int expand)
{
    (void)keys, (void)values, (void)expand;
    connected = fail_at != 1; /* fail_at 1: the database cannot be reached at all */
    return (PGconn *)&fake_conn;
}

ConnStatusType PQstatus(const PGconn *conn)
{
    (void)conn;
    return connected ? CONNECTION_OK : CONNECTION_BAD;
}

char *PQerrorMessage(const PGconn *conn)
{
    (void)conn;
    return (char *)"memstore: injected failure\n";
}

void PQfinish(PGconn *conn)
{
    (void)conn;
    connected = 0;
}

PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
    (void)conn;
    return in_tx ? PQTRANS_INTRANS : PQTRANS_IDLE;
}

int PQputCopyData(PGconn *conn, const char *buf, int n)
{
    (void)conn, (void)buf, (void)n;
    return copying ? 1 : -1;
}

int PQputCopyEnd(PGconn *conn, const char *error)
{
    (void)conn, (void)error;
    copying = 0;
    copy_done = 1;
    copy_failed = ++statements == fail_at;
    return 1;
}

PGresult *PQgetResult(PGconn *conn)
{
    (void)conn;
    if (!copy_done)
        return NULL;
    copy_done = 0;
    return copy_failed ? PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR) : command_ok();
}
