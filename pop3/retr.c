/*
 * retr.c - RETR and TOP (RFC 1939 7 and 11): the stored message, byte for byte, dot-stuffed
 * and ended with ".".
 *
 * The body is streamed from the database in CHUNK-octet slices, so the process's memory
 * stays far below the message size however large it is. The stored message has CRLF line
 * ends (the SMTP side made sure), so the octets sent before stuffing equal the stored size
 * that LIST and STAT report.
 */
#include "pop3d.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#define CHUNK (256 * 1024)

/* stream: send message m; lines < 0 sends it all, else the header, the blank line and at
 * most lines body lines (TOP). Replies itself; -1 on a database error. */
static int stream(struct pop3_session *s, struct pop3_msg *m, long long lines)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", m->id);
    int line_start = 1, empty_line = 1, in_body = 0, ok_sent = 0;
    long long body_lines = 0, off = 0;
    while (off < m->size && !(lines >= 0 && in_body && body_lines >= lines)) {
        if (s->io.out_error) { /* the client stopped reading: no point in reading on */
            s->quit = 1;
            return -1;
        }
        char from[24], len[24];
        snprintf(from, sizeof from, "%lld", off + 1);
        snprintf(len, sizeof len, "%d", CHUNK);
        const char *vals[4] = {id, s->account, from, len};
        PGresult *res = NULL;
        enum db_status st = db_exec_binary(&s->db, pop3_sql(SQL_CHUNK), 4, vals, NULL, NULL, &res);
        size_t n = st == DB_OK ? (size_t)PQgetlength(res, 0, 0) : 0;
        if (st != DB_OK || n == 0) {
            PQclear(res);
            if (ok_sent) {
                /* Mid-message there is no way to say -ERR: end the session instead, so
                 * the client cannot take a truncated message for a whole one. */
                log_event(LOG_ERR, "retr-failed", "id=%s error=\"%s\"", id, s->db.error);
                s->quit = 1;
                return -1;
            }
            return pop3_err(s, "[SYS/TEMP] Cannot read the message now, try again later");
        }
        if (!ok_sent) {
            pop3_ok(s, "%lld octets", m->size);
            ok_sent = 1;
        }
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
        pop3_ok(s, "0 octets");
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
        return pop3_err(s, "Invalid number of lines");
    return stream(s, m, lines);
}
