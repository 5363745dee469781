/*
 * smtpd.h - pgmail-smtpd's session, transaction and module interfaces.
 *
 * One process serves one SMTP session (RFC 5321) on fd 0/1 and exits. The session struct
 * lives for the connection; the transaction struct from MAIL to the end of DATA or RSET
 * (OpenSMTPD's split: RSET frees the transaction and nothing else). Memory belongs to one
 * of the two and is freed with it. Where the session stands is one explicit state plus
 * two flags, changed only by smtp_enter; the command table (commands.c) says in which
 * states each command may run.
 */
#ifndef PGMAIL_SMTPD_H
#define PGMAIL_SMTPD_H

#include <stddef.h>

#include "config.h"
#include "db.h"
#include "io.h"
#include "mail_limits.h"
#include "milter.h"
#include "peer.h"

/* One accepted RCPT. Local recipients resolve to one or more accounts (an alias may have
 * several targets), which join the transaction's set of accounts. An unknown local
 * recipient accepted from an authenticated sender has naccounts == 0 and is named in the
 * notice the sender gets (bounce.c). A remote recipient (a domain that is not ours, from
 * an authenticated sender) has remote set and naccounts == 0: it is queued for
 * pgmail-relay with the message (messages.relay_to, migrations/007). */
struct smtp_rcpt {
    char addr[LIM_PATH + 1];
    size_t naccounts;
    int remote;
};

/* The session's state: what the client has done so far (RFC 5321 4.1.4, 3.3). */
enum smtp_state {
    SMTP_CONNECTED, /* greeted by us, no HELO/EHLO yet (again after STARTTLS, RFC 3207 4.2) */
    SMTP_GREETED,   /* after HELO/EHLO: no transaction */
    SMTP_MAIL,      /* MAIL accepted, no recipient yet */
    SMTP_RCPT,      /* at least one RCPT accepted: DATA may follow */
    SMTP_NSTATES
};

/* Flags that hold across states, until STARTTLS restarts the session. */
#define SMTP_F_AUTH 1u /* AUTH succeeded: auth_id and auth_user are set */
#define SMTP_F_TLS  2u /* the stream is encrypted (STARTTLS or implicit TLS) */

/* Why a session ended: its disconnect log and the exit status (session.c's table). */
enum smtp_end {
    END_NONE,          /* still running */
    END_QUIT,          /* QUIT */
    END_EOF,           /* the client went away (also inside DATA or AUTH) */
    END_TIMEOUT,       /* the client sent nothing within smtp_timeout: 421 4.4.2 */
    END_ERRORS,        /* LIM_ERRORS_HARD protocol errors: 421 4.7.0 */
    END_AUTH_FAILURES, /* LIM_AUTH_FAILURES failed AUTHs: 421 4.7.0 */
    END_TLS_FAILED,    /* the STARTTLS handshake failed */
    END_DB,            /* the database could not be reached: 421 4.3.0 */
};

/* A verdict of the milters on a command or a message (milter.c): MK_CONTINUE (nothing
 * said), MK_REJECT, MK_TEMPFAIL, MK_REPLY (text, temporary) or MK_DISCARD; down when it is
 * milter_default_action's, for a milter that is unavailable. */
struct milter_verdict {
    enum milter_kind kind;
    int temporary, down;
    char text[LIM_MILTER_REPLY + 1];
};

/* One milter of the session (milters, in order). */
struct milter_conn {
    char spec[256];    /* as configured: "inet:127.0.0.1:11332", for logs */
    int fd;            /* -1: unavailable (see milter.c) */
    uint32_t actions;  /* negotiated SMFIF_* */
    uint32_t protocol; /* negotiated SMFIP_* */
    int session_done;  /* accepted the connection: no more events */
    int msg_done;      /* done with this message (accepted, refused, or its end) */
    int in_msg;        /* has the message's MAIL: an abort is owed if it ends early */
    int skip_body;     /* answered SMFIR_SKIP */
};

