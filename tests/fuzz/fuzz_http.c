/*
 * fuzz_http.c - pgmail-metrics' request reader (metrics/request.c) on what any client may
 * send, and its label escaping (metrics/expose.c). data[0] picks the largest read (so that
 * the head arrives split anywhere); the rest is the client's bytes, then end of file.
 * Checked: the answer is one of 0 (nothing), 200, 400, 404, 405, 501 (never 408: all input
 * is there at once); 200 only for GET or HEAD of /metrics and only when an empty line ended
 * the head; and an escaped label value holds no newline and no unescaped quote, so no label
 * can break out of its sample line.
 */
#include "../../metrics/metrics.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check_label(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1);
    if (!value)
        abort();
    memcpy(value, data, size);
    value[size] = '\0';
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        abort();
    metrics_write_label(f, value);
    fclose(f);
    fuzz_check(!memchr(out, '\n', len));
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '\\') {
            fuzz_check(i + 1 < len && strchr("\\\"n", out[i + 1]));
            i++;
        } else {
            fuzz_check(out[i] != '"');
        }
    }
    free(out);
    free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 60000)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    int fd = fuzz_pipe(in, n);
    static struct io io;
    io_init(&io, fd, -1);
    io.readmax = (size_t)data[0] % 64 + 1;
    struct metrics_request req;
    metrics_request_read(&io, 60000, &req);
    int st = req.status;
    fuzz_check(st == 0 || st == 200 || st == 400 || st == 404 || st == 405 || st == 501);
    if (st == 200) {
        fuzz_check(req.metrics_path && (req.method == M_GET || req.method == M_HEAD));
        fuzz_check(memmem(in, n, "\n\r\n", 3) || memmem(in, n, "\n\n", 2));
    }
    close(fd);
    check_label(data + 1, n);
    return 0;
}
