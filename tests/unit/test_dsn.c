/*
 * test_dsn.c - relay/dsn.c: the header section's length (relay_dsn_headers), and DSNs
 * whose every line ends in CRLF and is at most 998 octets, whose remote text cannot start
 * a header field or a MIME part, and whose boundary occurs nowhere in the content.
 * tests/test_dsn.py parses composed DSNs with Python's email package as a second reader.
 */
#include "check.h"
#include "../../relay/dsn.h"

#include <stdlib.h>
#include <string.h>

/* lines_ok: every line of s[0..n) ends in CRLF, holds no other CR or LF and is at most
 * 998 octets long. */
static int lines_ok(const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            return 0; /* an LF not after a CR */
        if (s[i] != '\r')
            continue;
        if (i + 1 >= n || s[i + 1] != '\n' || i - start > 998)
            return 0;
        start = i + 2;
        i++;
    }
    return start == n;
}

/* count: occurrences of needle in s[0..n). */
static int count(const char *s, size_t n, const char *needle)
{
    int c = 0;
    size_t k = strlen(needle);
    for (const char *p = s; (p = memmem(p, n - (size_t)(p - s), needle, k)) != NULL; p += k)
        c++;
    return c;
}

static void headers_len(void)
{
    const char *m = "A: 1\r\nB: 2\r\n\r\nbody\r\n";
    CHECK(relay_dsn_headers(m, strlen(m)) == 14);
    CHECK(relay_dsn_headers("\r\nbody", 6) == 2);
    CHECK(relay_dsn_headers("A: 1\r\nB: 2\r\n", 12) == 12);
    CHECK(relay_dsn_headers("A: 1\nB\n\nx", 9) == 8);
    CHECK(relay_dsn_headers("A: 1", 4) == 4);
    CHECK(relay_dsn_headers("", 0) == 0);
}

void test_dsn(void)
{
    headers_len();

    /* A hostile reply tries to end the part and add a header field; a long one must be
     * folded; the original headers hold a guess at the boundary, a line of 3000 octets,
     * a NUL and a bare LF. */
    char longreply[2100], headers[4000];
    memset(longreply, 'x', sizeof longreply - 1);
    longreply[sizeof longreply - 1] = '\0';
    memcpy(longreply + 700, " ", 1);
    size_t hl = 0;
    hl += (size_t)sprintf(headers, "Subject: hi\r\nX-Guess: --=_pgmail-dsn-7-\r\nX-Long: ");
    memset(headers + hl, 'y', 3000);
    hl += 3000;
    static const char tail[] = "\r\nX-Nul: a\0b\nX-After: bare\r\n\r\nbody\r\n";
    memcpy(headers + hl, tail, sizeof tail - 1);
    hl += sizeof tail - 1;
    struct relay_dsn_rcpt r[3] = {
        {"bob@remote.example", 0, "5.1.1", "mx.remote.example", 550,
         "5.1.1 no such user\r\n--=_pgmail-dsn\r\nBcc: victim@example\r\n", 1700000000},
        {"carol@remote.example", 1, "4.2.2", "mx2.remote.example", 452, longreply, 1700000100},
        {"dave@nowhere.example", 0, "bogus", "", 0, "no MX for the domain", 0},
    };
    struct relay_dsn d = {
        "mx.example.test", "alice@example.test", 7, 1699990000, 1700400000, r, 3, headers, hl};
    size_t n = 0;
    char *s = relay_dsn_compose(&d, &n);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK(lines_ok(s, n));
    CHECK(count(s, n, "\r\nBcc:") == 0);
    CHECK(count(s, n, "\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.test>") == 0);
    static const char from[] = "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n";
    CHECK(strncmp(s, from, sizeof from - 1) == 0);
    CHECK(count(s, n, "\r\nSubject: Undelivered Mail Returned to Sender\r\n") == 1);
    CHECK(count(s, n, "\r\nAuto-Submitted: auto-replied\r\n") == 1);
    CHECK(count(s, n, "Your email to bob@remote.example was not delivered.\r\n") == 1);
    CHECK(count(s, n, "The remote server mx.remote.example said: 550 5.1.1 no such user") == 1);
    CHECK(count(s, n, "Your email to carol@remote.example has not been delivered yet.") == 1);
    CHECK(count(s, n, "\r\nStatus: 5.1.1\r\n") == 1);
    CHECK(count(s, n, "\r\nStatus: 4.2.2\r\n") == 1);
    CHECK(count(s, n, "\r\nStatus: 5.0.0\r\n") == 1); /* "bogus" is no status code */
    CHECK(count(s, n, "\r\nDiagnostic-Code: smtp; ") == 2);
    CHECK(count(s, n, "\r\nWill-Retry-Until: ") == 1);
    CHECK(count(s, n, "\r\nX-Nul: a?b\r\nX-After: bare\r\n") == 1);
    CHECK(count(s, n, "body") == 0);
    /* The boundary: declared once, three part delimiters and the close. */
    const char *b = strstr(s, "boundary=\"");
    CHECK(b != NULL);
    if (b) {
        char boundary[100] = "\r\n--";
        size_t k = strcspn(b + 10, "\"");
        CHECK(k > 0 && k < 90);
        memcpy(boundary + 4, b + 10, k);
        boundary[4 + k] = '\0';
        CHECK(count(s, n, boundary) == 4);
        CHECK(count(s, n, boundary + 4) == 5);
    }
    free(s);

    /* Only delays: the other Subject. */
    d.rcpts = &r[1];
    d.n = 1;
    s = relay_dsn_compose(&d, &n);
    CHECK(s != NULL && count(s, n, "\r\nSubject: Delayed Mail (still being retried)\r\n") == 1);
    CHECK(s != NULL && lines_ok(s, n));
    free(s);
}
