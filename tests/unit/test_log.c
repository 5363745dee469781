/*
 * test_log.c - log_format, the one place where client and server text is escaped for the
 * log: CR, LF, quotes, backslashes and NUL in a value can never split a record, end a value
 * early or forge a key; numbers come out as printf would write them; anything unknown is
 * refused loudly; a cut never breaks an escape.
 */
#include "check.h"
#include "log.h"

#include <stdarg.h>
#include <string.h>

static int fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));

static int fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int rc = log_format(out, n, f, ap);
    va_end(ap);
    return rc;
}

/* one_record: the text is one printable line whose quotes (those not escaped) pair up,
 * and every backslash starts a whole escape (\" \\ \xNN). */
static int one_record(const char *s)
{
    int quotes = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c >= 0x7f)
            return 0;
        if (c == '"')
            quotes++;
        if (c == '\\') {
            if (p[1] == '"' || p[1] == '\\')
                p++;
            else if (p[1] == 'x' && p[2] && p[3] && strchr("0123456789abcdef", p[2]) &&
                     strchr("0123456789abcdef", p[3]))
                p += 3;
            else
                return 0;
        }
    }
    return quotes % 2 == 0;
}

/* count: occurrences of needle in s. */
static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

void test_log(void)
{
    char out[1024];
    const char *forged = "x\" event=login user=admin\r\nforged";
    /* Unquoted: the space that would start a new key is escaped too. */
    CHECK(fmt(out, sizeof out, "user=%s result=fail", forged) == 0);
    CHECK(strcmp(out, "user=x\\\"\\x20event=login\\x20user=admin\\x0d\\x0aforged result=fail") ==
          0);
    CHECK(one_record(out) && count(out, " user=") == 0 && count(out, "result=") == 1);
    /* Quoted: the quote cannot close the value, CR LF cannot end the record. */
    CHECK(fmt(out, sizeof out, "user=\"%s\" error=\"%s\"", forged, "a\\b\"c") == 0);
    CHECK(strcmp(out, "user=\"x\\\" event=login user=admin\\x0d\\x0aforged\" "
                      "error=\"a\\\\b\\\"c\"") == 0);
    CHECK(one_record(out));
    /* NUL cuts a C string: what follows never reaches the log, with or without a precision. */
    const char nul[] = "admin\0 result=ok\nforged";
    CHECK(fmt(out, sizeof out, "user=%s result=fail", nul) == 0);
    CHECK(strcmp(out, "user=admin result=fail") == 0);
    CHECK(fmt(out, sizeof out, "user=%.*s|%.20s", (int)sizeof nul, nul, nul) == 0);
    CHECK(strcmp(out, "user=admin|admin") == 0);
    /* 8-bit, DEL, TAB. */
    CHECK(fmt(out, sizeof out, "v=\"%s\"", "\xc3\xa9\x7f\t") == 0);
    CHECK(strcmp(out, "v=\"\\xc3\\xa9\\x7f\\x09\"") == 0);
    /* %c is escaped like a one-byte string; %% stays. */
    CHECK(fmt(out, sizeof out, "c=%c q=\"%c\" p=100%%", ' ', '"') == 0);
    CHECK(strcmp(out, "c=\\x20 q=\"\\\"\" p=100%") == 0);
    /* Every numeric conversion the code base uses, with printf's own rendering. */
    CHECK(fmt(out, sizeof out, "%d %ld %lld %zu %u %x %5d|%-3d|%03d %i %hd %zd", -1, 2L, -3LL,
              (size_t)4, 5u, 255u, 6, 7, 8, 9, (short)10, (ssize_t)-11) == 0);
    CHECK(strcmp(out, "-1 2 -3 4 5 ff     6|7  |008 9 10 -11") == 0);
    CHECK(fmt(out, sizeof out, "octets=%lld/%lld accounts=%zu", 10LL, 20LL, (size_t)3) == 0);
    CHECK(strcmp(out, "octets=10/20 accounts=3") == 0);
    /* Unsupported conversions are refused loudly, never guessed at. */
    CHECK(fmt(out, sizeof out, "a=%d f=%f b=%d", 1, 2.0, 3) == -1);
    CHECK(strcmp(out, "a=1 f= unsupported-log-format=%f") == 0);
    CHECK(fmt(out, sizeof out, "s=%10s", "padded") == -1 && strstr(out, "unsupported"));
    CHECK(fmt(out, sizeof out, "e=\"%f\" n=%d", 1.0, 2) == -1 && one_record(out));
    CHECK(strcmp(out, "e=\"\" unsupported-log-format=%f") == 0);
    CHECK(fmt(out, sizeof out, "p=%p", (void *)out) == -1 && strstr(out, "unsupported"));
    /* A cut falls between whole escapes, closes an open quoted value, and says so. */
    char small[48];
    for (size_t n = 17; n <= sizeof small; n++) {
        CHECK(fmt(small, n, "user=\"%s\" result=ok", "\r\n\r\n\"\"\"\"aaaaaaaaaaaaaaaaaaaa") == 0);
        CHECK(strlen(small) < n && one_record(small));
        CHECK(strstr(small, " truncated=yes") != NULL);
    }
    CHECK(fmt(small, sizeof small, "user=%s", "short") == 0 && strcmp(small, "user=short") == 0);
}
