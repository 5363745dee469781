/*
 * pgmailctl.c - the administration CLI of pgmail: main(), the command table and usage.
 *
 *   pgmailctl migrate
 *   pgmailctl domain add|del|list ...
 *   pgmailctl user add|import|passwd|del|list|quota|limit ...
 *   pgmailctl alias add|del|list ...
 *   pgmailctl check [--purge-orphans]
 *   pgmailctl queue list|show|flush|hold|release|delete|bounce ...
 *   pgmailctl stats [--since DURATION] [--json]
 *   pgmailctl tls rotate-ticket-keys [FILE]
 *   pgmailctl abuse list|clear [CLIENT|LOGIN]
 *
 * One static table describes every command: its words, how many positional arguments it
 * takes, the one option with a value and the one flag it accepts, and its usage text. One
 * dispatcher checks all of that before the configuration is read or the database is
 * touched, so handlers only see well formed argument lists. Exit codes: 0 done, 1 failed
 * (one line "pgmailctl: ..." on stderr; for check: problems found), 2 bad usage (usage on
 * stderr) or bad configuration. -h/--help anywhere prints the usage of what came before it
 * on stdout and exits 0.
 */
#include "admin.h"
#include "fail.h"
#include "sql.h"

#include <stdio.h>
#include <string.h>

#define MAX_ARGS 2 /* the most positional arguments any command takes (max below) */

typedef int handler(struct admin_ctx *ctx, int argc, char **argv);

