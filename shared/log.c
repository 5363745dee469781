/*
 * log.c - structured logging through sd-journal, with a stderr fallback (see log.h).
 *
 * log_event formats its key=value text itself, so that every string argument is escaped
 * here, in one place, whoever calls: client text (user names, addresses) and server text
 * (database errors) alike. In a %s (or %c) argument '"' and '\' are backslash-escaped and
 * bytes below 0x20, 0x7f and 0x80 and above are written \xNN, so CR/LF can never end a
 * record and a quote can never close a value early; outside a quoted value ("...%s...")
 * a space is written \x20 too, so an unquoted value can never grow a second key. A string
 * with a NUL is cut there, as C strings are: what follows can never reach the log.
 * Numbers go through snprintf. Only the conversions the code base uses are known (see
 * fmt_one); any other ends the text with unsupported-log-format=, loudly, instead of
 * reading the argument list wrongly.
 */
#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/types.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

static const char *prog = "pgmail";
static char sess[40] = "-";
static char peer_addr[64] = "-";
static int use_journal = -1;

void log_init(const char *program, const char *session, const char *peer)
{
    prog = program;
    snprintf(sess, sizeof sess, "%s", session);
    snprintf(peer_addr, sizeof peer_addr, "%s", peer);
    /* Under systemd stderr is a journal stream (JOURNAL_STREAM is set); use native fields
     * then. Elsewhere (tests, inetd) stderr is the log. PGMAIL_LOG=stderr forces it. */
    const char *force = getenv("PGMAIL_LOG");
    if (force && strcmp(force, "none") == 0)
        use_journal = -2; /* the fuzzer: nothing at all */
    else if (force && strcmp(force, "stderr") == 0)
        use_journal = 0;
    else
        use_journal =
            getenv("JOURNAL_STREAM") != NULL && access("/run/systemd/journal/socket", W_OK) == 0;
}

char *log_clean(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s && *s && i + 1 < n; s++)
        out[i++] = (*s >= 0x20 && *s < 0x7f && *s != '"' && *s != '\\') ? *s : '?';
    out[i] = '\0';
    return out;
}

/* The text being built: buf[0..len) NUL-terminated; cap leaves room for the truncation mark.
 * Pieces are added whole or not at all (an escape is never cut in two); once one does not
 * fit, full is set and nothing more is added. */
struct text {
    char *buf;
    size_t cap, len;
    int full;
};

