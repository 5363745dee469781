/*
 * cmd_queue.c - pgmailctl queue list|show|flush|hold|release|delete|bounce: the outbound
 * queue (migrations/006) as an operator sees it.
 *
 * An ID is a queue id, which is the message's id (messages.id, what pgmail-smtpd's 250
 * names): a command with an ID works on every recipient of that message. Each command is
 * one statement (delete and bounce: one transaction), so it races with pgmail-relay only
 * row by row; a recipient that a relay is delivering at that moment (a live lease) may
 * still arrive after hold, delete or bounce, and flush leaves it alone. The queue's
 * trigger NOTIFYs pgmail-relay of every row made due (flush, release) or owing a DSN
 * (bounce), so an idle relay acts within a fraction of a second.
 *
 * delete removes the unfinished recipients without any DSN; bounce finishes them as
 * bounced with status 5.0.0 and the reason "deleted by the administrator", and
 * pgmail-relay writes the DSN (none for the null sender). Both then free the message row
 * when nothing needs it any more (pgmail_message_needed), under the same row lock as a
 * POP3 QUIT or user del (admin/sql.c, ADMIN_SQL_ACCOUNT_UNBOX says why).
 */
#include "admin.h"
#include "fail.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* queue_id: arg as a queue id: 1 to 19 digits, no sign, no leading zero, fitting a bigint.
 * Returns 0, or -1 after reporting. */
static int queue_id(const char *arg)
{
    size_t n = strspn(arg, "0123456789");
    if (n == 0 || arg[n] != '\0' || n > 19 || arg[0] == '0' ||
        (n == 19 && strcmp(arg, "9223372036854775807") > 0)) {
        admin_fail("bad queue id \"%.40s\": a message id, as queue list shows", arg);
        return -1;
    }
    return 0;
}

/* count: run a statement that returns one count for queue id id. Returns the count, or -1
 * after a database error (reported). */
static long count(struct db *db, enum admin_stmt stmt, const char *id)
{
    char out[24];
    enum db_status st = ADMIN_SQL_FIRST(db, stmt, out, sizeof out, id);
    return st == DB_OK ? strtol(out, NULL, 10) : -1;
}

/* known: whether queue id id has any queue row. ADMIN_EXIT_OK, or ADMIN_EXIT_FAIL after
 * reporting "unknown queue id" or the database error. */
static int known(struct db *db, const char *id)
{
    enum db_status st = ADMIN_SQL_FIRST(db, ADMIN_SQL_QUEUE_ENVELOPE, NULL, 0, id);
    if (st == DB_NOTFOUND)
        return admin_fail("unknown queue id %s", id);
    return st == DB_OK ? ADMIN_EXIT_OK : ADMIN_EXIT_FAIL;
}

/* done: report what a command changed: "<verb> N recipient(s) of queue id ID", or, when
 * nothing could be, why (exit 1). */
static int done(struct db *db, const char *id, long n, const char *verb, const char *none)
{
    if (n < 0)
        return ADMIN_EXIT_FAIL;
    if (n == 0) {
        if (known(db, id) != ADMIN_EXIT_OK)
            return ADMIN_EXIT_FAIL;
        return admin_fail("queue id %s has no recipient %s", id, none);
    }
    printf("%s %ld recipient%s of queue id %s\n", verb, n, n == 1 ? "" : "s", id);
    return ADMIN_EXIT_OK;
}

int admin_cmd_queue_list(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return admin_sql_list(&ctx->db, ADMIN_SQL_QUEUE_LIST,
                          (const char *const[]){ctx->flag ? "true" : "false"}, 1);
}

/* show_attempts: the attempts of queue row qid, indented under its recipient. */
static void show_attempts(const PGresult *att, const char *qid)
{
    for (int i = 0; i < PQntuples(att); i++) {
        if (strcmp(PQgetvalue(att, i, 0), qid) != 0)
            continue;
        printf("    %s %s", PQgetvalue(att, i, 1), PQgetvalue(att, i, 2));
        for (int c = 3; c <= 5; c++)
            if (!PQgetisnull(att, i, c) && PQgetvalue(att, i, c)[0])
                printf("%s%s", c == 3 ? ": " : c == 4 ? " from " : ", ", PQgetvalue(att, i, c));
        putchar('\n');
    }
}

/* show_rcpt: one recipient (row i of rc): its state and when, then its attempts. */
static void show_rcpt(const PGresult *rc, int i, const PGresult *att)
{
    const char *state = PQgetvalue(rc, i, 2);
    printf("recipient %s: %s, %s attempt%s", PQgetvalue(rc, i, 1), state, PQgetvalue(rc, i, 3),
           strcmp(PQgetvalue(rc, i, 3), "1") == 0 ? "" : "s");
    if (strcmp(state, "queued") == 0 || strcmp(state, "deferred") == 0)
        printf(", next attempt %s", PQgetvalue(rc, i, 4));
    if (!PQgetisnull(rc, i, 5))
        printf(", finished %s", PQgetvalue(rc, i, 5));
    if (!PQgetisnull(rc, i, 6))
        printf(", DSN (%s) to be written", PQgetvalue(rc, i, 6));
    if (!PQgetisnull(rc, i, 7))
        printf(", leased by %s until %s", PQgetvalue(rc, i, 7), PQgetvalue(rc, i, 8));
    putchar('\n');
    show_attempts(att, PQgetvalue(rc, i, 0));
}