static const struct command {
    const char *group;  /* first word */
    const char *verb;   /* second word, NULL when the group is the command */
    int min, max;       /* positional arguments */
    const char *option; /* the one option that takes a value, or NULL */
    const char *flag;   /* the one option without a value, or NULL */
    handler *run;
    const char *args; /* for the usage line */
    const char *help; /* what it does */
} commands[] = {
    {"migrate", NULL, 0, 0, NULL, NULL, admin_cmd_migrate, "",
     "create or upgrade the database schema (idempotent)"},
    {"domain", "add", 1, 1, NULL, NULL, admin_cmd_domain_add, "NAME", "add a local domain"},
    {"domain", "del", 1, 1, NULL, NULL, admin_cmd_domain_del, "NAME",
     "delete a domain that has no accounts and no aliases"},
    {"domain", "list", 0, 0, NULL, NULL, admin_cmd_domain_list, "", "list the local domains"},
    {"user", "add", 1, 1, "--quota", NULL, admin_cmd_user_add, "ADDRESS [--quota BYTES]",
     "add an account; its password is the first line of stdin (asked twice on a terminal)"},
    {"user", "import", 1, 1, "--quota", NULL, admin_cmd_user_import, "ADDRESS [--quota BYTES]",
     "add an account with an existing crypt(3) hash, read as the first line of stdin"},
    {"user", "passwd", 1, 1, NULL, NULL, admin_cmd_user_passwd, "ADDRESS",
     "set an account's password, read like user add's"},
    {"user", "del", 1, 1, NULL, NULL, admin_cmd_user_del, "ADDRESS",
     "delete an account with its mail and its alias entries"},
    {"user", "list", 0, 1, NULL, NULL, admin_cmd_user_list, "[DOMAIN]",
     "list accounts: address, quota (- for none), used bytes, messages"},
    {"user", "quota", 2, 2, NULL, NULL, admin_cmd_user_quota, "ADDRESS BYTES|none",
     "set or remove an account's quota"},
    {"user", "limit", 2, 2, NULL, NULL, admin_cmd_user_limit, "ADDRESS N|none|default",
     "remote recipients an account may send to per hour (default: max_outbound_per_hour)"},
    {"alias", "add", 2, 2, NULL, NULL, admin_cmd_alias_add, "ALIAS TARGET",
     "deliver mail for ALIAS to the local account TARGET (as well)"},
    {"alias", "del", 1, 2, NULL, NULL, admin_cmd_alias_del, "ALIAS [TARGET]",
     "delete an alias, or only its TARGET"},
    {"alias", "list", 0, 1, NULL, NULL, admin_cmd_alias_list, "[DOMAIN]",
     "list aliases: alias, target"},
    {"check", NULL, 0, 0, NULL, "--purge-orphans", admin_cmd_check, "[--purge-orphans]",
     "look for stored messages in no mailbox (exit 1 when found); delete them with the flag"},
    {"queue", "list", 0, 0, NULL, "--all", admin_cmd_queue_list, "[--all]",
     "outbound recipients not yet finished (all with --all): id, age, sender, recipient,\n"
     "      state, attempts, next attempt, last reply"},
    {"queue", "show", 1, 1, NULL, NULL, admin_cmd_queue_show, "ID",
     "a queued message: envelope, every recipient with its attempts"},
    {"queue", "flush", 0, 1, NULL, NULL, admin_cmd_queue_flush, "[ID]",
     "make queued and deferred recipients (of ID, or all) due now; wakes pgmail-relay"},
    {"queue", "hold", 1, 1, NULL, NULL, admin_cmd_queue_hold, "ID",
     "keep ID's queued and deferred recipients from delivery until queue release"},
    {"queue", "release", 1, 1, NULL, NULL, admin_cmd_queue_release, "ID",
     "make ID's held recipients queued and due now"},
    {"queue", "delete", 1, 1, NULL, NULL, admin_cmd_queue_delete, "ID",
     "remove ID's unfinished recipients without a DSN"},
    {"queue", "bounce", 1, 1, NULL, NULL, admin_cmd_queue_bounce, "ID",
     "give up ID's unfinished recipients now: bounced (5.0.0), pgmail-relay sends the DSN"},
    {"stats", NULL, 0, 0, "--since", "--json", admin_cmd_stats, "[--since DURATION] [--json]",
     "mail in and out, deferrals, bounces, top senders and recipients by volume in the\n"
     "      last DURATION (24h; s, m, h, d, w), the queue and the biggest mailboxes now"},
    {"tls", "rotate-ticket-keys", 0, 1, NULL, NULL, admin_cmd_tls_rotate, "[FILE]",
     "replace FILE (default: tls_ticket_keys) by a new TLS session-ticket key, the current\n"
     "      one kept as the previous; 0600, replaced atomically (no database needed)"},
    {"abuse", "list", 0, 1, NULL, NULL, admin_cmd_abuse_list, "[CLIENT|LOGIN]",
     "failed logins in the window (auth_window) per client and login, and whether\n"
     "      the handlers refuse them"},
    {"abuse", "clear", 0, 1, NULL, NULL, admin_cmd_abuse_clear, "[CLIENT|LOGIN]",
     "forget failed logins (all, a client's or a login's): lifts a refusal"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* usage: print the commands matching group (all when NULL) and verb (all when NULL) to
 * stdout when asked for (returns 0), else to stderr (returns 2). */
static int usage(const char *group, const char *verb, int asked)
{
    FILE *out = asked ? stdout : stderr;
    fputs("usage:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *c = &commands[i];
        if ((group && strcmp(group, c->group) != 0) || (verb && strcmp(verb, c->verb) != 0))
            continue;
        fprintf(out, "  pgmailctl %s%s%s%s%s\n      %s\n", c->group, c->verb ? " " : "",
                c->verb ? c->verb : "", c->args[0] ? " " : "", c->args, c->help);
    }
    if (!group)
        fputs("\nThe database is named by PGMAIL_DATABASE (a libpq conninfo) or libpq's PG*\n"
              "environment; PGMAIL_PASSWORD_SCHEME (yescrypt, sha512crypt, bcrypt) and\n"
              "PGMAIL_PASSWORD_COST choose how passwords are hashed (see pgmail.conf).\n",
              out);
    return asked ? ADMIN_EXIT_OK : ADMIN_EXIT_USAGE;
}

static int is_help(const char *s)
{
    return strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0;
}

/* find: the command for group and verb; *group_known says whether group exists at all. */
static const struct command *find(const char *group, const char *verb, int *group_known)
{
    *group_known = 0;
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].group, group) != 0)
            continue;
        *group_known = 1;
        if (!commands[i].verb || (verb && strcmp(commands[i].verb, verb) == 0))
            return &commands[i];
    }
    return NULL;
}

