/*
 * pop3d.h - pgmail-pop3d's session, mailbox snapshot and module interfaces.
 *
 * One process serves one POP3 session (RFC 1939, RFC 2449 CAPA, RFC 5034 SASL) on fd 0/1.
 * After login the whole session is one database transaction holding a transaction-scoped
 * advisory lock on the mailbox (pg_try_advisory_xact_lock): the lock, "QUIT commits" and
 * "a dropped session changes nothing" are one mechanism, it is released the moment the
 * session ends however it ends, and it works behind PgBouncer in transaction pooling mode,
 * where session-level locks would leak between clients. The message list (ids and sizes)
 * is read once at login: mail that arrives later is shown in the next session.
 */
#ifndef PGMAIL_POP3D_H
#define PGMAIL_POP3D_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "io.h"
#include "mail_limits.h"
#include "peer.h"

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

/* pop3_serve: run one whole session on fd 0/1 (session.c). Returns the exit status. */
int pop3_serve(void);

/* pop3_ok / pop3_err: queue "+OK text" / "-ERR text" (printf-style). pop3_err returns -1 so
 * that handlers can `return pop3_err(...)` and have the error counted. */
int pop3_ok(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int pop3_err(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* pop3_dispatch: run one command line (CRLF stripped) through the command table. */
void pop3_dispatch(struct pop3_session *s, char *line);

/* pop3_count_error: one more protocol error; at LIM_POP3_ERRORS say so and end. */
void pop3_count_error(struct pop3_session *s);

/* handlers, one signature: argc/argv are the arguments after the verb; 0 ok, -1 error */
typedef int pop3_handler(struct pop3_session *s, int argc, char **argv);
pop3_handler pop3_cmd_user, pop3_cmd_pass, pop3_cmd_auth, pop3_cmd_capa, pop3_cmd_quit,
    pop3_cmd_stat, pop3_cmd_list, pop3_cmd_uidl, pop3_cmd_dele, pop3_cmd_rset, pop3_cmd_noop,
    pop3_cmd_retr, pop3_cmd_top, pop3_cmd_stls;

/* pop3_login: after a good password: open the session transaction, take the mailbox lock
 * and read the maildrop's totals. Replies itself (+OK, -ERR [IN-USE], -ERR [SYS/TEMP]). */
int pop3_login(struct pop3_session *s);

/* pop3_listed: make sure the message list is read (once per session). 0, or -1 after
 * replying -ERR [SYS/TEMP]. */
int pop3_listed(struct pop3_session *s);

/* pop3_update: the UPDATE state (RFC 1939 6): remove the messages marked deleted and
 * commit. Returns 0 and replies +OK, or -1 after replying -ERR (nothing removed). */
int pop3_update(struct pop3_session *s);

/* pop3_msg_arg: parse a message number argument; returns the message, or NULL after
 * replying -ERR (not a number, no such message, already deleted). */
struct pop3_msg *pop3_msg_arg(struct pop3_session *s, const char *arg);

/* pop3_plaintext_ok: 1 when passwords may be sent on this connection: over TLS, from a
 * loopback peer, or with allow_plaintext_auth. */
int pop3_plaintext_ok(const struct pop3_session *s);

#endif
