/*
 * request.c - the request head of pgmail-metrics: read with the shared bounded line reader
 * (shared/io.c) and judged here (see metrics.h for the answers).
 *
 * RFC 9112 3: request-line = method SP request-target SP HTTP-version, single spaces;
 * 2.2: a line may end in a bare LF, and empty lines before the request line are skipped;
 * 5.1: no whitespace between a field name and its colon (400); 5.2: obs-fold is refused
 * (400); 3.2: an HTTP/1.1 request needs exactly one Host field (400 otherwise).
 * Methods (RFC 9110 9.1, 15.5.6, 15.6.2): a general-purpose server must support GET and
 * HEAD, and both are served. A method RFC 9110 defines (POST, PUT, DELETE, CONNECT,
 * OPTIONS, TRACE) or PATCH (RFC 5789) is one we recognise but the resource does not allow:
 * 405 with Allow; any other token is a method we do not implement at all: 501.
 * A request body (GET with Content-Length) is never read: the connection closes after the
 * answer anyway (Connection: close).
 */
#include "metrics.h"

#include <string.h>
#include <time.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 9110 5.6.2 tchar */
static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static size_t token_len(const char *s)
{
    size_t n = 0;
    while (tchar((unsigned char)s[n]))
        n++;
    return n;
}

static enum metrics_method method_of(const char *m, size_t n)
{
    static const char *const known[] = {"POST",    "PUT",   "DELETE", "CONNECT",
                                        "OPTIONS", "TRACE", "PATCH"};
    if (n == 3 && memcmp(m, "GET", 3) == 0)
        return M_GET;
    if (n == 4 && memcmp(m, "HEAD", 4) == 0)
        return M_HEAD;
    /* Methods are case-sensitive (RFC 9110 9.1): "get" is not GET. */
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == n && memcmp(m, known[i], n) == 0)
            return M_KNOWN;
    return M_UNKNOWN;
}

/* parse_request_line: 0 with req filled, -1 when malformed. *http11: the version is 1.1. */
static int parse_request_line(char *line, struct metrics_request *req, int *http11)
{
    size_t n = token_len(line);
    if (n == 0 || line[n] != ' ')
        return -1;
    req->method = method_of(line, n);
    char *target = line + n + 1;
    size_t t = 0;
    while (target[t] > 0x20 && target[t] < 0x7f)
        t++;
    if (t == 0 || target[t] != ' ')
        return -1;
    const char *version = target + t + 1;
    if (strcmp(version, "HTTP/1.1") == 0)
        *http11 = 1;
    else if (strcmp(version, "HTTP/1.0") == 0)
        *http11 = 0;
    else
        return -1;
    /* origin-form (RFC 9112 3.2.1); the query, if any, changes nothing */
    req->metrics_path =
        (t == 8 || (t > 8 && target[8] == '?')) && memcmp(target, "/metrics", 8) == 0;
    return 0;
}

/* parse_field: 0 for a well-formed field line (RFC 9112 5), -1 otherwise; *host: it is Host. */
static int parse_field(const char *line, int *host)
{
    size_t n = token_len(line);
    if (n == 0 || line[n] != ':')
        return -1;
    for (const unsigned char *p = (const unsigned char *)line + n + 1; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return -1;
    *host = n == 4 && strncasecmp(line, "host", 4) == 0;
    return 0;
}

/* read_line: the next line, its line end removed: IO_LINE, IO_TOOLONG (skipped), or what
 * stopped the reader. The timeout left of the head's is what this line may take. */
static enum io_status read_line(struct io *io, long long deadline, char *buf, size_t *len)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return IO_TIMEOUT;
    io_set_timeout(io, (int)left);
    enum io_status st = io_getline(io, buf, METRICS_LINE_MAX, len);
    if (st == IO_TOOLONG)
        return IO_TOOLONG; /* not skipped: the answer is 400 and the connection closes */
    if (st != IO_LINE)
        return st;
    if (memchr(buf, '\0', *len))
        return IO_TOOLONG; /* a NUL would cut the line short: malformed like a long one */
    *len -= 1;
    if (*len && buf[*len - 1] == '\r')
        *len -= 1;
    buf[*len] = '\0';
    return IO_LINE;
}

void metrics_request_read(struct io *io, int timeout_ms, struct metrics_request *req)
{
    static char line[METRICS_LINE_MAX + 1];
    long long deadline = now_ms() + timeout_ms;
    size_t len, total = 0;
    int fields = 0, hosts = 0, http11 = 0, started = 0, blank = 0;
    memset(req, 0, sizeof *req);
    for (;;) {
        enum io_status st = read_line(io, deadline, line, &len);
        if (st == IO_TIMEOUT) {
            req->status = 408;
            return;
        }
        if (st == IO_TOOLONG) {
            req->status = 400;
            return;
        }
        if (st != IO_LINE) {
            req->status = started ? 400 : 0; /* a head cut short is malformed */
            return;
        }
        total += len + 2;
        if (total > METRICS_HEADERS_MAX) {
            req->status = 400;
            return;
        }
        if (!started) {
            if (len == 0 && ++blank <= 4)
                continue; /* RFC 9112 2.2: empty lines before the request line */
            started = 1;
            if (parse_request_line(line, req, &http11) < 0) {
                req->status = 400;
                return;
            }
            continue;
        }
        if (len == 0)
            break; /* the end of the head */
        int host = 0;
        if (++fields > METRICS_FIELDS_MAX || line[0] == ' ' || line[0] == '\t' ||
            parse_field(line, &host) < 0) {
            req->status = 400;
            return;
        }
        hosts += host;
    }
    if ((http11 && hosts != 1) || hosts > 1)
        req->status = 400;
    else if (req->method == M_UNKNOWN)
        req->status = 501;
    else if (!req->metrics_path)
        req->status = 404;
    else if (req->method == M_KNOWN)
        req->status = 405;
    else
        req->status = 200;
}
