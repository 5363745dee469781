/*
 * cmd_stats.c - pgmailctl stats [--since DURATION] [--json]: what the mail system did in a
 * window (default the last 24 hours) and how it stands now, for a person (a table) or a
 * script (one JSON object).
 *
 * Mail in, mail out, deferrals, bounces, the top senders and recipients by volume, the
 * queue and the biggest mailboxes, all from one statement (ADMIN_SQL_STATS), which reads the
 * rows still stored and migrations/010's views. Deleted mail (POP3, pruning) is gone from
 * these figures; the counters of pgmail-metrics keep it.
 */
#include "admin.h"
#include "check.h"
#include "fail.h"
#include "sql.h"

#include <stdio.h>
#include <string.h>

/* Columns of ADMIN_SQL_STATS. */
enum { C_ORD, C_SECTION, C_NAME, C_COUNT, C_OCTETS };

/* value: the count or octets of the first row of section, "0" when there is none. */
static const char *value(const PGresult *res, const char *section, const char *name, int col)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (strcmp(PQgetvalue(res, i, C_SECTION), section) == 0 &&
            (!name || strcmp(PQgetvalue(res, i, C_NAME), name) == 0) && !PQgetisnull(res, i, col))
            return PQgetvalue(res, i, col);
    return "0";
}

/* json_string: s as a JSON string (RFC 8259 7). */
static void json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* json_list: the rows of section as [{"address", "messages", "bytes"}, ...]. */
static void json_list(const PGresult *res, const char *key, const char *section)
{
    printf(",\"%s\":[", key);
    int first = 1;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, C_SECTION), section) != 0)
            continue;
        printf("%s{\"address\":", first ? "" : ",");
        json_string(PQgetvalue(res, i, C_NAME));
        printf(",\"messages\":%s,\"bytes\":%s}", PQgetvalue(res, i, C_COUNT),
               PQgetvalue(res, i, C_OCTETS));
        first = 0;
    }
    putchar(']');
}

static void print_json(const PGresult *res, const char *since)
{
    printf("{\"since_seconds\":%s,\"in\":{\"messages\":%s,\"bytes\":%s}", since,
           value(res, "in", NULL, C_COUNT), value(res, "in", NULL, C_OCTETS));
    printf(",\"out\":{\"delivered\":%s,\"deferrals\":%s,\"bounces\":%s}",
           value(res, "out", NULL, C_COUNT), value(res, "deferrals", NULL, C_COUNT),
           value(res, "bounces", NULL, C_COUNT));
    printf(",\"queue\":{\"queued\":%s,\"deferred\":%s,\"held\":%s,"
           "\"oldest_deferred_seconds\":%s}",
           value(res, "queue", "queued", C_COUNT), value(res, "queue", "deferred", C_COUNT),
           value(res, "queue", "held", C_COUNT), value(res, "oldest_deferred", NULL, C_COUNT));
    json_list(res, "top_senders", "sender");
    json_list(res, "top_recipients", "recipient");
    json_list(res, "biggest_mailboxes", "mailbox");
    puts("}");
}

/* table: the rows of section under a heading: octets, messages, address. */
static void table(const PGresult *res, const char *heading, const char *section)
{
    printf("\n%s\n  %14s %10s  %s\n", heading, "bytes", "messages", "address");
    int any = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, C_SECTION), section) != 0)
            continue;
        printf("  %14s %10s  %s\n", PQgetvalue(res, i, C_OCTETS), PQgetvalue(res, i, C_COUNT),
               PQgetvalue(res, i, C_NAME));
        any = 1;
    }
    if (!any)
        puts("  (none)");
}

static void print_table(const PGresult *res, const char *arg)
{
    printf("pgmail stats, the last %s\n\n", arg);
    printf("  mail in      %s messages, %s bytes\n", value(res, "in", NULL, C_COUNT),
           value(res, "in", NULL, C_OCTETS));
    printf("  mail out     %s delivered\n", value(res, "out", NULL, C_COUNT));
    printf("  deferrals    %s\n", value(res, "deferrals", NULL, C_COUNT));
    printf("  bounces      %s\n", value(res, "bounces", NULL, C_COUNT));
    printf("  queue now    %s queued, %s deferred (oldest %s s), %s held\n",
           value(res, "queue", "queued", C_COUNT), value(res, "queue", "deferred", C_COUNT),
           value(res, "oldest_deferred", NULL, C_COUNT), value(res, "queue", "held", C_COUNT));
    table(res, "top senders by volume", "sender");
    table(res, "top recipients by volume", "recipient");
    table(res, "biggest mailboxes", "mailbox");
}

int admin_cmd_stats(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const char *arg = ctx->option ? ctx->option : "24h";
    char since[24];
    if (admin_check_duration(arg, since, sizeof since) < 0)
        return ADMIN_EXIT_USAGE;
    PGresult *res = NULL;
    enum db_status st =
        admin_sql_run(&ctx->db, ADMIN_SQL_STATS, &res, (const char *const[]){since}, 1);
    if (db_failed(st))
        return ADMIN_EXIT_FAIL;
    if (ctx->flag)
        print_json(res, since);
    else
        print_table(res, arg);
    PQclear(res);
    return ADMIN_EXIT_OK;
}