static void add(struct text *t, const char *s, size_t n)
{
    if (t->full || t->len + n > t->cap) {
        t->full = 1;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

/* add_escaped: at most max bytes of s (up to its NUL), escaped as the header says. */
static void add_escaped(struct text *t, const char *s, size_t max, int quoted)
{
    if (!s)
        s = "(null)";
    for (size_t i = 0; i < max && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[5];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            add(t, e, 2);
        } else if (c < 0x20 || c >= 0x7f || (c == ' ' && !quoted)) {
            snprintf(e, sizeof e, "\\x%02x", c);
            add(t, e, 4);
        } else {
            add(t, (const char *)&c, 1);
        }
    }
}

/* fmt_one: format the conversion at *fmt (just past '%') from ap into t; advance *fmt.
 * Returns 0, or -1 when the conversion is not one log_event knows. va_list is passed by
 * pointer so that the caller's copy advances (C17 7.16 footnote 253). */
static int fmt_one(struct text *t, const char **fmt, va_list *ap, int quoted)
{
    const char *f = *fmt;
    char spec[32] = "%";
    size_t n = 1;
    /* flags and width, for numbers only: a padded string could hide where a value ends */
    while (*f && strchr("-+ #0", *f) && n < 8)
        spec[n++] = *f++;
    while (*f >= '0' && *f <= '9' && n < 12)
        spec[n++] = *f++;
    int has_width = n > 1;
    int prec = -1;
    if (*f == '.') {
        f++;
        if (*f == '*') {
            prec = va_arg(*ap, int);
            f++;
        } else {
            prec = 0;
            while (*f >= '0' && *f <= '9' && prec < 100000)
                prec = prec * 10 + (*f++ - '0');
        }
        if (prec >= 0)
            n += (size_t)snprintf(spec + n, sizeof spec - n, ".%d", prec);
    }
    char len[3] = "";
    if (f[0] == 'h' || f[0] == 'l' || f[0] == 'z' || f[0] == 'j' || f[0] == 't') {
        len[0] = *f++;
        if ((len[0] == 'l' || len[0] == 'h') && *f == len[0])
            len[1] = *f++;
    }
    char conv = *f ? *f++ : '\0';
    *fmt = f;
    char num[64];
    if (conv == 's' && !has_width && !len[0]) {
        const char *s = va_arg(*ap, const char *);
        add_escaped(t, s, prec >= 0 ? (size_t)prec : (size_t)-1, quoted);
        return 0;
    }
    if (conv == 'c' && !has_width && !len[0] && prec < 0) {
        char c = (char)va_arg(*ap, int);
        add_escaped(t, &c, 1, quoted);
        return 0;
    }
    if (!conv || !strchr("diuxX", conv))
        return -1;
    /* Read the argument as its own type, then print it widened (%jd / %ju). */
    int size = !len[0] || len[0] == 'h' ? 0
               : strcmp(len, "l") == 0  ? 1
               : strcmp(len, "ll") == 0 ? 2
                                        : 3;
    if (len[0] == 'j' || len[0] == 't')
        return -1; /* not used in pgmail */
    snprintf(spec + n, sizeof spec - n, "j%c", conv);
    if (conv == 'd' || conv == 'i') {
        intmax_t v = size == 0   ? va_arg(*ap, int)
                     : size == 1 ? va_arg(*ap, long)
                     : size == 2 ? va_arg(*ap, long long)
                                 : va_arg(*ap, ssize_t);
        if (len[0] == 'h')
            v = len[1] ? (signed char)v : (short)v;
        snprintf(num, sizeof num, spec, v);
    } else {
        uintmax_t v = size == 0   ? va_arg(*ap, unsigned)
                      : size == 1 ? va_arg(*ap, unsigned long)
                      : size == 2 ? va_arg(*ap, unsigned long long)
                                  : va_arg(*ap, size_t);
        if (len[0] == 'h')
            v = len[1] ? (unsigned char)v : (unsigned short)v;
        snprintf(num, sizeof num, spec, v);
    }
    add(t, num, strlen(num));
    return 0;
}

int log_format(char *out, size_t n, const char *fmt, va_list ap)
{
    static const char mark[] = " truncated=yes";
    if (n < sizeof mark + 2) {
        if (n)
            out[0] = '\0';
        return -1;
    }
    struct text t = {out, n - sizeof mark - 1, 0, 0};
    out[0] = '\0';
    va_list aq;
    va_copy(aq, ap);
    int quoted = 0, rc = 0;
    while (*fmt && !t.full) {
        const char *pct = strchr(fmt, '%');
        size_t lit = pct ? (size_t)(pct - fmt) : strlen(fmt);
        add(&t, fmt, lit);
        for (size_t i = 0; i < lit && !t.full; i++)
            quoted ^= fmt[i] == '"'; /* only quotes that were written open or close a value */
        fmt += lit;
        if (!pct)
            break;
        fmt++;
        if (*fmt == '%') {
            add(&t, "%", 1);
            fmt++;
            continue;
        }
        const char *spec = fmt;
        if (fmt_one(&t, &fmt, &aq, quoted) < 0) {
            /* The argument list cannot be read past a conversion we do not know. */
            if (quoted)
                add(&t, "\"", 1);
            quoted = 0;
            add(&t, " unsupported-log-format=", 24);
            add_escaped(&t, spec - 1, (size_t)(fmt - spec) + 1, 0);
            rc = -1;
            break;
        }
    }
    va_end(aq);
    if (t.full) {
        /* Cut: close an open quoted value so that the record still parses, and say so. */
        t.full = 0;
        t.cap = n - 1;
        if (quoted)
            add(&t, "\"", 1);
        add(&t, mark, sizeof mark - 1);
    }
    return rc;
}

void log_event(int priority, const char *event, const char *fmt, ...)
{
    if (use_journal == -2)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    log_format(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Both outputs carry the same text, escaped; event, session and peer are ours. The
     * journal's MESSAGE is the stderr line after "program[pid]: ", so that what syslog and
     * journalctl show is what tests see, and fail2ban finds the peer in it
     * (deploy/fail2ban). */
    if (use_journal > 0) {
        sd_journal_send("MESSAGE=event=%s session=%s peer=%s %s", event, sess, peer_addr, msg,
                        "PRIORITY=%d", priority, "SYSLOG_IDENTIFIER=%s", prog, "PGMAIL_EVENT=%s",
                        event, "PGMAIL_SESSION=%s", sess, "PGMAIL_PEER=%s", peer_addr, NULL);
        return;
    }
    fprintf(stderr, "%s[%d]: event=%s session=%s peer=%s %s\n", prog, (int)getpid(), event, sess,
            peer_addr, msg);
}
