/*
 * mailbox.c - the TRANSACTION state on the snapshot taken at login (RFC 1939 5) and the
 * UPDATE state (RFC 1939 6).
 *
 * Sizes come from the stored sizes (exact octets RETR sends, CRLF line ends, before
 * dot-stuffing); no body is read for STAT, LIST or UIDL. DELE only marks; RSET unmarks;
 * QUIT removes the marked messages and commits, all in the session's one transaction, so a
 * dropped connection, a timeout or a crash removes nothing.
 */
#include "pop3d.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

struct pop3_msg *pop3_msg_arg(struct pop3_session *s, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] < '0' || arg[0] > '9') {
        pop3_err(s, "Invalid message number");
        return NULL;
    }
    if (n == 0 || n > s->nmsgs) {
        pop3_err(s, "No such message");
        return NULL;
    }
    if (s->msgs[n - 1].deleted) {
        pop3_err(s, "Message %llu already deleted", n);
        return NULL;
    }
    return &s->msgs[n - 1];
}

int pop3_cmd_stat(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    size_t count = 0;
    long long total = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        if (!s->msgs[i].deleted) {
            count++;
            total += s->msgs[i].size;
        }
    return pop3_ok(s, "%zu %lld", count, total);
}

/* listing: LIST and UIDL share their shape; uidl picks the second column. */
static int listing(struct pop3_session *s, int argc, char **argv, int uidl)
{
    if (argc == 1) {
        struct pop3_msg *m = pop3_msg_arg(s, argv[0]);
        if (!m)
            return -1;
        return pop3_ok(s, "%zu %lld", (size_t)(m - s->msgs) + 1, uidl ? m->id : m->size);
    }
    pop3_ok(s, "%s", uidl ? "Unique-ID listing follows" : "Scan listing follows");
    for (size_t i = 0; i < s->nmsgs; i++)
        if (!s->msgs[i].deleted)
            io_printf(&s->io, "%zu %lld\r\n", i + 1, uidl ? s->msgs[i].id : s->msgs[i].size);
    io_puts(&s->io, ".\r\n");
    return 0;
}

int pop3_cmd_list(struct pop3_session *s, int argc, char **argv)
{
    return listing(s, argc, argv, 0);
}

/* RFC 1939 7: the mailbox row id is unique within the mailbox, never reused, and 1-20
 * digits (well within 1-70 characters of 0x21-0x7E). */
int pop3_cmd_uidl(struct pop3_session *s, int argc, char **argv)
{
    return listing(s, argc, argv, 1);
}

int pop3_cmd_dele(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    struct pop3_msg *m = pop3_msg_arg(s, argv[0]);
    if (!m)
        return -1;
    m->deleted = 1;
    s->deleted_count++;
    return pop3_ok(s, "Message %zu deleted", (size_t)(m - s->msgs) + 1);
}

int pop3_cmd_rset(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < s->nmsgs; i++)
        s->msgs[i].deleted = 0;
    s->deleted_count = 0;
    return pop3_cmd_stat(s, 0, NULL);
}

int pop3_cmd_noop(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return pop3_ok(s, "%s", "");
}

/* id_array: the ids of the marked messages as a PostgreSQL array literal (malloc'd). */
static char *id_array(const struct pop3_session *s)
{
    char *out = malloc(s->nmsgs * 21 + 3);
    if (!out)
        return NULL;
    size_t len = 0, k = 0;
    out[len++] = '{';
    for (size_t i = 0; i < s->nmsgs; i++)
        if (s->msgs[i].deleted)
            len += (size_t)sprintf(out + len, "%s%lld", k++ ? "," : "", s->msgs[i].id);
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

/* message_array: column 0 of res as an array literal (malloc'd). */
static char *message_array(PGresult *res)
{
    int n = res ? PQntuples(res) : 0;
    char *out = malloc((size_t)n * 21 + 3);
    if (!out)
        return NULL;
    size_t len = 0;
    out[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(out + len, "%s%s", i ? "," : "", PQgetvalue(res, i, 0));
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

int pop3_update(struct pop3_session *s)
{
    enum db_status st = DB_OK;
    char *ids = NULL, *mids = NULL;
    PGresult *res = NULL;
    size_t left = s->nmsgs - (size_t)s->deleted_count;
    if (!db_in_transaction(&s->db)) {
        /* The connection was lost: its transaction (and the lock) ended with it. */
        st = DB_TEMP;
    } else if (s->deleted_count > 0) {
        ids = id_array(s);
        const char *v1[2] = {s->account, ids};
        st = ids ? db_exec(&s->db, pop3_sql(SQL_DELETE), 2, v1, NULL, NULL, &res) : DB_TEMP;
        if (st == DB_OK && (size_t)PQntuples(res) != (size_t)s->deleted_count)
            st = DB_TEMP; /* a marked message vanished under us: change nothing */
        if (st == DB_OK && !(mids = message_array(res)))
            st = DB_TEMP;
        const char *v2[1] = {mids};
        if (st == DB_OK)
            st = db_exec(&s->db, pop3_sql(SQL_LOCK_MESSAGES), 1, v2, NULL, NULL, NULL);
        if (st == DB_OK || st == DB_NOTFOUND)
            st = db_exec(&s->db, pop3_sql(SQL_DELETE_ORPHANS), 1, v2, NULL, NULL, NULL);
    }
    if (st == DB_OK)
        st = db_exec(&s->db, pop3_sql(SQL_COMMIT), 0, NULL, NULL, NULL, NULL);
    PQclear(res);
    free(ids);
    free(mids);
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, s->user);
    if (st != DB_OK) {
        db_exec(&s->db, pop3_sql(SQL_ROLLBACK), 0, NULL, NULL, NULL, NULL);
        log_event(LOG_WARNING, "logout", "user=%s result=update-failed error=\"%s\"", clean,
                  s->db.error);
        /* RFC 1939 6: -ERR when some deleted messages could not be removed. */
        return pop3_err(s, "[SYS/TEMP] Some deleted messages not removed, try again later");
    }
    log_event(LOG_INFO, "logout", "user=%s retrieved=%ld deleted=%ld bytes=%lld", clean,
              s->retrieved, s->deleted_count, s->bytes_sent);
    return pop3_ok(s, "pgmail POP3 server signing off (%zu messages left)", left);
}
