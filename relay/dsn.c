/*
 * dsn.c - delivery status notifications: RFC 3464 multipart/report (RFC 6522), composed
 * from what the scheduler read out of the queue (see dsn.h). No I/O, no database.
 *
 * The shape (RFC 3464 2, RFC 3461 6.2):
 *   header fields: From MAILER-DAEMON@hostname, To the original sender, Subject, Date,
 *     Message-ID, Auto-Submitted: auto-replied (RFC 3834 5, so that autoresponders keep
 *     quiet), MIME-Version, Content-Type multipart/report; report-type=delivery-status
 *   1. text/plain: the original project's plain words, per recipient "Your email to X was
 *      not delivered." (or "has not been delivered yet. We will keep trying until D."),
 *      the reason, and what the remote server said
 *   2. message/delivery-status: the per-message fields, then one group per recipient
 *   3. text/rfc822-headers: the original header section (at most LIM_DSN_HEADERS)
 *
 * Invariants: CRLF line ends everywhere and no line longer than LIM_DSN_LINE octets (RFC
 * 5322 2.1.1): a long line is folded at its last space that fits, or cut there when it has
 * none, the rest continuing on a line that starts with a space (a header continuation in
 * parts 2 and 3, an indented line in part 1). Text from elsewhere (a remote reply, addresses,
 * host names) is reduced to printable ASCII before it is written: CR, LF and TAB become
 * spaces, other octets '?', so a hostile reply can neither start a header field nor end a
 * part. The original headers keep their 8-bit octets (RFC 6532 headers are legal; the part
 * then says 8bit) but lose NUL and bare CR or LF. The boundary is chosen after the parts are
 * written, as the first candidate that occurs in none of them (RFC 2046 5.1.1).
 */
#include "dsn.h"
#include "mail_limits.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* RFC 5322 2.1.1: at most 998 octets on a line, without its CRLF. */
#define LIM_DSN_LINE 998

/* A growing output buffer; oom is sticky, so callers check once at the end. */
struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* put_line: s[0..n), which holds no line end, as one line (CRLF), folded when it is longer
 * than LIM_DSN_LINE: before its last space that fits, or cut when there is none; each
 * continuation starts with a space. */
static void put_line(struct buf *b, const char *s, size_t n)
{
    int cont = 0;
    for (;;) {
        int lead = cont && (n == 0 || s[0] != ' ');
        size_t room = LIM_DSN_LINE - (size_t)lead;
        size_t cut = n;
        if (n > room) {
            cut = room;
            while (cut > 1 && s[cut] != ' ')
                cut--;
            if (cut <= 1)
                cut = room;
        }
        if (lead)
            put(b, " ", 1);
        put(b, s, cut);
        put(b, "\r\n", 2);
        if (cut == n)
            return;
        s += cut;
        n -= cut;
        cont = 1;
    }
}

/* line: a formatted line (see put_line); its arguments must already be clean. */
static void line(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    put_line(b, s, (size_t)n);
    free(s);
}

/* clean: s (NULL is "") as printable ASCII, malloc'd: CR, LF and TAB become spaces (a
 * multiline reply reads on), every other octet outside 0x20..0x7E '?'. NULL when out of
 * memory. */
static char *clean(const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c == '\r' || c == '\n' || c == '\t' ? ' ' : c >= 0x20 && c < 0x7F ? (char)c : '?';
    }
    out[n] = '\0';
    return out;
}

/* rfc5322_date: t as "Wed, 02 Dec 2026 15:30:46 +0000" (RFC 5322 3.3), names in English
 * whatever the locale. */
static void rfc5322_date(long long t, char *out, size_t outlen)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* status_ok: s is an RFC 3463 enhanced status code, class.subject.detail (class 2, 4 or
 * 5, subject and detail of one to three digits). Anything else becomes 4.0.0 or 5.0.0. */
static int status_ok(const char *s)
{
    if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    s += 2;
    for (int part = 0; part < 2; part++) {
        size_t d = strspn(s, "0123456789");
        if (d < 1 || d > 3 || s[d] != (part == 0 ? '.' : '\0'))
            return 0;
        s += d + 1;
    }
    return 1;
}

/* reason: the plain words for an enhanced status code's subject and detail (RFC 3463 3);
 * for the others, whether a remote server answered (code) decides. */
