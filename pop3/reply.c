/*
 * reply.c - every reply pgmail-pop3d can give, in one table, with the response codes of
 * RFC 2449 8 and RFC 3206 where one applies: [IN-USE] (the maildrop is locked by another
 * session), [AUTH] (the credentials, or how they were sent, are at fault), [SYS/TEMP] (a
 * problem of ours that may go away: the database), [SYS/PERM] (one that will not until an
 * operator acts). Texts with % take the arguments named in reply.h. The only other bytes
 * the server sends are the bodies of multi-line answers (CAPA, LIST, UIDL, RETR, TOP).
 */
#include "pop3d.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const replies[] = {
    [R_GREETING] = "+OK pgmail POP3 server ready", /* no APOP timestamp: see login.c */
    [R_SIGNOFF] = "+OK pgmail POP3 server signing off",
    [R_SIGNOFF_LEFT] = "+OK pgmail POP3 server signing off (%zu messages left)",
    [R_UNKNOWN] = "-ERR Unknown command",
    [R_BAD_STATE] = "-ERR Command not valid in this state",
    [R_ARITY] = "-ERR Wrong number of arguments",
    [R_LINE_TOO_LONG] = "-ERR Line too long",
    [R_TOO_MANY_ERRORS] = "-ERR Too many errors, closing connection",
    [R_CAPA] = "+OK Capability list follows",
    [R_STLS_GO] = "+OK Begin TLS negotiation",
    [R_TLS_ACTIVE] = "-ERR TLS already active",
    [R_TLS_UNAVAILABLE] = "-ERR TLS not available",
    [R_PLAINTEXT_REFUSED] =
        "-ERR [AUTH] Plaintext authentication is not allowed on this connection",
    [R_USER_TOO_LONG] = "-ERR User name too long",
    [R_SEND_PASS] = "+OK Send your password",
    [R_USER_FIRST] = "-ERR Send USER first",
    [R_SASL_GO] = "+ ", /* RFC 5034 4: an empty challenge */
    [R_SASL_MECH] = "-ERR Unsupported authentication mechanism",
    [R_SASL_LINE_TOO_LONG] = "-ERR Authentication line too long",
    [R_SASL_CANCELLED] = "-ERR Authentication cancelled",
    [R_SASL_BASE64] = "-ERR Invalid base64 data",
    [R_AUTH_FAILED] = "-ERR [AUTH] Authentication failed",
    [R_AUTH_TEMP] = "-ERR [SYS/TEMP] Temporary authentication failure, try again later",
    /* Too many failed logins from this client (shared/auth.c): [AUTH], not [SYS/TEMP], as
     * nothing of ours is wrong (RFC 3206 4, 5); [LOGIN-DELAY] (RFC 2449 8.1.1) is about
     * logging in too often, not failing. The text says it passes. */
    [R_AUTH_REFUSED] = "-ERR [AUTH] Too many failed logins, try again later",
    [R_DB_DOWN] = "-ERR [SYS/TEMP] Service temporarily unavailable, try again later",
    [R_IN_USE] = "-ERR [IN-USE] Mailbox is locked by another POP3 session",
    [R_OPEN_TEMP] = "-ERR [SYS/TEMP] Cannot open the mailbox now, try again later",
    [R_LOGGED_IN] = "+OK Logged in, %zu messages (%lld octets)",
    [R_LIST_TEMP] = "-ERR [SYS/TEMP] Cannot read the mailbox now, try again later",
    [R_BAD_NUMBER] = "-ERR Invalid message number",
    [R_NO_SUCH] = "-ERR No such message",
    [R_ALREADY_DELETED] = "-ERR Message %zu already deleted",
    [R_COUNTS] = "+OK %zu %lld",
    [R_UIDL_ONE] = "+OK %zu %lld",
    [R_SCAN_LISTING] = "+OK Scan listing follows",
    [R_UIDL_LISTING] = "+OK Unique-ID listing follows",
    [R_DELETED] = "+OK Message %zu deleted",
    [R_NOOP] = "+OK",
    [R_RETR_GO] = "+OK %lld octets",
    /* Only RETR knows the octets it sends: TOP's count depends on where the lines end. */
    [R_TOP_GO] = "+OK Top of message follows",
    [R_TOP_LINES] = "-ERR Invalid number of lines",
    /* Removed since the list was read (an administrator deleted it, or its account): that
     * will not change by trying again. */
    [R_MSG_GONE] = "-ERR Message %zu no longer exists",
    [R_MSG_TEMP] = "-ERR [SYS/TEMP] Cannot read the message now, try again later",
    /* RFC 1939 6: -ERR when some deleted messages could not be removed. */
    [R_UPDATE_TEMP] = "-ERR [SYS/TEMP] Some deleted messages not removed, try again later",
};

const char pop3_config_error_line[] = "-ERR [SYS/PERM] Server configuration error\r\n";

int pop3_reply(struct pop3_session *s, enum pop3_reply_id id, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, id);
    vsnprintf(text, sizeof text, replies[id], ap);
    va_end(ap);
    io_printf(&s->io, "%s\r\n", text);
    /* The exit status follows what the client heard (session.c). */
    if (strstr(replies[id], "[SYS/TEMP]"))
        s->temp_failure = 1;
    return replies[id][0] == '-' ? -1 : 0;
}