int admin_cmd_queue_show(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    const char *id = argv[0];
    PGresult *env = NULL, *rc = NULL, *att = NULL;
    if (queue_id(id) != 0)
        return ADMIN_EXIT_FAIL;
    enum db_status st = ADMIN_SQL(&ctx->db, ADMIN_SQL_QUEUE_ENVELOPE, &env, id);
    if (st == DB_OK)
        st = ADMIN_SQL(&ctx->db, ADMIN_SQL_QUEUE_RECIPIENTS, &rc, id);
    if (st == DB_OK)
        st = ADMIN_SQL(&ctx->db, ADMIN_SQL_QUEUE_ATTEMPTS, &att, id);
    int ret = st == DB_NOTFOUND && !env ? admin_fail("unknown queue id %s", id)
              : admin_sql_failed(st)    ? ADMIN_EXIT_FAIL
                                        : ADMIN_EXIT_OK;
    if (ret == ADMIN_EXIT_OK) {
        printf("queue id %s\nsender: %s\n", id, PQgetvalue(env, 0, 0));
        if (PQgetisnull(env, 0, 1))
            printf("size: - (the message is no longer stored)\n");
        else
            printf("size: %s octets\n", PQgetvalue(env, 0, 1));
        printf("arrival: %s\n", PQgetvalue(env, 0, 2));
        printf("session: %s\n", PQgetisnull(env, 0, 3) ? "-" : PQgetvalue(env, 0, 3));
        for (int i = 0; i < PQntuples(rc); i++)
            show_rcpt(rc, i, att);
    }
    PQclear(env);
    PQclear(rc);
    PQclear(att);
    return ret;
}

int admin_cmd_queue_flush(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *id = argc ? argv[0] : NULL;
    if (id && queue_id(id) != 0)
        return ADMIN_EXIT_FAIL;
    long n = count(&ctx->db, ADMIN_SQL_QUEUE_FLUSH, id);
    if (id)
        return done(&ctx->db, id, n, "flushed", "queued or deferred");
    if (n < 0)
        return ADMIN_EXIT_FAIL;
    printf("flushed %ld recipient%s\n", n, n == 1 ? "" : "s");
    return ADMIN_EXIT_OK;
}

int admin_cmd_queue_hold(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    if (queue_id(argv[0]) != 0)
        return ADMIN_EXIT_FAIL;
    return done(&ctx->db, argv[0], count(&ctx->db, ADMIN_SQL_QUEUE_HOLD, argv[0]), "held",
                "queued or deferred");
}

int admin_cmd_queue_release(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    if (queue_id(argv[0]) != 0)
        return ADMIN_EXIT_FAIL;
    return done(&ctx->db, argv[0], count(&ctx->db, ADMIN_SQL_QUEUE_RELEASE, argv[0]), "released",
                "held");
}

/* finish: delete or bounce (stmt) the unfinished recipients of queue id id, then free the
 * message row when nothing needs it any more, in one transaction. */
static int finish(struct db *db, const char *id, enum admin_stmt stmt, const char *verb)
{
    char ids[32];
    snprintf(ids, sizeof ids, "{%s}", id);
    if (admin_sql_begin(db) != 0)
        return ADMIN_EXIT_FAIL;
    long n = count(db, stmt, id);
    int rc = n < 0 ? ADMIN_EXIT_FAIL : ADMIN_EXIT_OK;
    if (n > 0) {
        enum db_status st = ADMIN_SQL(db, ADMIN_SQL_MESSAGES_LOCK, NULL, ids);
        if (!admin_sql_failed(st))
            st = ADMIN_SQL(db, ADMIN_SQL_MESSAGES_FREE, NULL, ids);
        rc = admin_sql_failed(st) ? ADMIN_EXIT_FAIL : ADMIN_EXIT_OK;
    }
    rc = admin_sql_end(db, rc);
    return rc == ADMIN_EXIT_OK ? done(db, id, n, verb, "left to deliver") : rc;
}

int admin_cmd_queue_delete(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    if (queue_id(argv[0]) != 0)
        return ADMIN_EXIT_FAIL;
    return finish(&ctx->db, argv[0], ADMIN_SQL_QUEUE_DELETE, "deleted");
}

int admin_cmd_queue_bounce(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    if (queue_id(argv[0]) != 0)
        return ADMIN_EXIT_FAIL;
    return finish(&ctx->db, argv[0], ADMIN_SQL_QUEUE_BOUNCE, "bounced");
}
