/*
 * main.c - pgmail-metrics: one HTTP request on fd 0/1, the answer, exit (see metrics.h).
 *
 * Every answer carries Connection: close and a Content-Length (RFC 9112 6.3, 9.6): one
 * request per connection, as the mail handlers serve one session. The body is built in
 * memory first so that its length is known and a database failure in the middle of it
 * never leaves a half-written 200: the database unreachable is still a 200 whose
 * pgmail_database_up is 0, so Prometheus records the outage as a value.
 */
#include "metrics.h"
#include "handler.h"
#include "log.h"

#include <stdlib.h>
#include <syslog.h>

static const char config_error[] =
    "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 500:
        return "Internal Server Error";
    default:
        return "Not Implemented";
    }
}

/* answer: the status line, the headers and (unless HEAD) the body. */
static void answer(struct io *io, int status, const char *type, const char *body, size_t len,
                   int head)
{
    io_printf(io, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\n", status,
              reason(status), type);
    if (status == 405)
        io_puts(io, "Allow: GET, HEAD\r\n");
    io_printf(io, "Content-Length: %zu\r\n\r\n", len);
    if (!head)
        io_put(io, body, len);
}

/* scrape: the exposition body into a malloc'd *body (the caller frees it); -1 when out of
 * memory. Database failures are logged and exported as pgmail_database_up 0. */
static int scrape(struct db *db, int per_user, char **body, size_t *len)
{
    PGresult *all = NULL, *users = NULL;
    enum db_status st = db_exec(db, metrics_sql(METRICS_SQL_ALL), 0, NULL, NULL, NULL, &all);
    if (st == DB_OK && per_user &&
        db_exec(db, metrics_sql(METRICS_SQL_USERS), 0, NULL, NULL, NULL, &users) == DB_NOTFOUND)
        users = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    if (db_failed(st) || (per_user && st == DB_OK && !users)) {
        log_event(LOG_ERR, "db-error", "sqlstate=%s error=\"%s\"", db->sqlstate, db->error);
        PQclear(all);
        all = NULL;
    } else if (st == DB_NOTFOUND) {
        all = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    }
    FILE *f = open_memstream(body, len);
    if (!f) {
        PQclear(all);
        PQclear(users);
        return -1;
    }
    metrics_expose(f, all, per_user ? users : NULL);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    PQclear(all);
    PQclear(users);
    if (bad) {
        free(*body);
        *body = NULL;
    }
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    int usage = handler_args(argc, argv, "pgmail-metrics", "HTTP metrics", "pgmail-metrics(8)");
    if (usage)
        return usage;
    static struct config cfg;
    static struct peer peer;
    static struct io io;
    static struct db db;
    if (handler_start("pgmail-metrics", &cfg, &peer, &io, &db, config_error) < 0)
        return HANDLER_EXIT_PERM;
    struct metrics_request req;
    metrics_request_read(&io, (int)(cfg.metrics_timeout * 1000), &req);
    /* The reader left the time still left of the head's as the write timeout: give the
     * answer a whole one. */
    io_set_timeout(&io, (int)(cfg.metrics_timeout * 1000));
    int rc = HANDLER_EXIT_OK;
    if (req.status == 200) {
        char *body = NULL;
        size_t len = 0;
        if (scrape(&db, cfg.metrics_per_user, &body, &len) < 0) {
            answer(&io, 500, "text/plain", "", 0, req.method == M_HEAD);
            rc = HANDLER_EXIT_TEMP;
        } else {
            answer(&io, 200, "text/plain; version=0.0.4; charset=utf-8", body, len,
                   req.method == M_HEAD);
        }
        free(body);
    } else if (req.status) {
        static const char text[] = "see pgmail-metrics(8): GET /metrics\n";
        answer(&io, req.status, "text/plain", text, sizeof text - 1, req.method == M_HEAD);
    }
    io_flush(&io);
    log_event(LOG_INFO, "request", "status=%d", req.status);
    db_close(&db);
    return req.status == 408 ? HANDLER_EXIT_TEMP : rc;
}
