/*
 * fuzz_reader.c - the line reader under arbitrary chunking: data[0] picks the largest read
 * and data[1] the piece size; the rest is the input. Checked: every IO_LINE ends in its
 * only LF, no piece holds an LF, no CRLF is split between two pieces, and the
 * pieces put together are the input up to its last LF (and whole pieces of the tail).
 * Each line or piece is also logged (log_format, quoted and unquoted, into a buffer that
 * may cut it): the record is one printable line whose unescaped quotes pair up and whose
 * every backslash starts a whole escape, so no input can split or forge a log record.
 */
#include "fuzz.h"
#include "io.h"
#include "log.h"

#include <stdarg.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));

static void fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    fuzz_check(log_format(out, n, f, ap) == 0);
    va_end(ap);
}

/* check_record: what the header says of a log record. */
static void check_record(const char *s)
{
    int quotes = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        fuzz_check(c >= 0x20 && c < 0x7f);
        quotes += c == '"';
        if (c == '\\') {
            fuzz_check(p[1] == '"' || p[1] == '\\' || (p[1] == 'x' && p[2] && p[3]));
            p += p[1] == 'x' ? 3 : 1;
        }
    }
    fuzz_check(quotes % 2 == 0);
}

static void check_log(const char *buf, size_t len, size_t cut)
{
    char rec[256];
    fmt(rec, sizeof rec, "user=%s error=\"%s\" n=%zu", buf, buf, len);
    check_record(rec);
    fmt(rec, cut, "user=\"%.*s\" rest=%s", (int)len, buf, buf);
    check_record(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 60000)
        return 0;
    size_t readmax = (size_t)data[0] % 64 + 1, cap = (size_t)data[1] % 40 + 2;
    const char *in = (const char *)data + 2;
    size_t n = size - 2;
    int fd = fuzz_pipe(in, n);
    static struct io io;
    io_init(&io, fd, -1);
    io.readmax = readmax;
    char buf[64];
    size_t off = 0, len;
    for (;;) {
        enum io_status st = io_getline(&io, buf, cap, &len);
        if (st == IO_LINE) {
            fuzz_check(len >= 1 && buf[len - 1] == '\n' && memchr(buf, '\n', len) == buf + len - 1);
        } else if (st == IO_TOOLONG) {
            fuzz_check(!memchr(buf, '\n', len));
            fuzz_check(len == cap || (len == cap - 1 && in[off + len] == '\r'));
            /* a CRLF is never split between two pieces */
            fuzz_check(buf[len - 1] != '\r' || in[off + len] != '\n');
        } else {
            fuzz_check(st == IO_EOF);
            break;
        }
        fuzz_check(off + len <= n && memcmp(in + off, buf, len) == 0);
        check_log(buf, len, 17 + (size_t)data[1] % 200);
        off += len;
    }
    const char *last = memrchr(in, '\n', n);
    /* Every line was returned; of an unterminated tail, only whole pieces were. */
    fuzz_check(off >= (last ? (size_t)(last - in) + 1 : 0) && n - off < cap);
    close(fd);
    return 0;
}
