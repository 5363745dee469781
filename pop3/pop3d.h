/*
 * pop3d.h - pgmail-pop3d's session, mailbox snapshot and module interfaces.
 *
 * One process serves one POP3 session (RFC 1939, RFC 2449 CAPA, RFC 5034 SASL) on fd 0/1.
 * After login the whole session is one database transaction holding a transaction-scoped
 * advisory lock on the mailbox (pg_try_advisory_xact_lock): the lock, "QUIT commits" and
 * "a dropped session changes nothing" are one mechanism, it is released the moment the
 * session ends however it ends, and it works behind PgBouncer in transaction pooling mode,
 * where session-level locks would leak between clients. Login reads the maildrop's totals
 * and highest mailbox id; the message list (ids and sizes up to that id) is read on the
 * first command that needs message numbers. Mail that arrives later is shown in the next
 * session. A database failure after login (the connection lost, a statement failed: the
 * transaction is gone or aborted either way) ends the session with -ERR [SYS/TEMP] and
 * changes nothing.
 *
 * The files form a tree; each calls only files below it:
 *
 *   main.c       pgmail-pop3d's main
 *   session.c    start-up, the command loop, the end (log and exit status)
 *   commands.c   the command table, the dispatcher, CAPA
 *   login.c      USER, PASS, AUTH PLAIN, STLS; taking the maildrop (pop3_login)
 *   retr.c       RETR, TOP
 *   mailbox.c    STAT, LIST, UIDL, DELE, RSET, NOOP, QUIT and the UPDATE state it runs
 *   reply.c      every reply text (one vocabulary, with the RFC 2449/3206 response codes)
 *   sql.c        every SQL statement
 *
 * (session.c calls commands.c and reply.c; commands.c the three handler files and reply.c;
 * retr.c calls mailbox.c for message numbers and the end of a session whose database
 * failed; login.c and mailbox.c call only reply.c and sql.c.)
 */
#ifndef PGMAIL_POP3D_H
#define PGMAIL_POP3D_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "io.h"
#include "mail_limits.h"
#include "peer.h"
#include "reply.h"

enum pop3_state { ST_AUTHORIZATION = 1, ST_TRANSACTION = 2 };

struct pop3_msg {
    long long id;   /* mailbox row id: the UIDL */
    long long size; /* octets as RETR sends them before dot-stuffing */
    int deleted;
};

struct pop3_session {
    struct config cfg;
    struct peer peer;
    struct io io;
    struct db db;
    enum pop3_state state;
    char user[LIM_PATH + 1]; /* from USER, or the logged-in user */
    char account[24];        /* account id once logged in */
    int auth_failures, errors, quit;
    const char *end_reason; /* for the disconnect log when a command ended it, else NULL */
    int temp_failure;       /* a temporary failure was answered (see session.c, exit status) */
    int logged_out;         /* the logout event was logged (by QUIT) */
    int tls_ready;          /* a certificate is loaded: STLS can be offered */
    /* The maildrop fixed at login: its totals and highest mailbox id. The list itself
     * (msgs) is read on the first command that needs message numbers (pop3_listed). */
    size_t nmsgs;
    long long octets, last_id;
    int listed;
    struct pop3_msg *msgs;
    long retrieved, deleted_count;
    long long bytes_sent;
};

/* ---- session.c ---- */

/* pop3_serve: run one whole session on fd 0/1. Returns the exit status: HANDLER_EXIT_OK,
 * HANDLER_EXIT_TEMP or HANDLER_EXIT_PERM (handler.h; admin/man/pgmail-pop3d.8). */
int pop3_serve(void);

/* ---- commands.c ---- */

/* pop3_dispatch: run one command line (CRLF stripped) through the command table. */
void pop3_dispatch(struct pop3_session *s, char *line);

/* pop3_count_error: one more protocol error; at LIM_POP3_ERRORS say so and end. */
void pop3_count_error(struct pop3_session *s);

/* handlers, one signature: argc/argv are the arguments after the verb; 0 ok, -1 error */
typedef int pop3_handler(struct pop3_session *s, int argc, char **argv);

/* ---- login.c ---- */

pop3_handler pop3_cmd_user, pop3_cmd_pass, pop3_cmd_auth, pop3_cmd_stls;

/* pop3_plaintext_ok: 1 when passwords may be sent on this connection: over TLS, from a
 * loopback peer, or with allow_plaintext_auth. */
int pop3_plaintext_ok(const struct pop3_session *s);

/* ---- retr.c ---- */

pop3_handler pop3_cmd_retr, pop3_cmd_top;

/* ---- mailbox.c ---- */

pop3_handler pop3_cmd_stat, pop3_cmd_list, pop3_cmd_uidl, pop3_cmd_dele, pop3_cmd_rset,
    pop3_cmd_noop, pop3_cmd_quit;

/* pop3_msg_arg: parse a message number argument (reading the list first if need be);
 * returns the message, or NULL after replying -ERR (not a number, no such message, already
 * deleted, or the list could not be read: then the session ends). */
struct pop3_msg *pop3_msg_arg(struct pop3_session *s, const char *arg);

/* pop3_db_failed: a statement of the session's transaction answered st (a failure): the
 * transaction is lost or aborted, so the session cannot go on. Logs event with the
 * database's error, replies -ERR [SYS/TEMP] (reply id r) and ends the session; nothing is
 * removed. Returns -1. */
int pop3_db_failed(struct pop3_session *s, enum db_status st, const char *event,
                   enum pop3_reply_id r);

#endif
