/*
 * data.c - the DATA command (RFC 5321 4.1.1.4, 4.5.2 transparency, 4.4 trace fields).
 *
 * The message is read through the shared line reader to the final <CRLF>.<CRLF>, never
 * further: bytes pipelined after it are the next commands. Only a "." line that follows a
 * CRLF-ended line and is itself CRLF-ended ends the data, so the SMTP smuggling variants
 * (<LF>.<LF>, <CR><LF>.<LF>, <LF>.<CR><LF>) are ordinary text. Lines ended by a bare LF are
 * stored with CRLF (bare_newline = normalize) or make the message fail (= reject, 550 5.5.2).
 * By the same rule a leading dot is transparency (4.5.2: removed) only on a line that
 * follows a CRLF; after a bare LF it is text and stored as sent, so "\n.\r\n" keeps its
 * dot instead of becoming an empty line.
 * Errors are sticky (OpenSMTPD): after one, the rest is read and discarded, and the one
 * reply comes after the final dot.
 * The message streams into the database as it arrives (store.c), inside a transaction that
 * only smtp_deliver commits; memory use does not depend on the message size.
 */
#include "smtpd.h"
#include "log.h"

#include <string.h>
#include <strings.h>
#include <syslog.h>

/* keep: append to the prefix kept for the notice of unknown recipients while it has room. */
static void keep(char *prefix, size_t *plen, const char *p, size_t n)
{
    size_t room = LIM_NOTICE_PREFIX - *plen;
    if (n > room)
        n = room;
    memcpy(prefix + *plen, p, n);
    *plen += n;
}

int smtp_cmd_data(struct smtp_session *s, char *arg)
{
    (void)arg;
    static char piece[LIM_DATA_PIECE + 1], prefix[LIM_NOTICE_PREFIX];
    size_t plen = 0;
    /* Open the transaction before 354, so that a database problem is said at once. */
    struct smtp_store store = {0}, *st = s->tx.naccounts || s->tx.nremote ? &store : NULL;
    if (smtp_need_db(s) < 0)
        return -1;
    if (st) {
        char hdr[LIM_TRACE_HEADER];
        size_t hlen = smtp_trace_header(s, hdr, sizeof hdr);
        if (hlen == 0 || smtp_store_begin(s, st) != DB_OK ||
            smtp_store_put(s, st, hdr, hlen) != DB_OK) {
            log_event(LOG_WARNING, "message-failed", "reason=database error=\"%s\"", s->db.error);
            if (st->open)
                smtp_store_abort(s, st);
            return smtp_reply(s, R_TEMP);
        }
    }
    smtp_reply(s, R_DATA_GO);
    enum smtp_reply_id sticky = R_DONE;
    int line_start = 1, prev_crlf = 1, in_headers = 1, received = 0;
    long data_bytes = 0;
    for (;;) {
        size_t n;
        enum io_status io = io_getline(&s->io, piece, LIM_DATA_PIECE, &n);
        if (io == IO_TIMEOUT || io == IO_EOF || io == IO_ERROR) {
            /* Nothing was acknowledged, so nothing is stored: the client will retry. */
            if (io == IO_TIMEOUT)
                smtp_reply(s, R_TIMEOUT, s->cfg.hostname);
            log_event(LOG_NOTICE, "data-aborted", "reason=%s bytes=%ld",
                      io == IO_TIMEOUT ? "timeout" : "disconnect", data_bytes);
            if (st)
                smtp_store_abort(s, st);
            smtp_end(s, io == IO_TIMEOUT ? END_TIMEOUT : END_EOF);
            return 0;
        }
        int whole = io == IO_LINE;
        int crlf = whole && n >= 2 && piece[n - 2] == '\r';
        if (whole && line_start && prev_crlf && crlf && n == 3 && piece[0] == '.')
            break; /* <CRLF>.<CRLF> */
        char *text = piece;
        size_t tlen = whole ? n - 1 - (size_t)crlf : n;
        if (line_start && prev_crlf && text[0] == '.') { /* RFC 5321 4.5.2: drop one dot */
            text++;
            tlen--;
        }
        if (line_start && in_headers) {
            if (tlen == 0 && whole)
                in_headers = 0;
            else if (tlen >= 9 && strncasecmp(text, "Received:", 9) == 0)
                received++;
        }
        if (whole && !crlf && s->cfg.bare_newline == BARE_REJECT && sticky == R_DONE)
            sticky = R_BARE_LF;
        data_bytes += (long)tlen + (whole ? 2 : 0);
        if (sticky == R_DONE && data_bytes > s->cfg.message_size_limit)
            sticky = R_SIZE;
        if (sticky == R_DONE) {
            /* Stored with CRLF whatever ended the line (bare LF normalised). */
            if (st && (smtp_store_put(s, st, text, tlen) != DB_OK ||
                       (whole && smtp_store_put(s, st, "\r\n", 2) != DB_OK)))
                sticky = R_TEMP;
            if (s->tx.nbounces) {
                keep(prefix, &plen, text, tlen);
                if (whole)
                    keep(prefix, &plen, "\r\n", 2);
            }
        }
        line_start = whole;
        if (whole)
            prev_crlf = crlf;
    }
    if (sticky == R_DONE && received >= LIM_RECEIVED_HOPS)
        sticky = R_LOOP;
    int rc;
    if (sticky != R_DONE) {
        log_event(LOG_NOTICE, "message-rejected", "reason=%s bytes=%ld error=\"%s\"",
                  sticky == R_SIZE      ? "size"
                  : sticky == R_BARE_LF ? "bare-lf"
                  : sticky == R_LOOP    ? "loop"
                                        : "database",
                  data_bytes, sticky == R_TEMP ? s->db.error : "");
        if (st)
            smtp_store_abort(s, st);
        rc = smtp_reply(s, sticky);
    } else {
        char id[32];
        enum smtp_reply_id r =
            smtp_deliver(s, st, prefix, plen, (long)plen == data_bytes, id, sizeof id);
        rc = r == R_STORED ? smtp_reply(s, r, id) : smtp_reply(s, r);
    }
    smtp_tx_reset(s);
    return rc;
}
