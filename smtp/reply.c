/*
 * reply.c - every reply pgmail-smtpd can give, with its enhanced status code (RFC 3463,
 * RFC 2034 ENHANCEDSTATUSCODES), in one table. Texts with %s take the arguments named in
 * the comment; client text passed in has been validated (printable) by the parser.
 * A multi-line reply (EHLO, RFC 5321 4.2.1) is a run of entries, each line its own:
 * "250-" on all but the last.
 */
#include "smtpd.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const replies[] = {
    [R_GREETING] = "220 %s ESMTP pgmail",        /* hostname */
    [R_BYE] = "221 2.0.0 %s closing connection", /* hostname */
    [R_DONE] = "250 2.0.0 OK",
    [R_HELO] = "250 %s", /* hostname */
    /* EHLO (RFC 5321 4.1.1.1), the extensions in this order: RFC 2920 PIPELINING, RFC 1870
     * SIZE, RFC 6152 8BITMIME, RFC 2034 ENHANCEDSTATUSCODES, RFC 3207 STARTTLS and RFC
     * 4954 AUTH where this session offers them, HELP last. */
    [R_EHLO_FIRST] = "250-%s greets %s", /* hostname, the client's EHLO name */
    [R_EHLO_PIPELINING] = "250-PIPELINING",
    [R_EHLO_SIZE] = "250-SIZE %ld", /* message_size_limit */
    [R_EHLO_8BITMIME] = "250-8BITMIME",
    [R_EHLO_ENHANCEDSTATUSCODES] = "250-ENHANCEDSTATUSCODES",
    [R_EHLO_STARTTLS] = "250-STARTTLS",
    [R_EHLO_AUTH] = "250-AUTH PLAIN LOGIN",
    [R_EHLO_LAST] = "250 HELP",
    [R_SENDER_OK] = "250 2.1.0 Sender OK",
    [R_RCPT_OK] = "250 2.1.5 Recipient OK",
    [R_DATA_GO] = "354 End data with <CR><LF>.<CR><LF>",
    [R_STORED] = "250 2.0.0 OK: message stored as %s", /* message id */
    [R_VRFY] = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
    [R_HELP] = "214 2.0.0 %s", /* the commands this session offers (commands.c) */
    [R_UNKNOWN] = "500 5.5.1 Command unrecognized",
    [R_TOOLONG] = "500 5.5.2 Line too long",
    [R_SYNTAX] = "501 5.5.4 Syntax error in parameters or arguments",
    [R_NO_ARGS] = "501 5.5.4 No parameters allowed",
    [R_NEED_HELO] = "503 5.5.1 Send EHLO or HELO first",
    [R_NEED_MAIL] = "503 5.5.1 Need MAIL before RCPT",
    [R_NEED_MAIL_DATA] = "503 5.5.1 Need MAIL before DATA",
    [R_NEED_RCPT] = "503 5.5.1 Need RCPT before DATA",
    [R_NESTED_MAIL] = "503 5.5.1 Sender already specified",
    [R_IN_TX] = "503 5.5.1 Not allowed during a mail transaction",
    [R_TOO_MANY_RCPT] = "452 4.5.3 Too many recipients",
    [R_NO_USER] = "550 5.1.1 <%s>: Recipient address rejected: user unknown", /* address */
    [R_RELAY_DENIED] = "554 5.7.1 <%s>: Relay access denied",                 /* address */
    /* RFC 3463 3.8: X.7.1 delivery not authorized; 4xx: the hour rolls on. */
    [R_OUTBOUND_LIMIT] =
        "450 4.7.1 <%s>: Too many remote recipients in the last hour, try again later",
    [R_QUOTA_RCPT] = "452 4.2.2 <%s>: Mailbox full", /* address */
    [R_QUOTA_DATA] = "552 5.2.2 Mailbox full: the message would exceed a recipient's quota",
    [R_ALL_GONE] = "550 5.1.1 No such user: the recipients' mailboxes no longer exist",
    [R_SIZE] = "552 5.3.4 Message size exceeds fixed maximum message size",
    [R_LOOP] = "554 5.4.6 Too many Received headers: mail loop detected",
    [R_BARE_LF] = "550 5.5.2 Bare LF line endings are not accepted: send CRLF",
    [R_TEMP] = "451 4.3.0 Temporary failure, please try again later",
    [R_DB_DOWN] = "421 4.3.0 %s Service not available, closing connection",   /* hostname */
    [R_TIMEOUT] = "421 4.4.2 %s Timeout exceeded, closing connection",        /* hostname */
    [R_TOO_MANY_ERRORS] = "421 4.7.0 %s Too many errors, closing connection", /* hostname */
    /* RFC 4954 4 challenges: PLAIN's is empty; LOGIN's are "Username:" and "Password:". */
    [R_AUTH_ASK_PLAIN] = "334 ",
    [R_AUTH_ASK_USER] = "334 VXNlcm5hbWU6",
    [R_AUTH_ASK_PASS] = "334 UGFzc3dvcmQ6",
    [R_AUTH_OK] = "235 2.7.0 Authentication successful",
    [R_AUTH_FAILED] = "535 5.7.8 Authentication credentials invalid",
    [R_AUTH_TEMP] = "454 4.7.0 Temporary authentication failure",
    [R_AUTH_CANCEL] = "501 5.0.0 Authentication cancelled",
    [R_AUTH_BAD64] = "501 5.5.2 Invalid base64 data",
    [R_AUTH_ALREADY] = "503 5.5.1 Already authenticated",
    [R_AUTH_MECH] = "504 5.5.4 Unrecognized authentication mechanism",
    [R_AUTH_TLS] = "538 5.7.11 Encryption required for requested authentication mechanism",
    [R_AUTH_LINE] = "500 5.5.6 Authentication exchange line is too long",
    [R_AUTH_TOO_MANY] = "421 4.7.0 %s Too many authentication failures", /* hostname */
    [R_AUTH_REQUIRED] = "530 5.7.0 Authentication required",
    [R_SENDER_NOT_OWNED] = "553 5.7.1 <%s>: Sender address not owned by user %s",
    [R_BAD_PARAM] = "555 5.5.4 Unsupported parameter %s", /* parameter name */
    /* RFC 3463 3.2: X.1.3 a recipient's address, X.1.7 the sender's. */
    [R_BAD_ADDRESS] = "501 5.1.3 Bad recipient address syntax",
    [R_BAD_SENDER] = "501 5.1.7 Bad sender address syntax",
    [R_NO_MEMORY] = "452 4.3.1 Insufficient system resources",
    [R_TLS_GO] = "220 2.0.0 Ready to start TLS",
    [R_TLS_UNAVAILABLE] = "454 4.7.0 TLS not available",
    [R_TLS_ALREADY] = "503 5.5.1 TLS already active",
    /* Milters (milter.c): Postfix's texts for a milter's plain reject and tempfail; the
     * default action for a milter that is down, when it is reject; RFC 3463 X.7.1. */
    [R_MILTER_REJECT] = "550 5.7.1 Command rejected",
    [R_MILTER_TEMPFAIL] = "451 4.7.1 Service unavailable - try again later",
    [R_MILTER_DOWN] = "550 5.7.1 Content filter unavailable",
    [R_MILTER_DISCARD] = "250 2.0.0 OK: message discarded by a content filter",
    /* RFC 3463 X.3.4 (too big for the system), as for the size; header_size_limit. */
    [R_HEADER_SIZE] = "552 5.3.4 Message header size exceeds limit (%ld octets)",
};

const char smtp_config_reply[] = "421 4.3.5 Server configuration error, closing connection\r\n";

int smtp_reply_text(struct smtp_session *s, const char *text)
{
    io_puts(&s->io, text);
    io_put(&s->io, "\r\n", 2);
    return text[0] == '2' || text[0] == '3' ? 0 : -1;
}

int smtp_reply(struct smtp_session *s, enum smtp_reply_id id, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, id);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int n = vsnprintf(line, sizeof line - 2, replies[id], ap);
#pragma GCC diagnostic pop
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 3)
        n = sizeof line - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    io_put(&s->io, line, (size_t)n);
    return line[0] == '2' || line[0] == '3' ? 0 : -1;
}
