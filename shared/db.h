/*
 * db.h - the PostgreSQL connection of one pgmail process, through libpq.
 *
 * All statements run with PQexecParams: values travel only as parameters (bodies as binary
 * bytea), statements are never prepared by name and no session state (SET, advisory
 * session locks) is kept, so pgmail works unchanged behind PgBouncer in transaction pooling
 * mode. Every failure is classified here, in one place, from its SQLSTATE: the caller only
 * sees ok / not found / temporary / permanent. Anything unknown is temporary, so that a
 * database problem makes senders retry instead of bouncing mail.
 */
#ifndef PGMAIL_DB_H
#define PGMAIL_DB_H

#include <stddef.h>

#include <libpq-fe.h>

enum db_status {
    DB_OK = 0,       /* the statement succeeded (rows, if any, are in *res) */
    DB_NOTFOUND = 1, /* a query succeeded and returned no row */
    DB_TEMP = 2,     /* try again later: connection, resources, serialization, unknown */
    DB_PERM = 3,     /* the statement can never succeed with these values */
};

struct db {
    PGconn *conn;
    const char *conninfo; /* libpq conninfo or URI; "" = PG* environment */
    const char *appname;
    char sqlstate[6]; /* of the last failure, for logs */
    char error[256];  /* of the last failure, one line, for logs */
};

/* db_init: remember where to connect; nothing is opened until the first db_exec. */
void db_init(struct db *db, const char *conninfo, const char *appname);

/* db_connect: open the connection if it is not open (connect late: a client that leaves
 * before needing the database costs no backend). DB_OK or DB_TEMP. */
enum db_status db_connect(struct db *db);

/* db_exec: run sql with n text parameters (vals[i] NULL = SQL NULL; lens/fmts may be NULL,
 * fmts[i] = 1 marks binary). On DB_OK a result with rows is stored in *res (the caller
 * PQclear()s it) when res is not NULL; commands without rows store nothing. A query that
 * returns no row gives DB_NOTFOUND and stores nothing. Failures give DB_TEMP or DB_PERM,
 * with sqlstate/error filled in, and store nothing. */
enum db_status db_exec(struct db *db, const char *sql, int n, const char *const *vals,
                       const int *lens, const int *fmts, PGresult **res);

/* db_exec_binary: db_exec with results in binary format (bytea as raw bytes, no escaping):
 * for message bodies. */
enum db_status db_exec_binary(struct db *db, const char *sql, int n, const char *const *vals,
                              const int *lens, const int *fmts, PGresult **res);

/* db_copy_begin: run a "COPY ... FROM STDIN" statement: DB_OK when the server now waits for
 * data, which db_copy_put sends and db_copy_end finishes. Data streams through libpq's
 * small output buffer, so a message of any size needs no buffer of its own size. */
enum db_status db_copy_begin(struct db *db, const char *sql);

/* db_copy_put: send n bytes of COPY data. DB_OK, or DB_TEMP when the connection failed. */
enum db_status db_copy_put(struct db *db, const char *buf, size_t n);

/* db_copy_end: end the COPY; error != NULL aborts it with that message (nothing is
 * inserted). Returns the COPY's own status: DB_OK when the rows were inserted. */
enum db_status db_copy_end(struct db *db, const char *error);

/* db_in_transaction: 1 when a transaction is open on the connection (BEGIN was run). */
int db_in_transaction(const struct db *db);

/* db_classify: map a SQLSTATE (NULL when there is none) to DB_TEMP or DB_PERM. */
enum db_status db_classify(const char *sqlstate);

/* db_close: close the connection, if open. */
void db_close(struct db *db);

#endif