/* collect: sort the argc words after command c into its option value, its flag and its
 * positional arguments (args, NULL ended). Returns 0, or -1 after reporting what is wrong. */
static int collect(const struct command *c, int argc, char **argv, int *nargs, char **args,
                   const char **option, int *flag)
{
    size_t olen = c->option ? strlen(c->option) : 0;
    for (int i = 0; i < argc; i++) {
        if (c->flag && strcmp(argv[i], c->flag) == 0) {
            *flag = 1;
        } else if (c->option && strncmp(argv[i], c->option, olen) == 0 && argv[i][olen] == '=') {
            *option = argv[i] + olen + 1;
        } else if (c->option && strcmp(argv[i], c->option) == 0) {
            if (++i == argc) {
                admin_fail("%s needs a value", c->option);
                return -1;
            }
            *option = argv[i];
        } else if (strncmp(argv[i], "--", 2) == 0) {
            /* "-x" is left to the argument's own check: "-bad.test" is a bad domain */
            admin_fail("unknown option \"%.40s\"", argv[i]);
            return -1;
        } else if (*nargs == c->max) {
            admin_fail("too many arguments");
            return -1;
        } else {
            args[(*nargs)++] = argv[i];
        }
    }
    args[*nargs] = NULL;
    if (*nargs < c->min) {
        admin_fail("missing argument");
        return -1;
    }
    return 0;
}

/* parse: match argv to a command and collect its arguments. Returns -1 to go on and run
 * *cmd, or the exit code after printing usage. */
static int parse(int argc, char **argv, const struct command **cmd, int *nargs, char **args,
                 const char **option, int *flag)
{
    if (argc < 2)
        return usage(NULL, NULL, 0);
    if (is_help(argv[1]) || strcmp(argv[1], "help") == 0)
        return usage(NULL, NULL, 1);
    int known;
    const char *verb = argc > 2 ? argv[2] : NULL;
    const struct command *c = find(argv[1], verb, &known);
    if (!known) {
        admin_fail("unknown command \"%.40s\"", argv[1]);
        return usage(NULL, NULL, 0);
    }
    if (!c) {
        if (verb && !is_help(verb))
            admin_fail("unknown command \"%s %.40s\"", argv[1], verb);
        return usage(argv[1], NULL, verb && is_help(verb));
    }
    int first = c->verb ? 3 : 2;
    for (int i = first; i < argc; i++)
        if (is_help(argv[i]))
            return usage(c->group, c->verb, 1);
    if (collect(c, argc - first, argv + first, nargs, args, option, flag) != 0)
        return usage(c->group, c->verb, 0);
    *cmd = c;
    return -1;
}

int main(int argc, char **argv)
{
    const struct command *cmd = NULL;
    char *args[MAX_ARGS + 1];
    int nargs = 0;
    const char *option = NULL;
    int flag = 0;
    int rc = parse(argc, argv, &cmd, &nargs, args, &option, &flag);
    if (rc >= 0)
        return rc;
    if (!cmd) /* parse() sets cmd whenever it returns -1; say so to the analyzer */
        return ADMIN_EXIT_USAGE;

    static struct admin_ctx ctx;
    char err[512];
    if (config_load(&ctx.cfg, err, sizeof err) != 0) {
        admin_fail("%s", err);
        return ADMIN_EXIT_USAGE;
    }
    db_init(&ctx.db, ctx.cfg.database, "pgmailctl");
    ctx.option = option;
    ctx.flag = flag;
    /* The tls commands work on local files only: they must run (from a timer) whether or
     * not the database is up. */
    if (strcmp(cmd->group, "tls") == 0)
        rc = cmd->run(&ctx, nargs, args);
    else
        rc = admin_sql_connect(&ctx.db) == 0 ? cmd->run(&ctx, nargs, args) : ADMIN_EXIT_FAIL;
    db_close(&ctx.db);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        admin_fail("cannot write to standard output");
        rc = ADMIN_EXIT_FAIL;
    }
    return rc;
}