struct smtp_tx {
    char sender[LIM_PATH + 1]; /* "" for the null reverse-path */
    long declared_size;        /* SIZE= (RFC 1870), 0 when not given */
    struct smtp_rcpt *rcpts;
    size_t nrcpts, rcpt_cap;
    long long *accounts; /* distinct account ids, in the order named (accounts.c) */
    size_t naccounts, account_cap;
    size_t *named_by;             /* per account: the index in rcpts of the RCPT that named it first
                                     (envelope.c; account_cap entries) */
    size_t nbounces;              /* unknown local recipients (naccounts == 0, not remote) */
    size_t nremote;               /* remote recipients (remote set) */
    char message_id[24];          /* drawn by the first RCPT lookup; "" until then */
    struct milter_verdict milter; /* the milters' verdict on this message so far */
};

struct smtp_session {
    struct config cfg;
    struct peer peer;
    struct io io;
    struct db db;
    char db_timeout[32];     /* the server's statement_timeout, as the last lookup saw it */
    enum smtp_state state;   /* changed by smtp_enter only */
    unsigned flags;          /* SMTP_F_*, changed by smtp_enter only */
    char helo[LIM_HELO + 1]; /* "" until HELO/EHLO */
    int esmtp;               /* EHLO (not HELO) was used */
    char auth_id[24];        /* account id, "" when not authenticated */
    /* The last MAIL FROM found owned by the account: a client that sends many messages
     * in one session (a submission queue) is asked about it once (RFC 4954: no second
     * AUTH in a session, so the account cannot change). */
    char owned_sender[LIM_PATH + 1];
    char auth_user[LIM_PATH + 1];
    int auth_failures;
    int errors;        /* protocol errors, for the tarpit */
    int quit;          /* end the session after this command (set by smtp_end) */
    enum smtp_end end; /* why, for the log and the exit status */
    int tls_ready;     /* a certificate is loaded: STARTTLS can be offered */
    long messages;     /* stored in this session, for the log */
    char auth_mech[8]; /* PLAIN or LOGIN, for the milters' {auth_type} */
    struct milter_conn milters[LIM_MILTERS];
    size_t nmilters;
    struct milter_verdict milter_session; /* a refusal (or discard) at connect or HELO */
    enum milter_kind milter_down;         /* MK_TEMPFAIL / MK_REJECT once a milter is down
                                             (milter_default_action), else MK_CONTINUE */
    char milter_body[LIM_MILTER_CHUNK];   /* body octets not yet sent to the milters */
    size_t milter_body_len;
    struct smtp_tx tx;
};

/* smtp_serve: run one whole session on fd 0/1 (session.c). Returns the exit status:
 * HANDLER_EXIT_OK, _TEMP or _PERM (handler.h) by the cause that ended it. */
int smtp_serve(void);

/* smtp_end: end the session after the current command, for reason why (state.c). The
 * first reason given is kept. */
void smtp_end(struct smtp_session *s, enum smtp_end why);

