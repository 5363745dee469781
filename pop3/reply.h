/*
 * reply.h - every reply of pgmail-pop3d (the texts are in reply.c).
 */
#ifndef PGMAIL_POP3_REPLY_H
#define PGMAIL_POP3_REPLY_H

struct pop3_session;

enum pop3_reply_id {
    R_GREETING,
    R_SIGNOFF,
    R_SIGNOFF_LEFT, /* %zu messages left */
    R_UNKNOWN,
    R_BAD_STATE,
    R_ARITY,
    R_LINE_TOO_LONG,
    R_TOO_MANY_ERRORS,
    R_CAPA,
    R_STLS_GO,
    R_TLS_ACTIVE,
    R_TLS_UNAVAILABLE,
    R_PLAINTEXT_REFUSED,
    R_USER_TOO_LONG,
    R_SEND_PASS,
    R_USER_FIRST,
    R_SASL_GO,
    R_SASL_MECH,
    R_SASL_LINE_TOO_LONG,
    R_SASL_CANCELLED,
    R_SASL_BASE64,
    R_AUTH_FAILED,
    R_AUTH_TEMP,
    R_AUTH_REFUSED,
    R_DB_DOWN,
    R_IN_USE,
    R_OPEN_TEMP,
    R_LOGGED_IN, /* %zu messages, %lld octets */
    R_LIST_TEMP,
    R_BAD_NUMBER,
    R_NO_SUCH,
    R_ALREADY_DELETED, /* %zu message number */
    R_COUNTS,          /* %zu message count or number, %lld octets */
    R_UIDL_ONE,        /* %zu message number, %lld unique id */
    R_SCAN_LISTING,
    R_UIDL_LISTING,
    R_DELETED, /* %zu message number */
    R_NOOP,
    R_RETR_GO, /* %lld octets */
    R_TOP_GO,
    R_TOP_LINES,
    R_MSG_GONE, /* %zu message number */
    R_MSG_TEMP,
    R_UPDATE_TEMP,
};

/* pop3_reply: queue reply id, formatted with the arguments its text expects (see the
 * comments above). Returns 0 for +OK (and the SASL continuation), -1 for -ERR, so that a
 * handler can `return pop3_reply(...)` and have its error counted. */
int pop3_reply(struct pop3_session *s, enum pop3_reply_id id, ...);

/* pop3_config_error_line: the whole line (CRLF included) answered when the configuration
 * is bad, before the session starts. */
extern const char pop3_config_error_line[];

#endif
