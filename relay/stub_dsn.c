/*
 * stub_dsn.c - TEMPORARY stand-in for relay/dsn.c (written in parallel; see dsn.h), so
 * that the relay core links and its tests run before the real one lands. Delete at merge:
 * the Makefile leaves it out by itself once relay/dsn.c exists.
 *
 * A plain text notice, not RFC 3464: enough for the scheduler's DSN job to store one.
 */
#include "dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t relay_dsn_headers(const char *body, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (body[i] == '\n' && body[i + 1] == '\n')
            return i + 2;
        if (i + 3 < len && memcmp(body + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    }
    return len;
}

char *relay_dsn_compose(const struct relay_dsn *d, size_t *len)
{
    size_t cap = 1024 + d->headers_len;
    for (size_t i = 0; i < d->n; i++)
        cap += 200 + strlen(d->rcpts[i].recipient) + strlen(d->rcpts[i].reply);
    char *s = malloc(cap);
    if (!s)
        return NULL;
    int n = snprintf(s, cap,
                     "From: MAILER-DAEMON@%s\r\nTo: %s\r\nSubject: Delivery Status Notification"
                     "\r\nX-Pgmail-Queue-Id: %lld\r\n\r\n",
                     d->hostname, d->to, d->message_id);
    for (size_t i = 0; i < d->n; i++)
        n += snprintf(s + n, cap - (size_t)n, "%s: %s (%s %d %s)\r\n", d->rcpts[i].recipient,
                      d->rcpts[i].delayed ? "delayed" : "failed", d->rcpts[i].status,
                      d->rcpts[i].code, d->rcpts[i].reply);
    memcpy(s + n, d->headers, d->headers_len);
    *len = (size_t)n + d->headers_len;
    return s;
}