/* ---- replies (reply.c): the one vocabulary of replies, with enhanced codes (RFC 3463) */
enum smtp_reply_id {
    R_NONE, /* no reply: in the command table, "allowed" */
    R_GREETING,
    R_BYE,
    R_DONE,
    R_HELO,
    R_EHLO_FIRST,
    R_EHLO_PIPELINING,
    R_EHLO_SIZE,
    R_EHLO_8BITMIME,
    R_EHLO_ENHANCEDSTATUSCODES,
    R_EHLO_STARTTLS,
    R_EHLO_AUTH,
    R_EHLO_LAST,
    R_SENDER_OK,
    R_RCPT_OK,
    R_DATA_GO,
    R_STORED,
    R_VRFY,
    R_HELP,
    R_UNKNOWN,
    R_TOOLONG,
    R_SYNTAX,
    R_NO_ARGS,
    R_NEED_HELO,
    R_NEED_MAIL,
    R_NEED_MAIL_DATA,
    R_NEED_RCPT,
    R_NESTED_MAIL,
    R_IN_TX,
    R_TOO_MANY_RCPT,
    R_NO_USER,
    R_RELAY_DENIED,
    R_OUTBOUND_LIMIT,
    R_QUOTA_RCPT,
    R_QUOTA_DATA,
    R_ALL_GONE,
    R_SIZE,
    R_LOOP,
    R_BARE_LF,
    R_TEMP,
    R_DB_DOWN,
    R_TIMEOUT,
    R_TOO_MANY_ERRORS,
    R_AUTH_ASK_PLAIN,
    R_AUTH_ASK_USER,
    R_AUTH_ASK_PASS,
    R_AUTH_OK,
    R_AUTH_FAILED,
    R_AUTH_TEMP,
    R_AUTH_CANCEL,
    R_AUTH_BAD64,
    R_AUTH_ALREADY,
    R_AUTH_MECH,
    R_AUTH_TLS,
    R_AUTH_LINE,
    R_AUTH_TOO_MANY,
    R_AUTH_REQUIRED,
    R_SENDER_NOT_OWNED,
    R_BAD_PARAM,
    R_BAD_ADDRESS,
    R_BAD_SENDER,
    R_NO_MEMORY,
    R_TLS_GO,
    R_TLS_UNAVAILABLE,
    R_TLS_ALREADY,
    R_MILTER_REJECT,
    R_MILTER_TEMPFAIL,
    R_MILTER_DOWN,
    R_MILTER_DISCARD,
    R_HEADER_SIZE,
};

/* smtp_reply: queue reply id, formatted with the arguments its text expects. Returns 0 for
 * 2xx/3xx replies and -1 for errors, so that a handler can `return smtp_reply(...)` and
 * have errors counted by the dispatcher. */
int smtp_reply(struct smtp_session *s, enum smtp_reply_id id, ...);

/* smtp_reply_text: queue a reply given whole (a milter's, checked by milter_parse: lines
 * joined by CRLF). Returns as smtp_reply. */
int smtp_reply_text(struct smtp_session *s, const char *text);

/* smtp_config_reply: the whole reply line (with CRLF) for a configuration that cannot be
 * loaded, which handler_start sends before a session exists. */
extern const char smtp_config_reply[];

/* ---- commands (commands.c) */
/* smtp_dispatch: parse one command line (CRLF stripped) and run its handler; answers
 * unknown verbs, wrong arity, wrong state and commands not offered itself, from the
 * command table. Counts errors (tarpit). */
void smtp_dispatch(struct smtp_session *s, char *line);

/* smtp_dispatch_error: answer a line the dispatcher cannot parse (too long, NUL) with id,
 * counting it as an error like any other. */
void smtp_dispatch_error(struct smtp_session *s, enum smtp_reply_id id);

/* ---- state (state.c, below every command file) */
/* smtp_enter: the one place where the state and the flags change: move to state to with
 * flags. Leaving a transaction (to SMTP_GREETED or SMTP_CONNECTED) or starting one (to
 * SMTP_MAIL) frees the transaction; SMTP_CONNECTED forgets the HELO name and, unless
 * SMTP_F_AUTH stays in flags, the authenticated user. */
void smtp_enter(struct smtp_session *s, enum smtp_state to, unsigned flags);

/* smtp_tx_reset: end the transaction, freeing what it holds (RSET, the end of DATA): the
 * state goes back to SMTP_GREETED, or stays where it is before any MAIL. */
void smtp_tx_reset(struct smtp_session *s);

/* smtp_need_db: connect to the database if needed. 0, or -1 after answering 421 4.3.0 and
 * ending the session (RFC 5321 3.8: a server that cannot serve says 421). */
int smtp_need_db(struct smtp_session *s);

