/*
 * reply.h - the SMTP client's reply parser (RFC 5321 4.2), apart from client.c so that
 * the one parser every remote reply goes through is a fuzz target too (STYLE.md habit 18;
 * tests/fuzz/fuzz_reply.c).
 *
 * A reply is one or more lines "DDD-text" ending with "DDD text" (or a bare "DDD"), every
 * line with the first one's code. Its text is kept as the lines' texts joined by a space,
 * cut at LIM_REMOTE_REPLY octets, every octet outside printable ASCII made '?' (the text
 * goes into logs, the queue's UTF-8 text columns and DSNs; RFC 5321 4.2 allows no more
 * without SMTPUTF8). Over-long lines are cut at RELAY_REPLY_LINE octets (the rest skipped).
 */
#ifndef PGMAIL_RELAY_REPLY_H
#define PGMAIL_RELAY_REPLY_H

#include "io.h"
#include "mail_limits.h"

/* One reply line kept whole; longer lines are cut (the rest skipped). */
#define RELAY_REPLY_LINE 1024

struct relay_reply {
    int code;        /* the three digits as a number; 0 when none came (text then says why) */
    char status[16]; /* RFC 3463 "X.Y.Z" of the reply's class from its text, else "X.0.0"
                        (empty for a code below 200) */
    char text[LIM_REMOTE_REPLY + 1]; /* the lines' text, joined by a space */
};

/* What the lines after the first of an EHLO reply announce (RFC 5321 4.1.1.1). */
struct relay_ehlo {
    int pipelining, starttls, auth_plain, auth_login;
    int eightbitmime; /* RFC 6152 */
    long long size;   /* RFC 1870 SIZE: its limit (0: none given); -1 when not announced */
};

enum relay_reply_status {
    REPLY_OK = 0,    /* a whole reply, in *r */
    REPLY_MALFORMED, /* a line that is no reply line, or with another code than the first */
    REPLY_TIMEOUT,   /* the reader's timeout (io_set_timeout) passed */
    REPLY_EOF,       /* the peer closed the connection */
    REPLY_FAILED,    /* reading failed */
};

/* relay_reply_read: read one whole reply from io, each line within io's timeout. With ehlo
 * not NULL, the keywords of the lines after the first are noted in *ehlo (only set, never
 * cleared: the caller starts from "none announced"). REPLY_OK with *r filled; otherwise r
 * has code 0 and empty text and status, and the connection is of no further use. */
enum relay_reply_status relay_reply_read(struct io *io, struct relay_reply *r,
                                         struct relay_ehlo *ehlo);

#endif