static const char *reason(const char *status, int delayed, int code)
{
    static const struct {
        const char *code; /* subject.detail, after the class */
        const char *text;
    } reasons[] = {
        {"1.1", "The address does not exist there."},
        {"1.2", "The recipient's domain does not exist."},
        {"1.10", "The recipient's domain accepts no mail."},
        {"2.1", "The mailbox is disabled."},
        {"2.2", "The mailbox is full."},
        {"3.4", "The message is too big for the recipient's server."},
        {"4.1", "The recipient's server did not answer."},
        {"4.2", "The connection to the recipient's server broke."},
        {"4.3", "The recipient's domain could not be looked up."},
        {"4.4", "No server that takes mail for the recipient's domain was found."},
        {"4.6", "The mail would have come back to this server (a mail loop)."},
        {"4.7", "It could not be delivered in time."},
        {"7.1", "The recipient's server refused it."},
    };
    const char *sd = status + 2;
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(sd, reasons[i].code) == 0)
            return reasons[i].text;
    if (!code)
        return delayed ? "It could not be sent yet." : "It could not be delivered.";
    return delayed ? "The recipient's server could not take it yet."
                   : "The recipient's server did not accept it.";
}

/* One recipient's fields made clean, shared by parts 1 and 2. */
struct rcpt {
    char *addr, *host, *reply;
    const char *status;
};

static void rcpt_free(struct rcpt *r)
{
    free(r->addr);
    free(r->host);
    free(r->reply);
}

static int rcpt_clean(const struct relay_dsn_rcpt *in, struct rcpt *r)
{
    r->addr = clean(in->recipient);
    r->host = clean(in->remote_mta);
    r->reply = clean(in->reply);
    r->status = status_ok(in->status) ? in->status : in->delayed ? "4.0.0" : "5.0.0";
    return r->addr && r->host && r->reply ? 0 : -1;
}

/* said: "The remote server H said: 550 ..." or our own reason, as one line. */
static void said(struct buf *b, const struct relay_dsn_rcpt *in, const struct rcpt *r)
{
    if (in->code != 0 && r->host[0])
        line(b, "The remote server %s said: %d %s", r->host, in->code, r->reply);
    else if (in->code != 0)
        line(b, "The remote server said: %d %s", in->code, r->reply);
    else if (r->reply[0])
        line(b, "What went wrong: %s", r->reply);
}

/* text_part: part 1, for people. */
static void text_part(struct buf *b, const struct relay_dsn *d, const struct rcpt *rs,
                      const char *host, const char *until)
{
    line(b, "This is the mail system at %s.", host);
    puts_(b, "\r\n");
    for (size_t i = 0; i < d->n; i++) {
        const struct relay_dsn_rcpt *in = &d->rcpts[i];
        if (in->delayed)
            line(b, "Your email to %s has not been delivered yet. We will keep trying until %s.",
                 rs[i].addr, until);
        else
            line(b, "Your email to %s was not delivered.", rs[i].addr);
        line(b, "%s", reason(rs[i].status, in->delayed, in->code));
        said(b, in, &rs[i]);
        puts_(b, "\r\n");
    }
    line(b, "Its queue id at %s is %lld; the headers of your email follow.", host, d->message_id);
}

/* status_part: part 2, RFC 3464 2.2 (per message) and 2.3 (per recipient). */
static void status_part(struct buf *b, const struct relay_dsn *d, const struct rcpt *rs,
                        const char *host, const char *until)
{
    char date[64];
    line(b, "Reporting-MTA: dns; %s", host);
    rfc5322_date(d->arrival, date, sizeof date);
    line(b, "Arrival-Date: %s", date);
    for (size_t i = 0; i < d->n; i++) {
        const struct relay_dsn_rcpt *in = &d->rcpts[i];
        puts_(b, "\r\n");
        line(b, "Final-Recipient: rfc822; %s", rs[i].addr);
        line(b, "Action: %s", in->delayed ? "delayed" : "failed");
        line(b, "Status: %s", rs[i].status);
        if (rs[i].host[0])
            line(b, "Remote-MTA: dns; %s", rs[i].host);
        if (in->code != 0)
            line(b, "Diagnostic-Code: smtp; %d %s", in->code, rs[i].reply);
        if (in->last_attempt) {
            rfc5322_date(in->last_attempt, date, sizeof date);
            line(b, "Last-Attempt-Date: %s", date);
        }
        if (in->delayed)
            line(b, "Will-Retry-Until: %s", until);
    }
}

size_t relay_dsn_headers(const char *body, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(body + i, '\n', len - i);
        if (!nl)
            return len;
        size_t end = (size_t)(nl - body) + 1;
        if (end - i == 1 || (end - i == 2 && body[i] == '\r'))
            return end; /* the empty line */
        i = end;
    }
    return len;
}

/* headers_part: part 3, the original header lines (not the empty line after them), cut at
 * a line end within LIM_DSN_HEADERS. NUL becomes '?'; a bare CR or LF ends a line. *eight
 * says whether an octet above 0x7F was written. */
