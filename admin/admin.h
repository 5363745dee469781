/*
 * admin.h - what the parts of pgmailctl share: the run context, exit codes, error reporting
 * and the command handlers that the command table in pgmailctl.c dispatches to.
 *
 * Invariants: a handler gets its positional arguments already counted against the table
 * (argc is within the command's bounds) and a connected database; it returns an ADMIN_EXIT
 * code and has reported any failure as exactly one line on stderr, "pgmailctl: ...".
 * Successful commands are silent on stdout except for listings and notable side effects.
 */
#ifndef PGMAIL_ADMIN_H
#define PGMAIL_ADMIN_H

#include "check.h"
#include "config.h"
#include "db.h"
#include "sql.h"

enum admin_exit {
    ADMIN_EXIT_OK = 0,    /* done */
    ADMIN_EXIT_FAIL = 1,  /* the command failed; one line on stderr says why */
    ADMIN_EXIT_USAGE = 2, /* bad usage or bad configuration */
};

struct admin_ctx {
    struct config cfg;
    struct db db;
    const char *option; /* value of the command's option (--quota), NULL when not given */
};

/* admin_fail: print "pgmailctl: " and the formatted text as one line on stderr.
 * Returns ADMIN_EXIT_FAIL, so that handlers can write `return admin_fail(...)`. */
int admin_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Command handlers (argv holds only the positional arguments, argv[argc] == NULL). */
int admin_cmd_migrate(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_domain_add(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_domain_del(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_domain_list(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_add(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_import(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_passwd(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_del(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_list(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_user_quota(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_add(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_del(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_list(struct admin_ctx *ctx, int argc, char **argv);

/* admin_domain_find: the id (decimal) of local domain name, which must be valid and
 * lower-case. With lock, the domain row is locked FOR UPDATE (inside a transaction), which
 * serialises every change to the domain's accounts and aliases. Returns ADMIN_EXIT_OK, or
 * ADMIN_EXIT_FAIL after reporting "unknown domain ..." or the database error. */
int admin_domain_find(struct db *db, const char *name, int lock, char *id, size_t idlen);

/* admin_account_find: the id (decimal) of the account with address a (locked FOR UPDATE with
 * lock, inside a transaction). Returns ADMIN_EXIT_OK, or ADMIN_EXIT_FAIL after reporting
 * "unknown user ..." or the database error. */
int admin_account_find(struct db *db, const struct admin_address *a, int lock, char *id,
                       size_t idlen);

/* admin_domain_scoped_list: run listing stmt ($1 = a domain id, or NULL for every domain)
 * for the domain named by argv[0], or for all domains when argc is 0. Returns an ADMIN_EXIT
 * code; an invalid or unknown domain is reported. */
int admin_domain_scoped_list(struct admin_ctx *ctx, enum admin_stmt stmt, int argc, char **argv);

#endif
