/*
 * data.c - the DATA command (RFC 5321 4.1.1.4, 4.5.2 transparency, 4.4 trace fields).
 *
 * The message is read through the shared line reader to the final <CRLF>.<CRLF>, never
 * further: bytes pipelined after it are the next commands. Only a "." line that follows a
 * CRLF-ended line and is itself CRLF-ended ends the data, so the SMTP smuggling variants
 * (<LF>.<LF>, <CR><LF>.<LF>, <LF>.<CR><LF>) are ordinary text. Lines ended by a bare LF are
 * stored with CRLF (bare_newline = normalize) or make the message fail (= reject, 550 5.5.2).
 * Errors are sticky (OpenSMTPD): once the size limit is passed the rest is read and
 * discarded, and the one reply comes after the final dot. Memory is bounded by the size
 * limit plus our two trace headers.
 */
#include "smtpd.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

struct buf {
    char *p;
    size_t len, cap, max;
    int full; /* an append did not fit under max */
};

/* put: append n bytes, growing by doubling up to max (+ slack for our headers). */
static int put(struct buf *b, const char *s, size_t n)
{
    if (b->full || b->len + n > b->max) {
        b->full = 1;
        return -1;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->full = 1;
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

void smtp_rfc5322_date(char *out, size_t n)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    /* RFC 5322 3.3, English names whatever the locale. */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long off = tm.tm_gmtoff / 60;
    snprintf(out, n, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
             off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
}

/* trace: Return-Path (RFC 5321 4.4: added at final delivery) and Received headers. */
static int trace(struct smtp_session *s, struct buf *b)
{
    char date[64], hdr[1024];
    smtp_rfc5322_date(date, sizeof date);
    int n = snprintf(hdr, sizeof hdr,
                     "Return-Path: <%s>\r\n"
                     "Received: from %s (%s)\r\n"
                     "\tby %s (pgmail) with %s id %.16s;\r\n"
                     "\t%s\r\n",
                     s->tx.sender, s->helo, s->peer.addr, s->cfg.hostname,
                     s->auth_id[0] ? "ESMTPA"
                     : s->esmtp    ? "ESMTP"
                                   : "SMTP",
                     s->peer.session, date);
    if (n < 0 || (size_t)n >= sizeof hdr)
        return -1;
    return put(b, hdr, (size_t)n);
}

int smtp_cmd_data(struct smtp_session *s, char *arg)
{
    (void)arg;
    smtp_reply(s, R_DATA_GO);
    static char piece[LIM_DATA_PIECE + 1];
    /* Room for the data limit plus our trace headers (each bounded by 1 KiB). */
    struct buf b = {NULL, 0, 0, (size_t)s->cfg.message_size_limit + 1024, 0};
    enum smtp_reply_id sticky = R_OK;
    if (trace(s, &b) < 0)
        sticky = R_NO_MEMORY;
    size_t hdrlen = b.len;
    int line_start = 1, prev_crlf = 1, in_headers = 1, received = 0;
    long data_bytes = 0;
    for (;;) {
        size_t n;
        enum io_status st = io_getline(&s->io, piece, LIM_DATA_PIECE, &n);
        if (st == IO_TIMEOUT) {
            smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
            log_event(LOG_NOTICE, "data-aborted", "reason=timeout bytes=%ld", data_bytes);
            s->quit = 1;
            free(b.p);
            return 0;
        }
        if (st == IO_EOF || st == IO_ERROR) {
            /* Nothing was acknowledged, so nothing is stored: the client will retry. */
            log_event(LOG_NOTICE, "data-aborted", "reason=disconnect bytes=%ld", data_bytes);
            s->quit = 1;
            free(b.p);
            return 0;
        }
        int whole = st == IO_LINE;
        int crlf = whole && n >= 2 && piece[n - 2] == '\r';
        if (whole && line_start && prev_crlf && crlf && n == 3 && piece[0] == '.')
            break; /* <CRLF>.<CRLF> */
        char *text = piece;
        size_t tlen = whole ? n - 1 - (size_t)crlf : n;
        if (line_start && text[0] == '.') { /* RFC 5321 4.5.2: drop one leading dot */
            text++;
            tlen--;
        }
        if (line_start && in_headers) {
            if (tlen == 0 && whole)
                in_headers = 0;
            else if (tlen >= 9 && strncasecmp(text, "Received:", 9) == 0)
                received++;
        }
        if (whole && !crlf && s->cfg.bare_newline == BARE_REJECT && sticky == R_OK)
            sticky = R_BARE_LF;
        data_bytes += (long)tlen + (whole ? 2 : 0);
        if (sticky == R_OK && data_bytes > s->cfg.message_size_limit)
            sticky = R_SIZE;
        if (sticky == R_OK && (put(&b, text, tlen) < 0 || (whole && put(&b, "\r\n", 2) < 0)))
            sticky = R_NO_MEMORY;
        line_start = whole;
        if (whole)
            prev_crlf = crlf;
    }
    if (sticky == R_OK && received >= LIM_RECEIVED_HOPS)
        sticky = R_LOOP;
    int rc;
    if (sticky != R_OK) {
        log_event(LOG_NOTICE, "message-rejected", "reason=%s bytes=%ld",
                  sticky == R_SIZE      ? "size"
                  : sticky == R_BARE_LF ? "bare-lf"
                  : sticky == R_LOOP    ? "loop"
                                        : "memory",
                  data_bytes);
        rc = smtp_reply(s, sticky);
    } else {
        char id[32];
        enum smtp_reply_id r = smtp_deliver(s, b.p, b.len, hdrlen, id, sizeof id);
        rc = r == R_STORED ? smtp_reply(s, r, id) : smtp_reply(s, r);
    }
    free(b.p);
    smtp_tx_reset(s);
    return rc;
}
