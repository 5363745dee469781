/*
 * cmd_abuse.c - pgmailctl abuse list | clear: the failed logins that every handler process
 * and host shares (migrations/012, shared/auth.h).
 *
 * list shows, per client (an IPv4 address or an IPv6 /64) and per login name, the failed
 * logins in the window (auth_window), the last one and what the handlers now do with it:
 * "refused" for a client over auth_source_failures, "refused-if-failed" for a login over
 * auth_account_failures (clients that failed too are refused, others only delayed),
 * "delayed" below. clear forgets failed logins (all, or a client's or a login's) so that an
 * operator can let a locked-out user in before the window has passed. The argument is
 * matched against both clients and logins: neither can be mistaken for the other (a login
 * is an address with "@", a client has none).
 */
#include "admin.h"
#include "fail.h"
#include "mail_limits.h"
#include "sql.h"

#include <stdio.h>
#include <string.h>

/* key: the optional argument, NULL for all; refuses what neither a client nor a login is. */
static int key(int argc, char **argv, const char **out)
{
    *out = argc > 0 ? argv[0] : NULL;
    if (*out && (!**out || strlen(*out) > LIM_PATH))
        return admin_fail("'%.64s' is neither a client address nor a login name", *out);
    return ADMIN_EXIT_OK;
}

int admin_cmd_abuse_list(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *k;
    if (key(argc, argv, &k) != ADMIN_EXIT_OK)
        return ADMIN_EXIT_FAIL;
    char window[24], source[24], account[24];
    snprintf(window, sizeof window, "%ld", ctx->cfg.auth_window);
    snprintf(source, sizeof source, "%ld", ctx->cfg.auth_source_failures);
    snprintf(account, sizeof account, "%ld", ctx->cfg.auth_account_failures);
    return admin_sql_list(&ctx->db, ADMIN_SQL_ABUSE_LIST,
                          (const char *const[]){window, k, source, account}, 4);
}

int admin_cmd_abuse_clear(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *k;
    char n[24];
    if (key(argc, argv, &k) != ADMIN_EXIT_OK ||
        ADMIN_SQL_FIRST(&ctx->db, ADMIN_SQL_ABUSE_CLEAR, n, sizeof n, k) != DB_OK)
        return ADMIN_EXIT_FAIL;
    printf("cleared %s failed logins\n", n);
    return ADMIN_EXIT_OK;
}
