/*
 * bounce.c - the notice an authenticated sender gets for an unknown local recipient.
 *
 * The wording is the original project's, which its users know: "Recipient X was not
 * found." / "Email with subject S, body: B was not sent." / "Please try again with another
 * recipient." It is delivered to the sender's own mailbox (not sent out: pgmail does not
 * relay), from MAILER-DAEMON@<hostname>, with the original body quoted inline up to
 * BOUNCE_BODY_MAX octets so that 1000 bounces of a 25 MiB message stay bounded (DATA keeps
 * only the first SMTP_BOUNCE_PREFIX octets of a message for this).
 */
#include "smtpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BOUNCE_BODY_MAX 65536
#define SUBJECT_MAX     998

/* subject: the unfolded value of the first Subject: header of msg (RFC 5322 2.2.3). */
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

/* body_of: where the body starts (after the first empty line), or len when there is none. */
static size_t body_of(const char *msg, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (msg[i] == '\n' && msg[i + 1] == '\n')
            return i + 2;
        if (msg[i] == '\n' && i + 2 < len && msg[i + 1] == '\r' && msg[i + 2] == '\n')
            return i + 3;
    }
    return len;
}

char *smtp_bounce_text(const struct smtp_session *s, const char *rcpt, const char *msg, size_t len,
                       int complete, size_t *outlen)
{
    static unsigned seq; /* several bounces in one session need distinct Message-IDs */
    char subj[SUBJECT_MAX + 1], date[64], head[4096];
    subject(msg, len, subj, sizeof subj);
    smtp_rfc5322_date(date, sizeof date);
    size_t body = body_of(msg, len), blen = len - body;
    int cut = blen > BOUNCE_BODY_MAX || !complete;
    if (blen > BOUNCE_BODY_MAX)
        blen = BOUNCE_BODY_MAX;
    const char *to = s->tx.sender[0] ? s->tx.sender : s->auth_user;
    int n =
        snprintf(head, sizeof head,
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
                 "\r\n"
                 "Recipient %s was not found.\r\n"
                 "Email with subject %s, body: ",
                 s->cfg.hostname, to, date, s->peer.session, ++seq, s->cfg.hostname, rcpt, subj);
    if (n < 0 || (size_t)n >= sizeof head)
        return NULL;
    static const char tail[] = " was not sent.\r\nPlease try again with another recipient.\r\n";
    static const char more[] = "[... the rest of the body is not quoted]";
    /* Quote the body without its final line end, so the sentence reads on. */
    while (blen > 0 && !cut && (msg[body + blen - 1] == '\n' || msg[body + blen - 1] == '\r'))
        blen--;
    size_t total = (size_t)n + blen + (cut ? sizeof more - 1 : 0) + sizeof tail - 1;
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    memcpy(out, head, (size_t)n);
    o += (size_t)n;
    memcpy(out + o, msg + body, blen);
    o += blen;
    if (cut) {
        memcpy(out + o, more, sizeof more - 1);
        o += sizeof more - 1;
    }
    memcpy(out + o, tail, sizeof tail - 1);
    o += sizeof tail - 1;
    out[o] = '\0';
    *outlen = o;
    return out;
}
