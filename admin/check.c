/*
 * check.c - validation of domains, addresses, byte counts and imported hashes (see check.h).
 *
 * Only ASCII is accepted (no IDNA U-labels, no SMTPUTF8 local parts) and ASCII case is folded
 * here, once, so that everything stored is lower-case. Rejected input is echoed through
 * log_clean, so that a message stays one printable line.
 *
 * XXX admin_check_hash belongs with the other crypt(3) code in shared/auth.c.
 */
#include "check.h"
#include "fail.h"
#include "log.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5321 4.1.2 / RFC 5322 3.2.3 atext */
static int is_atext(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static void copy_lower(char *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    out[n] = '\0';
}

static int bad(const char *what, const char *arg, const char *why)
{
    char shown[80];
    admin_fail("invalid %s \"%s\": %s", what, log_clean(shown, sizeof shown, arg), why);
    return -1;
}

/* domain_problem: NULL when the n octets at s are a valid domain name, else why not. */
static const char *domain_problem(const char *s, size_t n)
{
    if (n == 0)
        return "empty domain";
    if (n > LIM_DOMAIN)
        return "longer than 255 octets";
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? s[i] : '.';
        if (c == '.') {
            if (label == 0)
                return i == 0 ? "starts with a dot" : i == n ? "ends with a dot" : "empty label";
            if (s[i - 1] == '-')
                return "a label ends with a hyphen";
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-')
            return "only letters, digits, hyphens and dots are allowed";
        if (c == '-' && label == 0)
            return "a label starts with a hyphen";
        if (++label > 63)
            return "a label is longer than 63 octets";
    }
    return NULL;
}

int admin_check_domain(const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    const char *why = domain_problem(name, n);
    if (why)
        return bad("domain name", name, why);
    if (n >= outlen)
        return bad("domain name", name, "too long");
    copy_lower(out, name, n);
    return 0;
}

/* localpart_problem: NULL when the n octets at s are a Dot-string of at most 64 octets. */
static const char *localpart_problem(const char *s, size_t n)
{
    if (n == 0)
        return "empty local part";
    if (n > LIM_LOCALPART)
        return "local part longer than 64 octets";
    if (s[0] == '.' || s[n - 1] == '.')
        return "local part starts or ends with a dot";
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && s[i + 1] == '.')
            return "two dots in a row in the local part";
        if (s[i] != '.' && !is_atext(s[i]))
            return "local part has a character outside RFC 5321 atext";
    }
    return NULL;
}

int admin_check_address(const char *arg, struct admin_address *out)
{
    const char *at = strchr(arg, '@');
    if (!at)
        return bad("address", arg, "expected localpart@domain");
    const char *why = localpart_problem(arg, (size_t)(at - arg));
    if (!why)
        why = domain_problem(at + 1, strlen(at + 1));
    if (!why && strlen(arg) >= sizeof out->text)
        why = "longer than 254 octets";
    if (why)
        return bad("address", arg, why);
    copy_lower(out->text, arg, strlen(arg));
    out->domain = out->text + (at - arg) + 1;
    return 0;
}

int admin_check_bytes(const char *arg, int none_ok, char *buf, size_t len, const char **value)
{
    if (none_ok && strcmp(arg, "none") == 0) {
        *value = NULL;
        return 0;
    }
    if (arg[0] == '\0' || strspn(arg, "0123456789") != strlen(arg))
        return bad("byte count", arg, none_ok ? "expected digits or none" : "expected digits");
    errno = 0;
    long long n = strtoll(arg, NULL, 10);
    if (errno == ERANGE)
        return bad("byte count", arg, "too large");
    snprintf(buf, len, "%lld", n);
    *value = buf;
    return 0;
}

int admin_check_duration(const char *arg, char *buf, size_t len)
{
    static const char units[] = "smhdw";
    static const long long seconds[] = {1, 60, 3600, 86400, 604800};
    size_t digits = strspn(arg, "0123456789");
    const char *u = digits > 0 && digits <= 9 && arg[digits] && !arg[digits + 1]
                        ? strchr(units, arg[digits])
                        : NULL;
    if (!u)
        return bad("duration", arg, "expected a number and s, m, h, d or w, such as 24h or 7d");
    long long n = strtoll(arg, NULL, 10) * seconds[u - units];
    if (n <= 0 || n > 10LL * 366 * 86400)
        return bad("duration", arg, "expected more than 0 and at most 10 years");
    snprintf(buf, len, "%lld", n);
    return 0;
}

/* The hash is not echoed: it is as good as the password to an offline attacker. */
static int bad_hash(const char *why)
{
    admin_fail("invalid hash on standard input: %s", why);
    return -1;
}

int admin_check_hash(const char *hash)
{
    if (hash[0] != '$')
        return bad_hash("a crypt(3) hash starts with '$'");
    for (const char *p = hash; *p; p++)
        if (*p <= ' ' || *p > '~')
            return bad_hash("a crypt(3) hash is printable ASCII without spaces");
    switch (crypt_checksalt(hash)) {
    case CRYPT_SALT_INVALID:
        return bad_hash("not a method crypt(3) knows");
    case CRYPT_SALT_METHOD_DISABLED:
        return bad_hash("method disabled in this system's crypt(3)");
    default:
        break;
    }
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd) {
        admin_fail("out of memory");
        return -1;
    }
    /* A well-formed hash used as the setting yields a hash of the same shape and length. */
    const char *h = crypt_r("", hash, cd);
    int ok = h && h[0] != '*' && strlen(h) == strlen(hash);
    free(cd);
    return ok ? 0 : bad_hash("malformed for its method");
}
