/*
 * retr.c - RETR and TOP (RFC 1939 7 and 11): the stored message, byte for byte, dot-stuffed
 * and ended with ".".
 *
 * The body is streamed from the database in LIM_POP3_RETR_CHUNK-octet slices, so the
 * process's memory stays far below the message size however large it is. The stored
 * message has CRLF line ends (the SMTP side made sure), so the octets sent before stuffing
 * equal the stored size that LIST and STAT report; TOP's +OK line names no count.
 *
 * A message removed since the list was read (by an administrator, or with its account) is
 * "-ERR Message N no longer exists" and the session goes on; a database failure ends the
 * session (mailbox.c, pop3_db_failed); so does a failure in the middle of a message, where
 * no -ERR can be said any more, so that a client cannot take a cut message for a whole.
 */
#include "pop3d.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* announce: the +OK line before the message: RETR says its octets, TOP no count (only the
 * lines sent decide it). Returns 1. */
static int announce(struct pop3_session *s, const struct pop3_msg *m, long long lines)
{
    if (lines < 0)
        pop3_reply(s, R_RETR_GO, m->size);
    else
        pop3_reply(s, R_TOP_GO);
    return 1;
}

/* stream: send message m; lines < 0 sends it all (RETR), else the header, the blank line
 * and at most lines body lines (TOP). Replies itself; -1 when it could not send it. */
static int stream(struct pop3_session *s, struct pop3_msg *m, long long lines)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", m->id);
    int line_start = 1, empty_line = 1, in_body = 0, ok_sent = 0;
    long long body_lines = 0, off = 0;
    while (off < m->size && !(lines >= 0 && in_body && body_lines >= lines)) {
        if (s->io.out_error) { /* the client went away: no point in reading on */
            s->quit = 1;
            s->end_reason = "write-failed";
            return -1;
        }
        char from[24], len[24];
        snprintf(from, sizeof from, "%lld", off + 1);
        snprintf(len, sizeof len, "%d", LIM_POP3_RETR_CHUNK);
        const char *vals[4] = {id, s->account, from, len};
        PGresult *res = NULL;
        enum db_status st = db_exec_binary(&s->db, pop3_sql(SQL_CHUNK), 4, vals, NULL, NULL, &res);
        size_t n = st == DB_OK ? (size_t)PQgetlength(res, 0, 0) : 0;
        if (st != DB_OK || n == 0) {
            PQclear(res);
            size_t number = (size_t)(m - s->msgs) + 1;
            if (ok_sent) {
                log_event(LOG_ERR, "retr-failed", "id=%s error=\"%s\"", id,
                          st == DB_OK ? "message shorter than its stored size" : s->db.error);
                s->quit = 1;
                s->end_reason = st == DB_LOST ? "db-lost" : "retr-failed";
                return -1;
            }
            if (st == DB_NOTFOUND) {
                log_event(LOG_NOTICE, "retr-gone", "id=%s", id);
                return pop3_reply(s, R_MSG_GONE, number);
            }
            if (st == DB_OK) { /* the stored size is wrong: nothing to send it by */
                log_event(LOG_ERR, "retr-failed", "id=%s error=\"message is empty\"", id);
                return pop3_reply(s, R_MSG_TEMP);
            }
            return pop3_db_failed(s, st, "retr-failed", R_MSG_TEMP);
        }
        if (!ok_sent)
            ok_sent = announce(s, m, lines);
        const char *p = PQgetvalue(res, 0, 0);
        size_t start = 0;
        for (size_t i = 0; i < n; i++) {
            if (line_start && p[i] == '.') { /* RFC 1939 3: byte-stuff a leading dot */
                io_put(&s->io, p + start, i - start);
                io_put(&s->io, ".", 1);
                start = i;
            }
            line_start = p[i] == '\n';
            if (!line_start) {
                if (p[i] != '\r')
                    empty_line = 0;
                continue;
            }
            /* The first empty line ends the header; TOP counts body lines after it. */
            if (!in_body && empty_line)
                in_body = 1;
            else if (in_body)
                body_lines++;
            empty_line = 1;
            if (lines >= 0 && in_body && body_lines >= lines) {
                n = i + 1;
                break;
            }
        }
        io_put(&s->io, p + start, n - start);
        off += (long long)n;
        s->bytes_sent += (long long)n;
        PQclear(res);
    }
    if (!ok_sent) /* an empty message */
        announce(s, m, lines);
    io_puts(&s->io, line_start ? ".\r\n" : "\r\n.\r\n");
    return 0;
}

int pop3_cmd_retr(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    struct pop3_msg *m = pop3_msg_arg(s, argv[0]);
    if (!m)
        return -1;
    int rc = stream(s, m, -1);
    if (rc == 0)
        s->retrieved++;
    return rc;
}

int pop3_cmd_top(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    struct pop3_msg *m = pop3_msg_arg(s, argv[0]);
    if (!m)
        return -1;
    char *end;
    errno = 0;
    long long lines = strtoll(argv[1], &end, 10);
    if (errno || end == argv[1] || *end || lines < 0)
        return pop3_reply(s, R_TOP_LINES);
    return stream(s, m, lines);
}
