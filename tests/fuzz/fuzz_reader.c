/*
 * fuzz_reader.c - the line reader under arbitrary chunking: data[0] picks the largest read
 * and data[1] the piece size; the rest is the input. Checked: every IO_LINE ends in its
 * only LF, no piece holds an LF, no CRLF is split between two pieces, and the
 * pieces put together are the input up to its last LF (and whole pieces of the tail).
 */
#include "fuzz.h"
#include "io.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 60000)
        return 0;
    size_t readmax = (size_t)data[0] % 64 + 1, cap = (size_t)data[1] % 40 + 2;
    const char *in = (const char *)data + 2;
    size_t n = size - 2;
    int p[2];
    if (pipe(p) != 0)
        abort();
    if (write(p[1], in, n) != (ssize_t)n)
        abort();
    close(p[1]);
    static struct io io;
    io_init(&io, p[0], -1);
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
        off += len;
    }
    const char *last = memrchr(in, '\n', n);
    /* Every line was returned; of an unterminated tail, only whole pieces were. */
    fuzz_check(off >= (last ? (size_t)(last - in) + 1 : 0) && n - off < cap);
    close(p[0]);
    return 0;
}
