/*
 * headers.c - a message's header section, held while its body streams into the database
 * (see milter.h).
 *
 * The section is the one part of a message that pgmail-smtpd keeps in memory: milters read
 * it field by field and may change it only at the end of the message, after the body has
 * gone to PostgreSQL, so the store takes the section last (store.c). Its size is bounded
 * by header_size_limit for the client's text and by LIM_HEADER_EDITS for what milters add:
 * the buffer is allocated once per message and never grows. Fields are an index over the
 * text: an edit appends its text and moves entries of the index, nothing is copied twice.
 */
#include "milter.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int hdrs_init(struct hdrs *h, size_t cap)
{
    memset(h, 0, sizeof *h);
    h->buf = malloc(cap);
    if (!h->buf)
        return -1;
    h->cap = cap;
    return 0;
}

void hdrs_free(struct hdrs *h)
{
    free(h->buf);
    free(h->f);
    memset(h, 0, sizeof *h);
}

int hdrs_field_start(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 && p[i] != ':')
        i++;
    return i > 0 && i < n && p[i] == ':';
}

/* slot: room for one more entry in the index at position at (entries after it move). */
static int slot(struct hdrs *h, size_t at)
{
    if (h->n == h->fcap) {
        size_t cap = h->fcap ? h->fcap * 2 : 64;
        void *p = realloc(h->f, cap * sizeof *h->f);
        if (!p)
            return -1;
        h->f = p;
        h->fcap = cap;
    }
    memmove(&h->f[at + 1], &h->f[at], (h->n - at) * sizeof *h->f);
    h->n++;
    return 0;
}

int hdrs_append(struct hdrs *h, const char *p, size_t n, int new_field)
{
    if (n > h->cap - h->len || (!new_field && h->n == 0))
        return -1;
    if (new_field) {
        if (slot(h, h->n) < 0)
            return -1;
        struct hdr_field *f = &h->f[h->n - 1];
        f->off = h->len;
        f->len = 0;
        f->namelen = strcspn(p, ":");
        if (f->namelen > n)
            f->namelen = n;
    }
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    h->f[h->n - 1].len += n;
    return 0;
}

static void drop(struct hdrs *h, size_t i)
{
    memmove(&h->f[i], &h->f[i + 1], (h->n - i - 1) * sizeof *h->f);
    h->n--;
}

static int named(const struct hdrs *h, size_t i, const char *name)
{
    const struct hdr_field *f = &h->f[i];
    return f->namelen == strlen(name) && strncasecmp(h->buf + f->off, name, f->namelen) == 0;
}

/* skip_cfws: past white space, line breaks and (nested) comments (RFC 5322 3.2.2). */
static const char *skip_cfws(const char *p, const char *end)
{
    int depth = 0;
    for (; p < end; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && depth > 0)
            depth--;
        else if (depth == 0 && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            break;
        else if (depth > 0 && *p == '\\' && p + 1 < end)
            p++;
    }
    return p;
}

size_t hdrs_drop_claims(struct hdrs *h, const char *authserv_id)
{
    size_t dropped = 0, idlen = strlen(authserv_id);
    for (size_t i = 0; i < h->n;) {
        if (named(h, i, "Authentication-Results")) {
            /* RFC 8601 2.2: the value starts with the authserv-id, a domain or a quoted
             * string, after optional CFWS; ';' or CFWS (a version) follows it. */
            const struct hdr_field *f = &h->f[i];
            const char *end = h->buf + f->off + f->len;
            const char *p = skip_cfws(h->buf + f->off + f->namelen + 1, end);
            int quoted = p < end && *p == '"';
            p += quoted;
            if ((size_t)(end - p) >= idlen && strncasecmp(p, authserv_id, idlen) == 0 &&
                (p + idlen == end || strchr(quoted ? "\"" : "; \t\r\n(", p[idlen]) != NULL)) {
                drop(h, i);
                dropped++;
                continue;
            }
        }
        i++;
    }
    return dropped;
}

size_t hdrs_value(const struct hdrs *h, size_t i, char *out, size_t cap, int leadspc)
{
    const struct hdr_field *f = &h->f[i];
    const char *p = h->buf + f->off + f->namelen + 1, *end = h->buf + f->off + f->len;
    if (end - p >= 2 && end[-2] == '\r' && end[-1] == '\n')
        end -= 2;
    if (!leadspc && p < end && (*p == ' ' || *p == '\t'))
        p++;
    size_t o = 0;
    for (; p < end && o + 1 < cap; p++)
        if (!(*p == '\r' && p + 1 < end && p[1] == '\n'))
            out[o++] = *p;
    out[o] = '\0';
    return o;
}

/* put: the text of a new field "name: value\r\n" (value as a milter sent it: folds by LF
 * become CRLF) at the end of the buffer, into *f. -1 when the room is used up. */
static int put(struct hdrs *h, const char *name, const char *value, int leadspc,
               struct hdr_field *f)
{
    size_t need = strlen(name) + 2 + 2 * strlen(value) + 2;
    if (need > h->cap - h->len)
        return -1;
    char *o = h->buf + h->len;
    f->off = h->len;
    f->namelen = strlen(name);
    memcpy(o, name, f->namelen);
    o += f->namelen;
    *o++ = ':';
    if (!leadspc)
        *o++ = ' ';
    for (const char *p = value; *p; p++) {
        if (*p == '\n' && (p == value || p[-1] != '\r'))
            *o++ = '\r';
        *o++ = *p;
    }
    *o++ = '\r';
    *o++ = '\n';
    f->len = (size_t)(o - (h->buf + h->len));
    h->len += f->len;
    return 0;
}

int hdrs_insert(struct hdrs *h, size_t index, const char *name, const char *value, int leadspc)
{
    struct hdr_field f;
    if (put(h, name, value, leadspc, &f) < 0)
        return -1;
    if (index > h->n)
        index = h->n;
    if (slot(h, index) < 0)
        return -1;
    h->f[index] = f;
    return 0;
}

int hdrs_add(struct hdrs *h, const char *name, const char *value, int leadspc)
{
    return hdrs_insert(h, h->n, name, value, leadspc);
}

int hdrs_change(struct hdrs *h, size_t index, const char *name, const char *value, int leadspc)
{
    size_t seen = 0;
    if (index == 0)
        index = 1;
    for (size_t i = 0; i < h->n; i++) {
        if (!named(h, i, name) || ++seen < index)
            continue;
        if (!value[0]) {
            drop(h, i);
            return 0;
        }
        return put(h, name, value, leadspc, &h->f[i]);
    }
    return value[0] ? hdrs_add(h, name, value, leadspc) : 0;
}

size_t hdrs_size(const struct hdrs *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        n += h->f[i].len;
    return n;
}
