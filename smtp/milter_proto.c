/*
 * milter_proto.c - what a milter may send, parsed and checked (see milter.h).
 *
 * Pure: no I/O and no session, so that the fuzzer runs it on anything (tests/fuzz). A
 * milter is a program we trust to filter, not to write SMTP or RFC 5322 for us: its custom
 * replies and the header fields it adds are checked here, and a reply that fails the check
 * counts as a broken milter (milter.c applies milter_default_action), never as text that
 * reaches the client or the store unchecked.
 */
#include "milter.h"

#include <stdio.h>
#include <string.h>

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* strings: the data holds exactly n NUL-terminated strings; their starts into out. */
static int strings(const char *p, size_t len, size_t n, const char **out)
{
    for (size_t i = 0; i < n; i++) {
        const char *nul = memchr(p, '\0', len);
        if (!nul)
            return -1;
        out[i] = p;
        len -= (size_t)(nul - p) + 1;
        p = nul + 1;
    }
    return len == 0 ? 0 : -1;
}

/* field_name: RFC 5322 2.2 ftext, 1 to 998 - 2 octets. */
static int field_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 996)
        return -1;
    for (; *s; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
            return -1;
    return 0;
}

/* field_value: no NUL (by construction), no CR except before LF, and every line break
 * followed by a space or a tab (a fold), so that the value stays one field. Lines of at
 * most 998 octets (RFC 5322 2.1.1). */
static int field_value(const char *s)
{
    size_t line = 0;
    for (; *s; s++) {
        if (*s == '\r' && s[1] != '\n')
            return -1;
        if (*s == '\n') {
            if (s[1] != ' ' && s[1] != '\t')
                return -1;
            line = 0;
        } else if (*s != '\r' && ++line > 996) {
            return -1;
        }
    }
    return 0;
}

/* smtp_reply_text: an SMTP reply (RFC 5321 4.2) with class 4 or 5: every line "CODE-text"
 * but the last "CODE text" or "CODE", one code throughout, printable ASCII; lines may end
 * with CRLF or LF inside. Copied into r->text with CRLF between lines. */
static int reply_text(const char *s, struct milter_reply *r)
{
    size_t o = 0, lines = 0;
    const char *code = s;
    if ((s[0] != '4' && s[0] != '5') || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
        return -1;
    for (;;) {
        if (strncmp(s, code, 3) != 0 || ++lines > LIM_MILTER_REPLY_LINES)
            return -1;
        size_t n = strcspn(s, "\r\n");
        int last = s[n] == '\0';
        if (n > 3 && s[3] != (last ? ' ' : '-'))
            return -1;
        if (n == 3 && !last)
            return -1;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
                return -1;
        if (o + n + 2 > LIM_MILTER_REPLY)
            return -1;
        memcpy(r->text + o, s, n);
        o += n;
        if (last)
            break;
        s += n + (s[n] == '\r' ? 1 : 0);
        if (*s != '\n' || s[1] == '\0')
            return -1;
        s++;
        r->text[o++] = '\r';
        r->text[o++] = '\n';
    }
    r->text[o] = '\0';
    r->temporary = code[0] == '4';
    return 0;
}

int milter_parse(const char *pkt, size_t len, struct milter_reply *r)
{
    memset(r, 0, sizeof *r);
    if (len < 1)
        return -1;
    r->cmd = pkt[0];
    const char *d = pkt + 1;
    size_t n = len - 1;
    const char *s[2];
    static const struct {
        char cmd;
        enum milter_kind kind;
    } simple[] = {
        {'c', MK_CONTINUE}, {'a', MK_ACCEPT},   {'r', MK_REJECT}, {'t', MK_TEMPFAIL},
        {'d', MK_DISCARD},  {'p', MK_PROGRESS}, {'s', MK_SKIP},
    };
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (r->cmd == simple[i].cmd) {
            r->kind = simple[i].kind;
            return n == 0 ? 0 : -1;
        }
    switch (r->cmd) {
    case 'y': /* SMFIR_REPLYCODE: "550 5.7.1 text\0" */
        r->kind = MK_REPLY;
        if (strings(d, n, 1, s) < 0)
            return -1;
        return reply_text(s[0], r);
    case 'h': /* SMFIR_ADDHEADER: name\0 value\0 */
        r->kind = MK_ADDHEADER;
        if (strings(d, n, 2, s) < 0)
            return -1;
        break;
    case 'i': /* SMFIR_INSHEADER, SMFIR_CHGHEADER: index, name\0 value\0 */
    case 'm':
        r->kind = r->cmd == 'i' ? MK_INSHEADER : MK_CHGHEADER;
        if (n < 4 || strings(d + 4, n - 4, 2, s) < 0)
            return -1;
        r->index = be32(d);
        break;
    case 'O': /* SMFIC_OPTNEG's answer: version, actions, protocol (then macro lists, which
                 only SMFIF_SETSYMLIST allows and pgmail does not offer) */
        r->kind = MK_OPTNEG;
        if (n < 12)
            return -1;
        r->version = be32(d);
        r->actions = be32(d + 4);
        r->protocol = be32(d + 8);
        return 0;
    case 'b': /* SMFIR_REPLBODY */
    case '+': /* SMFIR_ADDRCPT */
    case '-': /* SMFIR_DELRCPT */
    case '2': /* SMFIR_ADDRCPT_PAR */
    case 'e': /* SMFIR_CHGFROM */
    case 'q': /* SMFIR_QUARANTINE */
        r->kind = MK_UNSUPPORTED;
        return 0;
    default:
        return -1;
    }
    if (field_name(s[0]) < 0 || field_value(s[1]) < 0)
        return -1;
    r->name = s[0];
    r->value = s[1];
    return 0;
}
