/*
 * mailbox.c - the TRANSACTION state on the snapshot taken at login (RFC 1939 5), QUIT and
 * the UPDATE state it runs (RFC 1939 6).
 *
 * Sizes come from the stored sizes (exact octets RETR sends, CRLF line ends, before
 * dot-stuffing); no body is read for STAT, LIST or UIDL. DELE only marks; RSET unmarks;
 * QUIT removes the marked messages and commits, all in the session's one transaction, so a
 * dropped connection, a timeout or a crash removes nothing. A marked message that vanished
 * meanwhile (an administrator removed it, or its account) is no error: the user wanted it
 * gone and it is; the others are removed and QUIT answers +OK. -ERR means that nothing at
 * all was removed (the database failed).
 */
#include "pop3d.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* add_page: append the rows of one SQL_LIST page; 0, or -1 when out of memory. */
static int add_page(struct pop3_session *s, PGresult *res, size_t *cap)
{
    size_t n = (size_t)PQntuples(res);
    if (s->nmsgs + n > *cap) {
        size_t want = *cap ? *cap * 2 : 64;
        while (want < s->nmsgs + n)
            want *= 2;
        struct pop3_msg *grown = realloc(s->msgs, want * sizeof *grown);
        if (!grown)
            return -1;
        s->msgs = grown;
        *cap = want;
    }
    for (size_t i = 0; i < n; i++) {
        struct pop3_msg *m = &s->msgs[s->nmsgs++];
        m->id = strtoll(PQgetvalue(res, (int)i, 0), NULL, 10);
        m->size = strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
        m->deleted = 0;
    }
    return 0;
}

int pop3_db_failed(struct pop3_session *s, enum db_status st, const char *event,
                   enum pop3_reply_id r)
{
    const char *why = st == DB_LOST ? "db-lost" : "db-failed";
    log_event(LOG_WARNING, event, "reason=%s sqlstate=%s error=\"%s\"", why, s->db.sqlstate,
              s->db.error);
    s->quit = 1;
    s->end_reason = why;
    return pop3_reply(s, r);
}

#define STRINGIFY(x) #x
#define AS_TEXT(x)   STRINGIFY(x)

/* listed: make sure the message list is read (once per session). 0, or -1 after the
 * session was ended with -ERR [SYS/TEMP] (it cannot number its messages). The list comes
 * from the session's transaction, under its mailbox lock: db_exec never reads it on a
 * fresh connection after the first one was lost (shared/db.h). */
static int listed(struct pop3_session *s)
{
    if (s->listed)
        return 0;
    size_t counted = s->nmsgs, cap = 0;
    long long octets = 0;
    char after[24] = "0", upto[24];
    snprintf(upto, sizeof upto, "%lld", s->last_id);
    enum db_status st = DB_OK;
    s->nmsgs = 0;
    while (st == DB_OK) {
        const char *vals[4] = {s->account, after, upto, AS_TEXT(LIM_POP3_LIST_PAGE)};
        PGresult *res = NULL;
        st = db_exec(&s->db, pop3_sql(SQL_LIST), 4, vals, NULL, NULL, &res);
        size_t before = s->nmsgs;
        if (st == DB_OK && add_page(s, res, &cap) != 0) {
            st = DB_TEMP;
            snprintf(s->db.error, sizeof s->db.error, "out of memory");
        }
        PQclear(res);
        if (st == DB_OK && s->nmsgs - before < LIM_POP3_LIST_PAGE)
            st = DB_NOTFOUND; /* a short page: that was the last */
        if (st == DB_OK)
            snprintf(after, sizeof after, "%lld", s->msgs[s->nmsgs - 1].id);
    }
    if (st != DB_NOTFOUND) {
        free(s->msgs);
        s->msgs = NULL;
        s->nmsgs = counted;
        return pop3_db_failed(s, st, "list-tempfail", R_LIST_TEMP);
    }
    for (size_t i = 0; i < s->nmsgs; i++)
        octets += s->msgs[i].size;
    if (s->nmsgs != counted || octets != s->octets)
        /* The totals on the account row disagree with its rows (written by something that
         * bypassed pgmail): the rows win, and the log says so. */
        log_event(LOG_WARNING, "totals-mismatch", "counted=%zu listed=%zu octets=%lld/%lld",
                  counted, s->nmsgs, s->octets, octets);
    s->octets = octets;
    s->listed = 1;
    return 0;
}

