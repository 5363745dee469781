/*
 * reply.c - the SMTP client's reply parser (see reply.h): RFC 5321 4.2 (multiline replies,
 * one code), RFC 3463 enhanced status codes at the start of the text (2.3: the class is
 * the reply's), RFC 5321 4.1.1.1 EHLO keywords (PIPELINING RFC 2920, STARTTLS RFC 3207,
 * SIZE RFC 1870, AUTH RFC 4954, also the old "AUTH=" form).
 */
#include "reply.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* reply_code: the three digits at line's start (checked by the caller) as a number. */
static int reply_code(const char *line)
{
    return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* is_reply_line: "DDD" followed by ' ', '-' or the line's end, with first's code unless
 * this is the first line. */
static int is_reply_line(const char *line, size_t len, int first, int code)
{
    return len >= 4 && isdigit((unsigned char)line[0]) && isdigit((unsigned char)line[1]) &&
           isdigit((unsigned char)line[2]) &&
           (line[3] == ' ' || line[3] == '-' || line[3] == '\r' || line[3] == '\n') &&
           (first || reply_code(line) == code);
}

/* note_keyword: one EHLO keyword line's text. */
static void note_keyword(struct relay_ehlo *e, const char *text)
{
    if (strcasecmp(text, "PIPELINING") == 0)
        e->pipelining = 1;
    else if (strcasecmp(text, "STARTTLS") == 0)
        e->starttls = 1;
    else if (strcasecmp(text, "8BITMIME") == 0)
        e->eightbitmime = 1;
    else if (strncasecmp(text, "SIZE", 4) == 0 && (text[4] == ' ' || !text[4]))
        e->size = strtoll(text + 4, NULL, 10); /* 0: no fixed limit */
    else if (strncasecmp(text, "AUTH ", 5) == 0 || strncasecmp(text, "AUTH=", 5) == 0) {
        for (const char *m = text + 5; *m; m += strcspn(m, " ")) {
            m += strspn(m, " ");
            size_t n = strcspn(m, " ");
            e->auth_plain |= n == 5 && strncasecmp(m, "PLAIN", 5) == 0;
            e->auth_login |= n == 5 && strncasecmp(m, "LOGIN", 5) == 0;
        }
    }
}

/* set_status: RFC 3463 "X.Y.Z " at the start of the text, X the reply's class; else X.0.0. */
static void set_status(struct relay_reply *r)
{
    const char *t = r->text;
    size_t a = strspn(t, "0123456789");
    if (a == 1 && t[0] - '0' == r->code / 100 && t[1] == '.') {
        size_t b = strspn(t + 2, "0123456789");
        size_t d = b ? strspn(t + 3 + b, "0123456789") : 0;
        if (b >= 1 && b <= 3 && t[2 + b] == '.' && d >= 1 && d <= 3 &&
            (t[3 + b + d] == ' ' || !t[3 + b + d]))
            snprintf(r->status, sizeof r->status, "%.*s", (int)(3 + b + d), t);
    }
    if (!r->status[0] && r->code >= 200)
        snprintf(r->status, sizeof r->status, "%d.0.0", r->code / 100);
}

enum relay_reply_status relay_reply_read(struct io *io, struct relay_reply *r,
                                         struct relay_ehlo *ehlo)
{
    char line[RELAY_REPLY_LINE + 1];
    size_t len, used = 0;
    r->code = 0;
    r->status[0] = r->text[0] = '\0';
    for (int first = 1;; first = 0) {
        enum io_status st = io_getline(io, line, RELAY_REPLY_LINE, &len);
        if (st == IO_TOOLONG && io_skipline(io) == IO_LINE)
            st = IO_LINE;
        if (st != IO_LINE || !is_reply_line(line, len, first, r->code)) {
            r->code = 0;
            r->text[0] = '\0';
            return st == IO_LINE      ? REPLY_MALFORMED
                   : st == IO_TIMEOUT ? REPLY_TIMEOUT
                   : st == IO_EOF     ? REPLY_EOF
                                      : REPLY_FAILED;
        }
        line[strcspn(line, "\r\n")] = '\0';
        for (char *p = line; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        if (first)
            r->code = reply_code(line);
        const char *text = line[3] ? line + 4 : "";
        if (ehlo && !first)
            note_keyword(ehlo, text);
        if (used < LIM_REMOTE_REPLY) {
            int w = snprintf(r->text + used, sizeof r->text - used, "%s%s", used ? " " : "", text);
            used = w < 0                                 ? used
                   : used + (size_t)w > LIM_REMOTE_REPLY ? LIM_REMOTE_REPLY
                                                         : used + (size_t)w;
        }
        if (line[3] != '-')
            break;
    }
    set_status(r);
    return REPLY_OK;
}