/* smtp_auth_allowed: passwords may be sent: over TLS, from loopback, or when
 * allow_plaintext_auth is set (RFC 4954 4: no plaintext mechanism without protection). */
int smtp_auth_allowed(const struct smtp_session *s);

/* ---- handlers, one signature: 0 ok, -1 counts as a protocol error */
typedef int smtp_handler(struct smtp_session *s, char *arg);
smtp_handler smtp_cmd_ehlo, smtp_cmd_helo, smtp_cmd_mail, smtp_cmd_rcpt, smtp_cmd_data,
    smtp_cmd_rset, smtp_cmd_noop, smtp_cmd_quit, smtp_cmd_vrfy, smtp_cmd_help, smtp_cmd_auth,
    smtp_cmd_starttls;

/* ---- addresses (address.c) */
/* smtp_parse_path: parse "<path> [params]" after "FROM:"/"TO:" (RFC 5321 4.1.2), allowing
 * an empty path when null_ok. Stores the mailbox (source route dropped) in out and points
 * *params at what follows (or at ""). Returns 0, or -1 for a syntax error. */
int smtp_parse_path(char *arg, int null_ok, char *out, size_t outlen, char **params);

/* smtp_param_next: split the next "KEY[=VALUE]" from *params (space-separated). Returns 1
 * with key/value set (value "" when absent), 0 when none is left. */
int smtp_param_next(char **params, char **key, char **value);

/* smtp_lookup_key: lower-case copy of address for lookups, a quoted local part unquoted
 * ("bob"@x -> bob@x), with the recipient_delimiter extension removed when strip is set
 * (alice+tag@x and "alice+tag"@x -> alice@x). Also returns the domain. */
void smtp_lookup_key(const struct smtp_session *s, const char *addr, int strip, char *key,
                     size_t keylen, const char **domain);

/* ---- streaming a message into the database (store.c) */
struct smtp_store {
    int open;               /* the COPY is under way */
    int txn;                /* in an explicit transaction (else the COPY commits itself) */
    long long bytes;        /* body octets sent so far */
    int timeout_off;        /* statement_timeout was switched off for the COPY */
    char saved_timeout[32]; /* the statement_timeout to restore after the COPY */
    char *accounts;         /* deliver_to, "{1,2}", NULL for none; until store_end/abort */
    char *names;            /* deliver_names, the addresses that named them (text[]) */
    char *relay;            /* relay_to, the remote recipients (text[]), NULL for none */
    size_t count;           /* how many accounts that is (kept for smtp_deliver's log) */
};

/* smtp_store_begin: start the message row (local accounts, remote recipients or both), in
 * an explicit transaction when a notice of unknown recipients or a statement_timeout
 * needs one (st->txn). With head_last the row takes the header section after the body
 * (smtp_store_head_start), for milters that change it at the end. DB_OK, or the failure
 * (then rolled back). */
enum db_status smtp_store_begin(struct smtp_session *s, struct smtp_store *st, int head_last);

/* smtp_store_head_start: the body is complete; what smtp_store_put sends next is the
 * header section, which the database puts before the body (migrations/011). */
enum db_status smtp_store_head_start(struct smtp_session *s, struct smtp_store *st);

/* smtp_store_put: append n octets to the body. DB_OK or DB_TEMP. */
enum db_status smtp_store_put(struct smtp_session *s, struct smtp_store *st, const char *p,
                              size_t n);

/* smtp_store_end: finish the row: without st->txn this commits the message and its
 * delivery; with it, the transaction stays open for smtp_deliver. */
enum db_status smtp_store_end(struct smtp_session *s, struct smtp_store *st);

/* smtp_store_abort: give the message up: end the COPY if needed and roll back. */
void smtp_store_abort(struct smtp_session *s, struct smtp_store *st);