struct pop3_msg *pop3_msg_arg(struct pop3_session *s, const char *arg)
{
    if (listed(s) != 0)
        return NULL;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] < '0' || arg[0] > '9') {
        pop3_reply(s, R_BAD_NUMBER);
        return NULL;
    }
    if (n == 0 || n > s->nmsgs) {
        pop3_reply(s, R_NO_SUCH);
        return NULL;
    }
    if (s->msgs[n - 1].deleted) {
        pop3_reply(s, R_ALREADY_DELETED, (size_t)n);
        return NULL;
    }
    return &s->msgs[n - 1];
}

int pop3_cmd_stat(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (!s->listed) /* nothing can be marked before the list is read */
        return pop3_reply(s, R_COUNTS, s->nmsgs, s->octets);
    size_t count = 0;
    long long total = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        if (!s->msgs[i].deleted) {
            count++;
            total += s->msgs[i].size;
        }
    return pop3_reply(s, R_COUNTS, count, total);
}

/* listing: LIST and UIDL share their shape; uidl picks the second column. */
static int listing(struct pop3_session *s, int argc, char **argv, int uidl)
{
    if (argc == 1) {
        struct pop3_msg *m = pop3_msg_arg(s, argv[0]);
        if (!m)
            return -1;
        return pop3_reply(s, uidl ? R_UIDL_ONE : R_COUNTS, (size_t)(m - s->msgs) + 1,
                          uidl ? m->id : m->size);
    }
    if (listed(s) != 0)
        return -1;
    pop3_reply(s, uidl ? R_UIDL_LISTING : R_SCAN_LISTING);
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
    return pop3_reply(s, R_DELETED, (size_t)(m - s->msgs) + 1);
}

int pop3_cmd_rset(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; s->listed && i < s->nmsgs; i++)
        s->msgs[i].deleted = 0;
    s->deleted_count = 0;
    return pop3_cmd_stat(s, 0, NULL);
}

int pop3_cmd_noop(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return pop3_reply(s, R_NOOP);
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

/* update: the UPDATE state (RFC 1939 6): remove the messages marked deleted (those still
 * there) and commit. Replies +OK, or -ERR [SYS/TEMP] when nothing could be removed. */
static int update(struct pop3_session *s)
{
    enum db_status st = DB_OK;
    char *ids = NULL, *mids = NULL;
    PGresult *res = NULL;
    long removed = 0;
    if (!db_in_transaction(&s->db)) {
        /* Cannot happen after a login (db.c keeps believing in a lost transaction), but
         * then the transaction and its lock are gone: change nothing. */
        st = DB_LOST;
    } else if (s->deleted_count > 0) {
        ids = id_array(s);
        const char *v1[2] = {s->account, ids};
        st = ids ? db_exec(&s->db, pop3_sql(SQL_DELETE), 2, v1, NULL, NULL, &res) : DB_TEMP;
        if (st == DB_NOTFOUND) { /* every marked message had vanished: nothing to remove */
            st = DB_OK;
        } else if (st == DB_OK) {
            removed = PQntuples(res);
            if (!(mids = message_array(res)))
                st = DB_TEMP;
            const char *v2[1] = {mids};
            if (st == DB_OK)
                st = db_exec(&s->db, pop3_sql(SQL_LOCK_MESSAGES), 1, v2, NULL, NULL, NULL);
            if (st == DB_OK || st == DB_NOTFOUND)
                st = db_exec(&s->db, pop3_sql(SQL_DELETE_ORPHANS), 1, v2, NULL, NULL, NULL);
        }
    }
    if (st == DB_OK)
        st = db_exec(&s->db, pop3_sql(SQL_COMMIT), 0, NULL, NULL, NULL, NULL);
    PQclear(res);
    free(ids);
    free(mids);
    char clean[LIM_PATH + 1];
    log_clean(clean, sizeof clean, s->user);
    s->logged_out = 1;
    if (st != DB_OK) {
        log_event(LOG_WARNING, "logout", "user=%s result=update-failed error=\"%s\"", clean,
                  s->db.error);
        db_rollback(&s->db, pop3_sql(SQL_ROLLBACK));
        if (s->deleted_count > 0)
            return pop3_reply(s, R_UPDATE_TEMP);
        /* Nothing was to be removed: what the client asked for is done. */
        return pop3_reply(s, R_SIGNOFF_LEFT, s->nmsgs);
    }
    log_event(LOG_INFO, "logout", "user=%s retrieved=%ld deleted=%ld vanished=%ld bytes=%lld",
              clean, s->retrieved, removed, s->deleted_count - removed, s->bytes_sent);
    return pop3_reply(s, R_SIGNOFF_LEFT, s->nmsgs - (size_t)s->deleted_count);
}

int pop3_cmd_quit(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    s->quit = 1;
    if (s->state == ST_TRANSACTION)
        return update(s);
    return pop3_reply(s, R_SIGNOFF);
}
