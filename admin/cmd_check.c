/*
 * cmd_check.c - pgmailctl check [--purge-orphans]: is the stored mail consistent?
 *
 * What it looks for: orphaned messages, rows of messages that no mailbox row references.
 * Nobody can read them and nothing ever deletes them: they only take space. pgmail itself
 * no longer makes them (user del and POP3 QUIT free a message under the same row locks, see
 * admin/sql.c), but versions before that could when an account was deleted while another
 * account's POP3 session deleted a message both shared, and a hand-made DELETE FROM mailbox
 * leaves them too. Without the flag, each orphan is listed and the exit status is 1; with
 * --purge-orphans they are deleted (and listed) and the status is 0. Nothing else is
 * touched: a message that any mailbox still holds is never deleted here.
 */
#include "admin.h"
#include "fail.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>

int admin_cmd_check(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int purge = ctx->flag;
    PGresult *res = NULL;
    enum db_status st = admin_sql_run(
        &ctx->db, purge ? ADMIN_SQL_ORPHAN_PURGE : ADMIN_SQL_ORPHAN_LIST, &res, NULL, 0);
    if (admin_sql_failed(st))
        return ADMIN_EXIT_FAIL;
    int n = res ? PQntuples(res) : 0;
    long long octets = 0;
    for (int i = 0; i < n; i++) {
        printf("%sorphaned message %s: %s octets, received %s\n", purge ? "purged " : "",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        octets += strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    if (n == 0)
        printf("no orphaned messages\n");
    if (n == 0 || purge)
        return ADMIN_EXIT_OK;
    return admin_fail("%d orphaned message%s (%lld octets) in no mailbox: "
                      "pgmailctl check --purge-orphans deletes %s",
                      n, n == 1 ? "" : "s", octets, n == 1 ? "it" : "them");
}