/* ---- the transaction's accounts (accounts.c) */
/* smtp_accounts_reserve: make room for more accounts, so that the next `more` calls of
 * smtp_accounts_add cannot fail. 0, or -1 when out of memory (nothing changed). */
int smtp_accounts_reserve(struct smtp_tx *tx, size_t more);

/* smtp_accounts_add: add account id to the set unless it is there already (room reserved
 * by smtp_accounts_reserve). */
void smtp_accounts_add(struct smtp_tx *tx, long long id);

/* ---- DATA (data.c) and delivery (deliver.c) */
/* smtp_deliver: finish the message smtp_store_begin started (st), whose row delivers itself
 * to its accounts and queues its remote recipients, or open a transaction when st is NULL
 * (no local account and no remote recipient, only unknown ones); store the notice of
 * unknown recipients, if any, and COMMIT. prefix[0..plen) is the start of the message as
 * the client sent it (for the notice), complete when it is all of it. Returns the reply:
 * R_STORED (the id in id; also when some accounts were full or gone: they are bounced
 * from the queue), R_QUOTA_DATA or R_ALL_GONE (no recipient could take it) or R_TEMP;
 * anything but R_STORED has been rolled back. */
enum smtp_reply_id smtp_deliver(struct smtp_session *s, struct smtp_store *st, const char *prefix,
                                size_t plen, int complete, char *id, size_t idlen);

/* smtp_notice_text: the one notice for all unknown recipients of the transaction (those
 * with naccounts == 0), built from the start of the message as the client sent it,
 * msg[0..len) (complete when that is all of it), into out (LIM_NOTICE octets). Returns its
 * length: never more than LIM_NOTICE, every line CRLF-ended, at most 998 octets long and
 * valid UTF-8 (RFC 5322 2.1.1, RFC 6532). */
size_t smtp_notice_text(const struct smtp_session *s, const char *msg, size_t len, int complete,
                        char *out);

/* ---- milters (milter.c). Each event function returns -2 when the command goes on, or
 * the smtp_reply result after saying the milters' refusal (its own reply, 550 5.7.1 or
 * 451 4.7.1; or milter_default_action's for a milter that is down). Without milters
 * configured every one returns -2 at once. */
void smtp_milter_start(struct smtp_session *s); /* connect, negotiate, the connect event */
int smtp_milter_helo(struct smtp_session *s);
int smtp_milter_mail(struct smtp_session *s); /* after tx.sender is set */
int smtp_milter_rcpt(struct smtp_session *s, const char *rcpt);
int smtp_milter_data(struct smtp_session *s);
/* The message's content: the verdict gathers in tx.milter and is said after the final
 * dot (smtp_milter_verdict): the client is sending, and replies come after DATA. */
void smtp_milter_headers(struct smtp_session *s, struct hdrs *h); /* each field, then EOH */
void smtp_milter_body(struct smtp_session *s, const char *p, size_t n);
void smtp_milter_eom(struct smtp_session *s, struct hdrs *h); /* edits are applied to h */
/* smtp_milter_verdict: 0 when the message may be stored, -2 when it is to be discarded,
 * else the refusal has been said (smtp_reply's result). */
int smtp_milter_verdict(struct smtp_session *s);
/* smtp_milter_abort: a transaction ends before its end of message (SMFIC_ABORT); called by
 * smtp_enter. smtp_milter_quit: the session ends. */
void smtp_milter_abort(struct smtp_session *s);
void smtp_milter_quit(struct smtp_session *s);

/* ---- trace fields (trace.c) */
/* smtp_trace_header: the Return-Path and Received fields DATA stores before the message
 * (RFC 5321 4.4), into hdr (cap octets). Returns their length, 0 when they do not fit. */
size_t smtp_trace_header(const struct smtp_session *s, char *hdr, size_t cap);

/* smtp_rfc5322_date: the current time as an RFC 5322 3.3 date-time. */
void smtp_rfc5322_date(char *out, size_t n);

#endif
