/*
 * fuzz_reply.c - pgmail-relay's reply parser (relay/reply.c: every reply a remote SMTP
 * server sends goes through it) on what a hostile or broken server may send. data[0] picks
 * the largest read (so that replies arrive split anywhere) and whether the replies are
 * EHLO's (keywords noted); the rest is the server's bytes, read reply after reply until the
 * parser stops. Checked for each reply: a whole one has a three-digit code, text of
 * printable ASCII within LIM_REMOTE_REPLY, and a status that is "C.D.D" with C the reply's
 * class and 1 to 3 digits in each of the other two parts, or empty (only below 200); a
 * failed read leaves code 0 and empty text; every reply consumed at least one line, so
 * the loop ends. The EHLO flags are 0 or 1.
 */
#include "../../relay/reply.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int digits(const char *s, size_t *n)
{
    *n = strspn(s, "0123456789");
    return *n >= 1 && *n <= 3;
}

static void check_status(const struct relay_reply *r)
{
    const char *s = r->status;
    if (!s[0]) {
        fuzz_check(r->code < 200);
        return;
    }
    size_t a, b, c;
    fuzz_check(digits(s, &a) && a == 1 && s[0] - '0' == r->code / 100 && s[1] == '.');
    fuzz_check(digits(s + 2, &b) && s[2 + b] == '.');
    fuzz_check(digits(s + 3 + b, &c) && s[3 + b + c] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 60000)
        return 0;
    int p[2];
    if (pipe(p) != 0)
        abort();
    if (size > 1 && write(p[1], data + 1, size - 1) != (ssize_t)(size - 1))
        abort();
    close(p[1]);
    static struct io io;
    io_init(&io, p[0], -1);
    io.readmax = (size_t)(data[0] >> 1) % 64 + 1;
    struct relay_ehlo e = {.size = -1};
    struct relay_ehlo *ehlo = data[0] & 1 ? &e : NULL;
    size_t replies = 0;
    for (;;) {
        struct relay_reply r;
        memset(&r, 'x', sizeof r); /* nothing may survive from before the call */
        enum relay_reply_status st = relay_reply_read(&io, &r, ehlo);
        if (st != REPLY_OK) {
            fuzz_check(r.code == 0 && r.text[0] == '\0' && r.status[0] == '\0');
            break;
        }
        fuzz_check(r.code >= 0 && r.code <= 999);
        size_t n = strnlen(r.text, sizeof r.text);
        fuzz_check(n <= LIM_REMOTE_REPLY);
        for (size_t i = 0; i < n; i++)
            fuzz_check(r.text[i] >= 0x20 && r.text[i] < 0x7f);
        fuzz_check(strnlen(r.status, sizeof r.status) < sizeof r.status);
        check_status(&r);
        fuzz_check(++replies <= size); /* each reply took at least one line */
    }
    fuzz_check(e.pipelining <= 1 && e.starttls <= 1 && e.auth_plain <= 1 && e.auth_login <= 1);
    close(p[0]);
    return 0;
}
