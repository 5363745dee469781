/*
 * bounce.c - the notice an authenticated sender gets for the unknown local recipients of a
 * message.
 *
 * The wording is the original project's, which its users know: "Recipient X was not
 * found." (a line for each unknown recipient) / "Email with subject S, body: B was not
 * sent." / "Please try again with another recipient." There is one notice per message,
 * delivered to the sender's own mailbox (pgmail does not relay) from MAILER-DAEMON@<hostname>.
 * It is bounded whatever the message, so that one message with a huge Subject and body to
 * 1,000 unknown recipients costs a few KiB (shared/mail_limits.h, LIM_NOTICE_*): recipient
 * lines up to LIM_NOTICE_RCPTS octets and then a count of the rest, the Subject up to
 * LIM_NOTICE_SUBJECT octets, the body quoted up to LIM_NOTICE_QUOTE octets and cut at a
 * line end. The copied text is made well-formed as it is copied, since the notice declares
 * charset=utf-8 and 8bit: bytes that are not UTF-8 (RFC 3629 4), NUL, and CR or LF outside
 * a CRLF become U+FFFD; a line that would pass 998 octets (RFC 5322 2.1.1) is broken at
 * its last white space, or without one between two characters.
 */
#include "smtpd.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* U+FFFD REPLACEMENT CHARACTER, in UTF-8. */
static const char replacement[] = "\xEF\xBF\xBD";

/* The notice as it is written: buf[0..len), the current line starting at line; eol is
 * where the last line end copied from the source ends (line ends that fold inserted are
 * not counted). */
struct text {
    char *buf;
    size_t len, line, eol;
};

/* utf8_len: the length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629 4: no
 * overlong forms, no surrogates, nothing above U+10FFFF), 0 when there is none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char lo = 0x80, hi = 0xBF;
    size_t k;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        k = 2;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        k = 3;
        lo = p[0] == 0xE0 ? 0xA0 : lo;
        hi = p[0] == 0xED ? 0x9F : hi;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        k = 4;
        lo = p[0] == 0xF0 ? 0x90 : lo;
        hi = p[0] == 0xF4 ? 0x8F : hi;
    } else {
        return 0;
    }
    if (n < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return k;
}

static int blank(char c)
{
    return c == ' ' || c == '\t';
}

/* fold: end the current line so that k more octets fit on the next one: after its last
 * white space that leaves room for them, or else right here (between two characters,
 * since only whole characters are written). */
static void fold(struct text *t, size_t k)
{
    size_t lowest = t->len + k - LIM_NOTICE_LINE, sp = t->len;
    while (sp > lowest && sp > t->line + 1 && !blank(t->buf[sp - 1]))
        sp--;
    if (sp < lowest || sp <= t->line + 1 || !blank(t->buf[sp - 1]))
        sp = t->len;
    memmove(t->buf + sp + 2, t->buf + sp, t->len - sp);
    memcpy(t->buf + sp, "\r\n", 2);
    t->len += 2;
    t->line = sp + 2;
}

/* put_text: append s[0..n) made well-formed (see the top), never past limit (at most
 * LIM_NOTICE). Returns how many octets of s were taken: n, or fewer when limit was
 * reached, always at a character boundary. */
static size_t put_text(struct text *t, const char *s, size_t n, size_t limit)
{
    size_t i = 0;
    while (i < n) {
        const unsigned char *u = (const unsigned char *)s + i;
        if (u[0] == '\r' && i + 1 < n && u[1] == '\n') {
            if (t->len + 2 > limit)
                break;
            memcpy(t->buf + t->len, "\r\n", 2);
            t->len += 2;
            t->line = t->eol = t->len;
            i += 2;
            continue;
        }
        size_t k = u[0] == '\r' || u[0] == '\n' || u[0] == '\0' ? 0 : utf8_len(u, n - i);
        const char *c = k ? s + i : replacement;
        size_t out = k ? k : sizeof replacement - 1, fold_cost = 0;
        if (t->len - t->line + out > LIM_NOTICE_LINE)
            fold_cost = 2;
        if (t->len + fold_cost + out > limit)
            break;
        if (fold_cost)
            fold(t, out);
        memcpy(t->buf + t->len, c, out);
        t->len += out;
        i += k ? k : 1;
    }
    return i;
}

/* put: append a NUL-terminated string; 0, or -1 when it did not fit whole. */
static int put(struct text *t, const char *s, size_t limit)
{
    size_t n = strlen(s);
    return put_text(t, s, n, limit) == n ? 0 : -1;
}

/* subject: the unfolded value of the first Subject: header of msg (RFC 5322 2.2.3), at
 * most outlen - 1 octets of it. */