static void headers_part(struct buf *b, const char *h, size_t n, int *eight)
{
    n = relay_dsn_headers(h, n);
    if (n > LIM_DSN_HEADERS) {
        n = LIM_DSN_HEADERS;
        while (n > 0 && h[n - 1] != '\n')
            n--;
    }
    char *l = malloc(n + 1);
    if (!l) {
        b->oom = 1;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? h[i] : '\n';
        if (c == '\r' || c == '\n') {
            if (k > 0)
                put_line(b, l, k);
            k = 0;
            if (c == '\r' && i + 1 < n && h[i + 1] == '\n')
                i++;
            continue;
        }
        if ((unsigned char)c >= 0x80)
            *eight = 1;
        l[k++] = c == '\0' ? '?' : c;
    }
    free(l);
}

/* found: whether boundary b occurs in part p. */
static int found(const struct buf *p, const char *b)
{
    return p->len && memmem(p->p, p->len, b, strlen(b)) != NULL;
}

static void part(struct buf *b, const char *boundary, const char *head, const struct buf *body)
{
    line(b, "--%s", boundary);
    puts_(b, head);
    puts_(b, "\r\n");
    put(b, body->p ? body->p : "", body->len);
    puts_(b, "\r\n");
}

/* assemble: the header section and the three parts around a boundary none of them holds. */
static void assemble(struct buf *b, const struct relay_dsn *d, const char *host, const char *to,
                     struct buf parts[3], int eight)
{
    static unsigned seq; /* distinct Message-IDs and boundaries within one process */
    char date[64], boundary[96];
    long long now = (long long)time(NULL);
    unsigned n = ++seq;
    do
        snprintf(boundary, sizeof boundary, "=_pgmail-dsn-%lld-%lld-%ld-%u", d->message_id, now,
                 (long)getpid(), n++);
    while (found(&parts[0], boundary) || found(&parts[1], boundary) || found(&parts[2], boundary));
    seq = n;
    int failed = 0;
    for (size_t i = 0; i < d->n; i++)
        failed |= !d->rcpts[i].delayed;
    rfc5322_date(now, date, sizeof date);
    line(b, "From: Mail Delivery System <MAILER-DAEMON@%s>", host);
    line(b, "To: <%s>", to);
    line(b, "Subject: %s",
         failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)");
    line(b, "Date: %s", date);
    line(b, "Message-ID: <dsn.%lld.%lld.%ld.%u@%s>", d->message_id, now, (long)getpid(), n, host);
    line(b, "Auto-Submitted: auto-replied");
    line(b, "MIME-Version: 1.0");
    line(b, "Content-Type: multipart/report; report-type=delivery-status;");
    line(b, " boundary=\"%s\"", boundary);
    puts_(b, "\r\n");
    line(b, "This is a MIME-encapsulated message.");
    puts_(b, "\r\n");
    part(b, boundary,
         "Content-Description: Notification\r\n"
         "Content-Type: text/plain; charset=us-ascii\r\n",
         &parts[0]);
    part(b, boundary,
         "Content-Description: Delivery report\r\n"
         "Content-Type: message/delivery-status\r\n",
         &parts[1]);
    part(b, boundary,
         eight ? "Content-Description: Undelivered message headers\r\n"
                 "Content-Type: text/rfc822-headers\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n"
               : "Content-Description: Undelivered message headers\r\n"
                 "Content-Type: text/rfc822-headers\r\n",
         &parts[2]);
    line(b, "--%s--", boundary);
}

char *relay_dsn_compose(const struct relay_dsn *d, size_t *len)
{
    struct buf out = {0}, parts[3] = {{0}, {0}, {0}};
    struct rcpt *rs = calloc(d->n ? d->n : 1, sizeof *rs);
    char *host = clean(d->hostname), *to = clean(d->to);
    char until[64];
    int ok = rs && host && to, eight = 0;
    for (size_t i = 0; ok && i < d->n; i++)
        ok = rcpt_clean(&d->rcpts[i], &rs[i]) == 0;
    if (ok) {
        rfc5322_date(d->retry_until, until, sizeof until);
        text_part(&parts[0], d, rs, host, until);
        status_part(&parts[1], d, rs, host, until);
        headers_part(&parts[2], d->headers ? d->headers : "", d->headers ? d->headers_len : 0,
                     &eight);
        ok = !parts[0].oom && !parts[1].oom && !parts[2].oom;
    }
    if (ok)
        assemble(&out, d, host, to, parts, eight);
    for (size_t i = 0; rs && i < d->n; i++)
        rcpt_free(&rs[i]);
    free(rs);
    free(host);
    free(to);
    for (int i = 0; i < 3; i++)
        free(parts[i].p);
    if (!ok || out.oom) {
        free(out.p);
        return NULL;
    }
    *len = out.len;
    return out.p;
}
