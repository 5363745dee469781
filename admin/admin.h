/*
 * admin.h - what pgmailctl.c's command table dispatches to: the run context and the command
 * handlers, one file per command group.
 *
 * The admin files form a tree: each file calls only files below it, never a sibling or a
 * file above (STYLE.md habit 16). Helpers that two commands need live in a file of their own
 * below both (find.c), never in one command file that the other then calls.
 *
 *   pgmailctl.c      main(), the command table, usage
 *   ├── migrate.c    migrate                       (and migrations_gen.c, generated)
 *   ├── cmd_domain.c domain add|del|list
 *   ├── cmd_user.c   user add|import|passwd|del|list|quota|limit
 *   │   └── secret.c passwords and hashes from stdin, without echo
 *   ├── cmd_alias.c  alias add|del|list
 *   ├── cmd_check.c  check [--purge-orphans]: consistency of the stored mail
 *   ├── cmd_queue.c  queue list|show|flush|hold|release|delete|bounce: the outbound queue
 *   ├── cmd_stats.c  stats [--since DURATION] [--json]: traffic, queue, mailboxes
 *   ├── cmd_tls.c    tls rotate-ticket-keys [FILE]: the handlers' ticket keys (no database)
 *   ├── cmd_abuse.c  abuse list|clear [CLIENT|LOGIN]: the failed logins handlers share
 *   │
 *   │   below every command file:
 *   ├── find.c       a domain or an account by name; listings scoped to a domain
 *   ├── check.c      validation of what the operator types (names, addresses, counts, hashes)
 *   ├── sql.c        the statement table and the functions that run it
 *   └── fail.c       exit codes and the one-line failure report; calls no admin file
 *
 * Each file may also call any file lower in the list that it needs (find.c calls check.c,
 * sql.c and fail.c; check.c and sql.c call fail.c) and shared/ (db.c, auth.c, config.c,
 * log.c), which calls back into none of them.
 *
 * Invariants: a handler gets its positional arguments already counted against the table
 * (argc is within the command's bounds) and a connected database; it returns an ADMIN_EXIT
 * code and has reported any failure as exactly one line on stderr, "pgmailctl: ...".
 * Successful commands are silent on stdout except for listings and notable side effects.
 */
#ifndef PGMAIL_ADMIN_H
#define PGMAIL_ADMIN_H

#include "config.h"
#include "db.h"

struct admin_ctx {
    struct config cfg;
    struct db db;
    const char *option; /* value of the command's option (--quota), NULL when not given */
    int flag;           /* the command's flag (--purge-orphans, --all) was given */
};

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
int admin_cmd_user_limit(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_add(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_del(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_alias_list(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_check(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_list(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_show(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_flush(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_hold(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_release(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_delete(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_queue_bounce(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_stats(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_tls_rotate(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_abuse_list(struct admin_ctx *ctx, int argc, char **argv);
int admin_cmd_abuse_clear(struct admin_ctx *ctx, int argc, char **argv);

#endif