static void subject(const char *msg, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < len;) {
        const char *eol = memchr(msg + i, '\n', len - i);
        size_t end = eol ? (size_t)(eol - msg) : len;
        if (end == i || (end == i + 1 && msg[i] == '\r'))
            return; /* end of the header section */
        if (end - i >= 8 && strncasecmp(msg + i, "Subject:", 8) == 0) {
            size_t p = i + 8;
            for (;;) {
                for (; p < end && o + 1 < outlen; p++)
                    if (msg[p] != '\r')
                        out[o++] = msg[p];
                /* a continuation line starts with white space */
                if (end + 1 < len && (msg[end + 1] == ' ' || msg[end + 1] == '\t')) {
                    p = end + 1;
                    eol = memchr(msg + p, '\n', len - p);
                    end = eol ? (size_t)(eol - msg) : len;
                    continue;
                }
                break;
            }
            out[o] = '\0';
            size_t start = strspn(out, " \t");
            memmove(out, out + start, o - start + 1);
            return;
        }
        i = end + 1;
    }
}

/* body_of: where the body starts (after the first empty line), or len when there is none.
 * DATA keeps every line with CRLF (data.c). */
static size_t body_of(const char *msg, size_t len)
{
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
        return 2; /* no header section at all */
    const char *p = len >= 4 ? memmem(msg, len, "\r\n\r\n", 4) : NULL;
    return p ? (size_t)(p - msg) + 4 : len;
}

/* header: the notice's header section and the empty line after it, into t. -1 when it
 * does not fit LIM_NOTICE_HEADER (it always does: paths and host names are bounded). */
static int header(const struct smtp_session *s, struct text *t)
{
    static unsigned seq; /* several notices in one session need distinct Message-IDs */
    char date[64];
    smtp_rfc5322_date(date, sizeof date);
    const char *to = s->tx.sender[0] ? s->tx.sender : s->auth_user;
    int n = snprintf(t->buf, LIM_NOTICE_HEADER,
                     "Return-Path: <>\r\n"
                     "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
                     "To: <%s>\r\n"
                     "Subject: ERROR - Your email was not sent\r\n"
                     "Date: %s\r\n"
                     "Message-ID: <%.32s.%u@%s>\r\n"
                     "Auto-Submitted: auto-replied\r\n"
                     "MIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n"
                     "\r\n",
                     s->cfg.hostname, to, date, s->peer.session, ++seq, s->cfg.hostname);
    if (n < 0 || n >= LIM_NOTICE_HEADER)
        return -1;
    t->len = t->line = (size_t)n;
    return 0;
}

/* recipients: a "Recipient X was not found." line for each unknown recipient while they
 * fit in LIM_NOTICE_RCPTS octets, then one line that counts the rest. */
static int recipients(const struct smtp_session *s, struct text *t)
{
    size_t limit = t->len + LIM_NOTICE_RCPTS, listed = 0;
    for (size_t i = 0; i < s->tx.nrcpts; i++) {
        if (s->tx.rcpts[i].naccounts || s->tx.rcpts[i].remote)
            continue;
        size_t mark = t->len;
        if (put(t, "Recipient ", limit) < 0 || put(t, s->tx.rcpts[i].addr, limit) < 0 ||
            put(t, " was not found.\r\n", limit) < 0) {
            t->len = t->line = mark;
            break;
        }
        listed++;
    }
    if (listed == s->tx.nbounces)
        return 0;
    char more[96];
    snprintf(more, sizeof more, "And %zu more recipients were not found.\r\n",
             s->tx.nbounces - listed);
    return put(t, more, LIM_NOTICE);
}

/* quote: the body of msg[0..len) (complete when that is all of the message) as the
 * sentence quotes it: the whole body without its final line end, so that the sentence
 * reads on, or as many whole lines as fit in LIM_NOTICE_QUOTE octets and a note. */
static int quote(struct text *t, const char *msg, size_t len, int complete)
{
    static const char more[] = "[... the rest of the body is not quoted]";
    size_t body = body_of(msg, len), blen = len - body, start = t->len;
    while (complete && blen > 0 && (msg[body + blen - 1] == '\n' || msg[body + blen - 1] == '\r'))
        blen--;
    if (put_text(t, msg + body, blen, start + LIM_NOTICE_QUOTE) == blen && complete)
        return 0;
    /* Cut after the last whole line of the body, or when even the first does not fit,
     * after the last piece fold made of it: the quote ends with a line end. */
    size_t end = t->eol > start ? t->eol : t->line;
    if (end > start)
        t->len = t->line = end;
    return put(t, more, LIM_NOTICE);
}

size_t smtp_notice_text(const struct smtp_session *s, const char *msg, size_t len, int complete,
                        char *out)
{
    struct text t = {out, 0, 0, 0};
    /* The Subject is taken longer than it is quoted, so that put_text cuts it between
     * two characters rather than the extraction inside one. */
    char subj[2 * LIM_NOTICE_SUBJECT + 1];
    subject(msg, len, subj, sizeof subj);
    if (header(s, &t) < 0 || recipients(s, &t) < 0 ||
        put(&t, "Email with subject ", LIM_NOTICE) < 0)
        return 0;
    put_text(&t, subj, strlen(subj), t.len + LIM_NOTICE_SUBJECT);
    if (put(&t, ", body: ", LIM_NOTICE) < 0 || quote(&t, msg, len, complete) < 0 ||
        put(&t, " was not sent.\r\nPlease try again with another recipient.\r\n", LIM_NOTICE) < 0)
        return 0;
    return t.len;
}
