/*
 * metrics.h - pgmail-metrics: one HTTP/1.1 request (RFC 9110, RFC 9112) on fd 0/1 per
 * connection, answering GET /metrics in the Prometheus text exposition format (0.0.4).
 *
 * The files form a tree (each calls only those below it):
 *   main.c     start, read the request, answer, exit
 *   -> request.c   the bounded request reader and parser (also a fuzz target)
 *   -> expose.c    the metric table and the text format (escaping, HELP/TYPE)
 *   -> sql.c       every statement (migrations/010's views)
 * Like the mail handlers it never listens, accepts or forks: systemd's
 * pgmail-metrics.socket (Accept=yes) spawns it.
 */
#ifndef PGMAIL_METRICS_H
#define PGMAIL_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "io.h"

/* Bounds of a request (RFC 9112 2.3 and 5 leave them to the server; Prometheus sends a
 * request line and five short headers). Beyond them: 400. */
#define METRICS_LINE_MAX    4096 /* one request or header line, CRLF included */
#define METRICS_HEADERS_MAX 8192 /* the request line and all headers together */
#define METRICS_FIELDS_MAX  64   /* header lines */

enum metrics_method { M_GET, M_HEAD, M_KNOWN, M_UNKNOWN };

struct metrics_request {
    enum metrics_method method;
    int metrics_path; /* the target is /metrics (a query is ignored) */
    int status;       /* what to answer: 200 (go on), 400, 404, 405, 408, 501; 0: no answer */
};

/* metrics_request_read: read and judge one request head from io within timeout_ms in all
 * (not per line: a client trickling headers gets one timeout for the whole head). Fills
 * *req; req->status says what to answer: 200 when a GET or HEAD of /metrics was read,
 * 400 for a malformed or oversized head, 404 for another path, 405 for a method of RFC
 * 9110 other than GET/HEAD, 501 for a method we do not know, 408 on timeout, 0 when the
 * peer left before a whole request (nothing is answered then). */
void metrics_request_read(struct io *io, int timeout_ms, struct metrics_request *req);

/* metrics_write_label: value as a label value of the text format, escaped (\\, \", \n). */
void metrics_write_label(FILE *f, const char *value);

/* metrics_expose: write every metric of the table to f, HELP and TYPE first, the samples
 * from res (columns metric, label, value; NULL: the database was not reachable), then
 * pgmail_database_up (1 when res is not NULL). users: the per-user rows (same columns)
 * or NULL. */
void metrics_expose(FILE *f, const PGresult *res, const PGresult *users);

enum metrics_sql_id {
    METRICS_SQL_ALL,   /* -> metric, label, value: every aggregate sample */
    METRICS_SQL_USERS, /* -> metric, label (address), value: per mailbox */
};

/* metrics_sql: the text of a statement. */
const char *metrics_sql(enum metrics_sql_id id);

#endif
