/*
 * address.c - reverse-path / forward-path parsing (RFC 5321 4.1.2) and lookup keys.
 *
 * Accepted: "<mailbox>", "<>" (MAIL only), an obsolete source route "<@a,@b:mailbox>"
 * (RFC 5321 4.1.2 / C: accepted and ignored), a quoted local part, and a domain or an
 * address literal. Limits of RFC 5321 4.5.3.1 apply. Leniency (Postfix does the same):
 * a space after the colon ("MAIL FROM: <a@b>") is allowed.
 * XXX: SMTPUTF8 (RFC 6531) addresses are not accepted; 8-bit in a path is a syntax error.
 */
#include "smtpd.h"

#include <ctype.h>
#include <string.h>

/* atext of RFC 5322 3.2.3 */
static int is_atext(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static int valid_dot_string(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && s[i + 1] == '.')
            return 0;
        if (s[i] != '.' && !is_atext((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static int valid_quoted(const char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"')
        return 0;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') {
            if (++i + 1 >= n || (unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
                return 0;
        } else if (c < 0x20 || c > 0x7e || c == '"') {
            return 0;
        }
    }
    return 1;
}

static int valid_domain(const char *s, size_t n)
{
    if (n == 0 || n > LIM_DOMAIN)
        return 0;
    if (s[0] == '[') { /* address literal: checked loosely, printable, no brackets inside */
        if (s[n - 1] != ']' || n < 3)
            return 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (!isalnum((unsigned char)s[i]) && !strchr(".:-", s[i]))
                return 0;
        return 1;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)s[i]) || (s[i] == '-' && label > 0)) {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return label > 0 && s[n - 1] != '-';
}

int smtp_parse_path(char *arg, int null_ok, char *out, size_t outlen, char **params)
{
    while (*arg == ' ')
        arg++;
    if (*arg != '<')
        return -1;
    char *end = NULL;
    /* Find the closing '>' outside a quoted string. */
    int quoted = 0;
    for (char *p = arg + 1; *p; p++) {
        if (quoted && *p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == '"')
            quoted = !quoted;
        else if (*p == '>' && !quoted) {
            end = p;
            break;
        }
    }
    if (!end)
        return -1;
    char *path = arg + 1;
    size_t n = (size_t)(end - path);
    *params = end + 1;
    if (**params != '\0' && **params != ' ')
        return -1;
    while (**params == ' ')
        (*params)++;
    if (n == 0) {
        if (!null_ok)
            return -1;
        out[0] = '\0';
        return 0;
    }
    if (n > LIM_PATH)
        return -1;
    /* A-d-l source route: "@one,@two:" before the mailbox is dropped. */
    if (path[0] == '@') {
        char *colon = memchr(path, ':', n);
        if (!colon)
            return -1;
        n -= (size_t)(colon + 1 - path);
        path = colon + 1;
    }
    /* The local part ends at the last '@' (a quoted local part may hold '@'). */
    char *at = NULL;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '@')
            at = path + i;
    if (!at)
        return -1;
    size_t local = (size_t)(at - path), dom = n - local - 1;
    if (local > LIM_LOCALPART)
        return -1;
    if (!valid_dot_string(path, local) && !valid_quoted(path, local))
        return -1;
    if (!valid_domain(at + 1, dom))
        return -1;
    if (n >= outlen)
        return -1;
    memcpy(out, path, n);
    out[n] = '\0';
    return 0;
}

int smtp_param_next(char **params, char **key, char **value)
{
    char *p = *params;
    while (*p == ' ')
        p++;
    if (*p == '\0')
        return 0;
    *key = p;
    while (*p && *p != ' ')
        p++;
    if (*p)
        *p++ = '\0';
    *params = p;
    char *eq = strchr(*key, '=');
    if (eq) {
        *eq = '\0';
        *value = eq + 1;
    } else {
        *value = *key + strlen(*key);
    }
    return 1;
}

void smtp_lookup_key(const struct smtp_session *s, const char *addr, int strip, char *key,
                     size_t keylen, const char **domain)
{
    const char *at = strrchr(addr, '@');
    size_t local = at ? (size_t)(at - addr) : strlen(addr);
    size_t k = 0, i = 0;
    /* RFC 5321 4.1.2: a quoted-string local part whose content needs no quoting is the same
     * mailbox as the dot-string ("bob" is bob), so the key holds the local part unquoted,
     * its quotes and escapes removed. The delimiter is looked for in that form only, so
     * that "alice+tag" is alice as alice+tag is. */
    int quoted = local >= 2 && addr[0] == '"' && addr[local - 1] == '"';
    if (quoted) {
        i = 1;
        local--;
    }
    for (; i < local && k + 1 < keylen; i++) {
        if (quoted && addr[i] == '\\' && i + 1 < local)
            i++;
        key[k++] = (char)tolower((unsigned char)addr[i]);
    }
    key[k] = '\0';
    const char *delim = s->cfg.recipient_delimiter;
    if (strip && *delim) {
        /* alice+tag: the extension starts at the first delimiter character found; with
         * nothing before it ("+x") the local part is kept whole. */
        size_t cut = strcspn(key, delim);
        if (cut > 0 && cut < k)
            k = cut;
    }
    size_t dstart = k;
    for (const char *p = at ? at : ""; *p && k + 1 < keylen; p++)
        key[k++] = (char)tolower((unsigned char)*p);
    key[k] = '\0';
    *domain = key[dstart] == '@' ? key + dstart + 1 : key + k;
}
