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
 * only smtp_deliver commits; memory use does not depend on the message size beyond the
 * header section, which is held (header_size_limit, 552 5.3.4 past it: Postfix's bound,
 * said instead of cutting the section short) until the milters have had their say: with
 * milters it is stored after the body, without them as soon as it is complete.
 * With milters the 250 comes only after every milter has accepted and the COMMIT.
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

/* A message's start: the trace fields we write before it (RFC 5321 4.4), Return-Path
 * apart (it is the store's, no milter sees it) and Received as the header section's first
 * field (milters see it, as Postfix sends its own). */
struct head {
    char trace[LIM_TRACE_HEADER];
    size_t rp; /* the Return-Path field's length in trace */
    struct hdrs h;
    int open; /* the section is still arriving */
};

/* put_head: Return-Path and the header section, field after field, to the store. */
static enum db_status put_head(struct smtp_session *s, struct smtp_store *st, struct head *hd)
{
    enum db_status r = smtp_store_put(s, st, hd->trace, hd->rp);
    for (size_t i = 0; r == DB_OK && i < hd->h.n; i++)
        r = smtp_store_put(s, st, hd->h.buf + hd->h.f[i].off, hd->h.f[i].len);
    return r;
}

/* end_headers: the section is complete: forged verdicts go (RFC 8601 5), then it goes to
 * the milters, which may change it until the end of the message (so it is stored last),
 * or, without milters, to the store at once. */
static enum db_status end_headers(struct smtp_session *s, struct smtp_store *st, struct head *hd)
{
    hd->open = 0;
    size_t forged =
        hdrs_drop_claims(&hd->h, s->cfg.authserv_id[0] ? s->cfg.authserv_id : s->cfg.hostname);
    if (forged)
        log_event(LOG_NOTICE, "header-removed", "field=Authentication-Results count=%zu", forged);
    if (s->nmilters) {
        smtp_milter_headers(s, &hd->h);
        return DB_OK;
    }
    return st ? put_head(s, st, hd) : DB_OK;
}

