/*
 * io.c - bounded line reader and buffered writer (see io.h for the contract).
 *
 * Invariants: in[in_pos..in_len) is unread input; out[0..out_len) is unwritten output.
 * The only blocking calls are poll()+read() in fill() and write() in io_flush().
 * in_line is set while IO_TOOLONG pieces of one line are returned: the line's deadline,
 * set when it started (start_line), then holds until its LF (or whatever ends it).
 */
#include "io.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

void io_init(struct io *io, int in_fd, int out_fd)
{
    io->in_fd = in_fd;
    io->out_fd = out_fd;
    io->transport = NULL;
    io->transport_data = NULL;
    io->timeout_ms = 0;
    io->deadline_ms = 0;
    io->in_line = 0;
    io->readmax = LIM_IO_INBUF;
    io->in_pos = io->in_len = 0;
    io->out_len = 0;
    io->out_error = 0;
}

void io_set_timeout(struct io *io, int ms)
{
    io->timeout_ms = ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(io->out_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* start_line: a new line is wanted; it has timeout_ms from now to arrive whole. */
static void start_line(struct io *io)
{
    if (!io->in_line)
        io->deadline_ms = now_ms() + io->timeout_ms;
    io->in_line = 1;
}

int io_wait_ms(const struct io *io)
{
    if (io->timeout_ms <= 0)
        return -1;
    long long left = io->deadline_ms - now_ms();
    return left <= 0 ? 0 : left > io->timeout_ms ? io->timeout_ms : (int)left;
}

size_t io_pending(const struct io *io)
{
    return io->in_len - io->in_pos;
}

/* fill: read more input into the (compacted) buffer; flush output first, since the peer may
 * be waiting for our replies before it sends more. */
static enum io_status fill(struct io *io)
{
    if (io->in_pos > 0) {
        memmove(io->in, io->in + io->in_pos, io->in_len - io->in_pos);
        io->in_len -= io->in_pos;
        io->in_pos = 0;
    }
    if (io_flush(io) < 0 || io->out_error)
        return IO_ERROR;
    for (;;) {
        int ready = io->transport && io->transport->pending(io) > 0;
        if (io->timeout_ms > 0 && !ready) {
            struct pollfd p = {.fd = io->in_fd, .events = POLLIN};
            /* After the deadline poll(0) still takes what has arrived; only an empty socket
             * times out, so a line already sent in full is never refused for lateness. */
            int r = poll(&p, 1, io_wait_ms(io));
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return IO_ERROR;
            if (r == 0)
                return IO_TIMEOUT;
        }
        size_t room = sizeof io->in - io->in_len;
        if (room > io->readmax)
            room = io->readmax;
        ssize_t n = io->transport ? io->transport->read(io, io->in + io->in_len, room)
                                  : read(io->in_fd, io->in + io->in_len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return IO_TIMEOUT; /* the transport's wait reached the deadline (tls.c) */
        if (n < 0)
            return errno == ECONNRESET ? IO_EOF : IO_ERROR;
        if (n == 0)
            return IO_EOF;
        io->in_len += (size_t)n;
        return IO_LINE;
    }
}

enum io_status io_getline(struct io *io, char *buf, size_t cap, size_t *len)
{
    size_t got = 0;
    *len = 0;
    buf[0] = '\0';
    start_line(io);
    for (;;) {
        size_t avail = io->in_len - io->in_pos;
        size_t want = cap - got;
        size_t take = avail < want ? avail : want;
        const char *start = io->in + io->in_pos;
        const char *lf = memchr(start, '\n', take);
        if (lf)
            take = (size_t)(lf - start) + 1;
        memcpy(buf + got, start, take);
        got += take;
        io->in_pos += take;
        buf[got] = '\0';
        if (lf) {
            *len = got;
            io->in_line = 0;
            return IO_LINE;
        }
        if (got == cap) {
            /* A piece never ends in CR: that CR stays unread, so that a CRLF split by the
             * piece size is still seen whole on the next call. */
            if (got > 1 && buf[got - 1] == '\r') {
                buf[--got] = '\0';
                io->in_pos--;
            }
            *len = got;
            return IO_TOOLONG;
        }
        enum io_status st = fill(io);
        if (st != IO_LINE) {
            /* An unterminated tail at EOF is not a line: drop it (RFC 5321 2.3.8). */
            buf[0] = '\0';
            io->in_line = 0;
            return st;
        }
    }
}

enum io_status io_skipline(struct io *io)
{
    start_line(io);
    for (;;) {
        const char *start = io->in + io->in_pos;
        const char *lf = memchr(start, '\n', io->in_len - io->in_pos);
        if (lf) {
            io->in_pos += (size_t)(lf - start) + 1;
            io->in_line = 0;
            return IO_LINE;
        }
        io->in_pos = io->in_len;
        enum io_status st = fill(io);
        if (st != IO_LINE) {
            io->in_line = 0;
            return st;
        }
    }
}

void io_discard_input(struct io *io)
{
    io->in_pos = io->in_len = 0;
    io->in_line = 0;
}

int io_flush(struct io *io)
{
    size_t off = 0;
    while (!io->out_error && off < io->out_len) {
        ssize_t n = io->transport ? io->transport->write(io, io->out + off, io->out_len - off)
                                  : write(io->out_fd, io->out + off, io->out_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            io->out_error = 1;
            break;
        }
        off += (size_t)n;
    }
    io->out_len = 0;
    return io->out_error ? -1 : 0;
}

void io_put(struct io *io, const char *s, size_t n)
{
    while (n > 0) {
        if (io->out_len == sizeof io->out)
            io_flush(io);
        size_t room = sizeof io->out - io->out_len;
        size_t take = n < room ? n : room;
        memcpy(io->out + io->out_len, s, take);
        io->out_len += take;
        s += take;
        n -= take;
    }
}

void io_puts(struct io *io, const char *s)
{
    io_put(io, s, strlen(s));
}

void io_printf(struct io *io, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* Replies are short; one longer than tmp is cut rather than allocated for. */
    io_put(io, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
