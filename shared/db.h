/*
 * db.h - the PostgreSQL connection of one pgmail process, through libpq.
 *
 * All statements run with PQexecParams: values travel only as parameters (text, or binary
 * where the caller marks one), message bodies go in through COPY and may come back as
 * binary results; statements are never prepared by name and no session state (SET,
 * advisory session locks) is kept, so pgmail works unchanged behind PgBouncer in
 * transaction pooling mode. Every failure is classified here, in one place, from its
 * SQLSTATE: the caller only sees ok / not found / temporary / permanent / lost. Anything
 * unknown is temporary, so that a database problem makes senders retry instead of
 * bouncing mail.
 *
 * Transactions: struct db remembers whether a transaction is open, from what the server
 * said after each statement (BEGIN, a COPY or a failed statement inside a transaction
 * leave one open; COMMIT and ROLLBACK end it), never from a connection that has died. A
 * connection is opened again only between transactions: once it is lost inside one, every
 * statement answers DB_LOST until the caller gives the transaction up with db_rollback or
 * db_close. That way no statement can run on a fresh connection as if it were still part
 * of the transaction (and under its locks) that died with the old one.
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
    DB_LOST = 4,     /* the connection broke: an open transaction is gone with all it did
                        (a COMMIT's outcome is unknown); temporary, and inside a
                        transaction nothing runs again before db_rollback / db_close */
};

struct db {
    PGconn *conn;
    const char *conninfo; /* libpq conninfo or URI; "" = PG* environment */
    const char *appname;
    char sqlstate[6]; /* of the last failure, for logs */
    char error[256];  /* of the last failure, one line, for logs */
    int in_tx;        /* a transaction is believed open (see above) */
};

/* db_init: remember where to connect; nothing is opened until the first db_exec. */
void db_init(struct db *db, const char *conninfo, const char *appname);

/* db_connect: open the connection if it is not open (connect late: a client that leaves
 * before needing the database costs no backend). DB_OK, DB_TEMP (cannot connect), or
 * DB_LOST when the connection died inside a transaction (it is not replaced). */
enum db_status db_connect(struct db *db);

/* db_exec: run sql with n text parameters (vals[i] NULL = SQL NULL; lens/fmts may be NULL,
 * fmts[i] = 1 marks binary). On DB_OK a result with rows is stored in *res (the caller
 * PQclear()s it) when res is not NULL; commands without rows store nothing. A query that
 * returns no row gives DB_NOTFOUND and stores nothing. Failures give DB_TEMP, DB_PERM or
 * DB_LOST, with sqlstate/error filled in, and store nothing. A statement whose command tag
 * is ROLLBACK (a COMMIT of a transaction that an earlier failure aborted) is a failure,
 * DB_TEMP with SQLSTATE 40000: nothing was committed. Roll back with db_rollback. */
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

/* db_copy_put: send n bytes of COPY data. DB_OK, or DB_LOST when the connection failed. */
enum db_status db_copy_put(struct db *db, const char *buf, size_t n);

/* db_copy_end: end the COPY; error != NULL aborts it with that message (nothing is
 * inserted). Returns the COPY's own status: DB_OK when the rows were inserted. */
enum db_status db_copy_end(struct db *db, const char *error);

/* db_in_transaction: 1 when a transaction is believed open (see above): BEGIN was run
 * and neither COMMIT nor ROLLBACK since, also when the connection has died meanwhile. */
int db_in_transaction(const struct db *db);

/* db_rollback: give up the open transaction, if any: run rollback_sql (the program's
 * ROLLBACK statement) on a live connection, or close a lost one (the server rolled back
 * when it died). Afterwards no transaction is open and the next statement may connect. */
void db_rollback(struct db *db, const char *rollback_sql);

/* db_failed: 1 for DB_TEMP, DB_PERM and DB_LOST (the statement did not succeed), 0 for
 * DB_OK and DB_NOTFOUND. */
int db_failed(enum db_status st);

/* db_classify: map a SQLSTATE (NULL when there is none) to DB_TEMP or DB_PERM. */
enum db_status db_classify(const char *sqlstate);

/* db_append: the n octets of s at out + *o (cap octets in all, kept NUL-terminated), *o
 * advanced; for building parameter values. -1 when they do not fit. */
int db_append(char *out, size_t cap, size_t *o, const char *s, size_t n);

/* db_text_array: the n strings elems[i] as a PostgreSQL array literal, for a text[]
 * parameter (each element double-quoted, '"' and '\\' backslash-escaped, a NULL pointer
 * as NULL: "Arrays", "Array Value Input") into out (cap octets, NUL-terminated). Returns
 * the length, 0 when it does not fit; at most n * (2 * longest + 3) + 2 octets. */
size_t db_text_array(char *out, size_t cap, const char *const *elems, size_t n);

/* db_close: close the connection, if open; an open transaction ends with it. */
void db_close(struct db *db);

#endif
