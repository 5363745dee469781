/*
 * commands.c - the POP3 command table (one row per verb, with the states it is allowed in
 * and its arity) and the one dispatcher, RFC 1939 sections 4-7 and RFC 2449 CAPA.
 *
 * The dispatcher alone matches whole verbs case-insensitively and answers unknown verbs,
 * the wrong state and the wrong number of arguments. Every -ERR counts toward
 * LIM_POP3_ERRORS, after which the session is closed. The handlers live below this file:
 * login.c (AUTHORIZATION), retr.c and mailbox.c (TRANSACTION, and QUIT in both states).
 */
#include "pop3d.h"
#include "log.h"
#include "tls.h"

#include <string.h>
#include <strings.h>
#include <syslog.h>

#define MAX_ARGS 2
enum { REST = -1 }; /* the rest of the line is one argument (PASS may contain spaces) */

static pop3_handler pop3_cmd_capa;

static const struct command {
    const char *verb;
    pop3_handler *fn;
    int states;
    int min, max;
} commands[] = {
    {"USER", pop3_cmd_user, ST_AUTHORIZATION, 1, REST},
    {"PASS", pop3_cmd_pass, ST_AUTHORIZATION, 1, REST},
    {"AUTH", pop3_cmd_auth, ST_AUTHORIZATION, 1, 2},
    {"CAPA", pop3_cmd_capa, ST_AUTHORIZATION | ST_TRANSACTION, 0, 0},
    {"STLS", pop3_cmd_stls, ST_AUTHORIZATION, 0, 0},
    {"QUIT", pop3_cmd_quit, ST_AUTHORIZATION | ST_TRANSACTION, 0, 0},
    {"STAT", pop3_cmd_stat, ST_TRANSACTION, 0, 0},
    {"LIST", pop3_cmd_list, ST_TRANSACTION, 0, 1},
    {"UIDL", pop3_cmd_uidl, ST_TRANSACTION, 0, 1},
    {"RETR", pop3_cmd_retr, ST_TRANSACTION, 1, 1},
    {"TOP", pop3_cmd_top, ST_TRANSACTION, 2, 2},
    {"DELE", pop3_cmd_dele, ST_TRANSACTION, 1, 1},
    {"RSET", pop3_cmd_rset, ST_TRANSACTION, 0, 0},
    {"NOOP", pop3_cmd_noop, ST_TRANSACTION, 0, 0},
};

void pop3_dispatch(struct pop3_session *s, char *line)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    size_t vlen = strcspn(line, " ");
    char *rest = line + vlen;
    if (*rest)
        *rest++ = '\0';
    const struct command *c = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcasecmp(commands[i].verb, line) == 0)
            c = &commands[i];
    int rc;
    if (!c) {
        rc = pop3_reply(s, R_UNKNOWN);
    } else if (!(c->states & s->state)) {
        rc = pop3_reply(s, R_BAD_STATE);
    } else {
        if (c->max == REST) {
            if (*rest)
                argv[argc++] = rest;
        } else {
            /* RFC 1939 3: arguments are separated by single spaces. */
            char *save = NULL;
            for (char *t = strtok_r(rest, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                if (argc == MAX_ARGS) {
                    argc++;
                    break;
                }
                argv[argc++] = t;
            }
        }
        int max = c->max == REST ? 1 : c->max;
        if (argc < c->min || argc > max)
            rc = pop3_reply(s, R_ARITY);
        else
            rc = c->fn(s, argc, argv);
    }
    if (rc < 0)
        pop3_count_error(s);
}

void pop3_count_error(struct pop3_session *s)
{
    if (++s->errors >= LIM_POP3_ERRORS && !s->quit) {
        log_event(LOG_NOTICE, "too-many-errors", "errors=%d", s->errors);
        pop3_reply(s, R_TOO_MANY_ERRORS);
        s->quit = 1;
    }
}

static int pop3_cmd_capa(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* RFC 2449 5. USER and SASL only where a password may be sent. */
    pop3_reply(s, R_CAPA);
    io_puts(&s->io, "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    if (s->state == ST_AUTHORIZATION && s->tls_ready && !tls_active(&s->io))
        io_puts(&s->io, "STLS\r\n"); /* RFC 2595 4 */
    if (s->state == ST_AUTHORIZATION && pop3_plaintext_ok(s))
        io_puts(&s->io, "USER\r\nSASL PLAIN\r\n");
    io_puts(&s->io, "IMPLEMENTATION pgmail\r\n.\r\n");
    return 0;
}
