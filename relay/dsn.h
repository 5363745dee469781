/*
 * dsn.h - delivery status notifications (RFC 3464, RFC 3461 6), composed by pgmail-relay.
 *
 * A DSN is multipart/report; report-type=delivery-status, from MAILER-DAEMON@<hostname>
 * with the null reverse-path: a human-readable first part in the original project's plain
 * words ("Your email to X was not delivered.", the reason, the remote server's reply), a
 * message/delivery-status part (Reporting-MTA, Arrival-Date; per recipient
 * Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
 * Will-Retry-Until for delays), then the original headers (text/rfc822-headers).
 * Composition only: no I/O, no database (the scheduler stores it: pgmail_store_dsn).
 */
#ifndef PGMAIL_RELAY_DSN_H
#define PGMAIL_RELAY_DSN_H

#include <stddef.h>

struct relay_dsn_rcpt {
    const char *recipient;  /* the address as queued */
    int delayed;            /* 1: Action: delayed (a warning); 0: Action: failed */
    const char *status;     /* enhanced status code, "5.1.1" */
    const char *remote_mta; /* the host that answered, "" when none did */
    int code;               /* its reply code, 0 when none (then no Diagnostic-Code) */
    const char *reply;      /* its reply text, or our reason when code is 0 */
    long long last_attempt; /* unix time, 0 when never attempted */
};

struct relay_dsn {
    const char *hostname;  /* Reporting-MTA, MAILER-DAEMON@hostname */
    const char *to;        /* the original sender, who gets the DSN */
    long long message_id;  /* the queue id, named in the text and the Message-ID */
    long long arrival;     /* unix time the message arrived */
    long long retry_until; /* unix time: Will-Retry-Until of delayed recipients */
    const struct relay_dsn_rcpt *rcpts;
    size_t n;
    const char *headers; /* the original message's header section, as stored */
    size_t headers_len;
};

/* relay_dsn_headers: the length of the header section at the start of body[0..len) (up to
 * and including the empty line, or all of it when there is none), for text/rfc822-headers. */
size_t relay_dsn_headers(const char *body, size_t len);

/* relay_dsn_compose: the whole DSN (header fields and body, CRLF line ends, every line at
 * most 998 octets), malloc'd, its length in *len. NULL when out of memory. */
char *relay_dsn_compose(const struct relay_dsn *d, size_t *len);

#endif