int smtp_cmd_data(struct smtp_session *s, char *arg)
{
    (void)arg;
    static char piece[LIM_DATA_PIECE + 1], prefix[LIM_NOTICE_PREFIX];
    static struct head hd;
    size_t plen = 0;
    /* Open the transaction before 354, so that a database problem is said at once. */
    struct smtp_store store = {0}, *st = s->tx.naccounts || s->tx.nremote ? &store : NULL;
    if (smtp_need_db(s) < 0)
        return -1;
    int rc = smtp_milter_data(s);
    if (rc != -2) {
        smtp_tx_reset(s);
        return rc;
    }
    size_t tlen = smtp_trace_header(s, hd.trace, sizeof hd.trace);
    hd.rp = strcspn(hd.trace, "\n") + 1;
    hd.open = 1;
    if (tlen == 0 || hd.rp >= tlen ||
        hdrs_init(&hd.h, (size_t)s->cfg.header_size_limit + tlen + LIM_HEADER_EDITS) < 0 ||
        hdrs_append(&hd.h, hd.trace + hd.rp, tlen - hd.rp, 1) < 0) {
        hdrs_free(&hd.h);
        return smtp_reply(s, R_NO_MEMORY);
    }
    size_t limit = (size_t)s->cfg.header_size_limit + (tlen - hd.rp);
    if (st && smtp_store_begin(s, st, s->nmilters > 0) != DB_OK) {
        log_event(LOG_WARNING, "message-failed", "reason=database error=\"%s\"", s->db.error);
        if (st->open)
            smtp_store_abort(s, st);
        hdrs_free(&hd.h);
        return smtp_reply(s, R_TEMP);
    }
    smtp_reply(s, R_DATA_GO);
    enum smtp_reply_id sticky = R_DONE;
    int line_start = 1, prev_crlf = 1, received = 0, body_started = 0;
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
            hdrs_free(&hd.h);
            smtp_end(s, io == IO_TIMEOUT ? END_TIMEOUT : END_EOF);
            smtp_tx_reset(s);
            return 0;
        }
        int whole = io == IO_LINE;
        int crlf = whole && n >= 2 && piece[n - 2] == '\r';
        if (whole && line_start && prev_crlf && crlf && n == 3 && piece[0] == '.')
            break; /* <CRLF>.<CRLF> */
        char *text = piece;
        size_t tlen2 = whole ? n - 1 - (size_t)crlf : n;
        if (line_start && prev_crlf && text[0] == '.') { /* RFC 5321 4.5.2: drop one dot */
            text++;
            tlen2--;
        }
        /* The header section: fields (a continuation starts with white space) up to the
         * empty line, or up to the first line that is neither (the body starts there). */
        int in_header = 0;
        if (hd.open && !line_start)
            in_header = 1; /* the rest of a long field */
        else if (hd.open && tlen2 > 0 && (text[0] == ' ' || text[0] == '\t'))
            in_header = hd.h.n > 1; /* continues the client's last field (not our Received) */
        else if (hd.open)
            in_header = hdrs_field_start(text, tlen2);
        if (hd.open && line_start && !in_header && sticky == R_DONE &&
            end_headers(s, st, &hd) != DB_OK)
            sticky = R_TEMP;
        if (!in_header)
            hd.open = 0;
        if (line_start && in_header && tlen2 >= 9 && strncasecmp(text, "Received:", 9) == 0)
            received++;
        if (whole && !crlf && s->cfg.bare_newline == BARE_REJECT && sticky == R_DONE)
            sticky = R_BARE_LF;
        data_bytes += (long)tlen2 + (whole ? 2 : 0);
        if (sticky == R_DONE && data_bytes > s->cfg.message_size_limit)
            sticky = R_SIZE;
        if (sticky == R_DONE && in_header) {
            /* Stored with CRLF whatever ended the line (bare LF normalised). */
            int new_field = line_start && text[0] != ' ' && text[0] != '\t';
            if (hd.h.len + tlen2 + 2 > limit || hdrs_append(&hd.h, text, tlen2, new_field) < 0 ||
                (whole && hdrs_append(&hd.h, "\r\n", 2, 0) < 0))
                sticky = R_HEADER_SIZE;
        } else if (sticky == R_DONE) {
            if (st && (smtp_store_put(s, st, text, tlen2) != DB_OK ||
                       (whole && smtp_store_put(s, st, "\r\n", 2) != DB_OK)))
                sticky = R_TEMP;
            /* The empty line that ends the section is not the body's (milter protocol). */
            if (s->nmilters && (body_started || tlen2 > 0 || !whole)) {
                smtp_milter_body(s, text, tlen2);
                if (whole)
                    smtp_milter_body(s, "\r\n", 2);
            }
            body_started = 1;
        }
        if (sticky == R_DONE && s->tx.nbounces) {
            keep(prefix, &plen, text, tlen2);
            if (whole)
                keep(prefix, &plen, "\r\n", 2);
        }
        line_start = whole;
        if (whole)
            prev_crlf = crlf;
    }
    if (sticky == R_DONE && hd.open && end_headers(s, st, &hd) != DB_OK)
        sticky = R_TEMP;
    if (sticky == R_DONE && received >= LIM_RECEIVED_HOPS)
        sticky = R_LOOP;
    int verdict = 0;
    if (sticky == R_DONE && s->nmilters) {
        /* Every milter has the whole message: its verdict, and its header edits. Then the
         * section goes to the store, after the body (store.c). */
        smtp_milter_eom(s, &hd.h);
        verdict = smtp_milter_verdict(s);
        if (verdict == 0 && st &&
            (smtp_store_head_start(s, st) != DB_OK || put_head(s, st, &hd) != DB_OK))
            sticky = R_TEMP;
    }
    if (sticky != R_DONE || verdict != 0) {
        if (sticky != R_DONE)
            log_event(LOG_NOTICE, "message-rejected", "reason=%s bytes=%ld error=\"%s\"",
                      sticky == R_SIZE          ? "size"
                      : sticky == R_HEADER_SIZE ? "header-size"
                      : sticky == R_BARE_LF     ? "bare-lf"
                      : sticky == R_LOOP        ? "loop"
                                                : "database",
                      data_bytes, sticky == R_TEMP ? s->db.error : "");
        else
            log_event(LOG_NOTICE, verdict == -2 ? "message-discarded" : "message-rejected",
                      "reason=milter bytes=%ld", data_bytes);
        if (st)
            smtp_store_abort(s, st);
        rc = sticky == R_HEADER_SIZE ? smtp_reply(s, sticky, s->cfg.header_size_limit)
             : sticky != R_DONE      ? smtp_reply(s, sticky)
             : verdict == -2         ? smtp_reply(s, R_MILTER_DISCARD)
                                     : verdict;
    } else {
        char id[32];
        enum smtp_reply_id r =
            smtp_deliver(s, st, prefix, plen, (long)plen == data_bytes, id, sizeof id);
        rc = r == R_STORED ? smtp_reply(s, r, id) : smtp_reply(s, r);
    }
    hdrs_free(&hd.h);
    smtp_tx_reset(s);
    return rc;
}
