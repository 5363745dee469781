/*
 * test_io.c - the line reader, fed the same input split at every byte position (reads of
 * 1, 2, 3 ... bytes), must find the same lines, pieces and end of file each time.
 */
#include "check.h"
#include "io.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char input[] = "EHLO a\r\nshort\nthis line is longer than sixteen\r\n\r\nno end";

/* feed: io reading, readmax bytes at a time, from a pipe holding data (small enough for
 * the pipe's buffer; write end closed). Returns the read end (to close), or -1. */
static int feed(struct io *io, const char *data, size_t n, size_t readmax)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    ssize_t w = write(fds[1], data, n);
    close(fds[1]);
    if (w != (ssize_t)n) {
        close(fds[0]);
        return -1;
    }
    io_init(io, fds[0], -1);
    io->readmax = readmax;
    return fds[0];
}

/* read_all: feed input through a pipe with reads of at most readmax bytes; concatenate
 * what io_getline returns as "L<line>" / "T<piece>" / "E" into out. */
static void read_all(size_t readmax, char *out, size_t outlen)
{
    struct io io;
    int in = feed(&io, input, sizeof input - 1, readmax);
    if (in < 0)
        return;
    char buf[17];
    size_t n;
    out[0] = '\0';
    for (;;) {
        enum io_status st = io_getline(&io, buf, 16, &n);
        size_t o = strlen(out);
        if (st == IO_LINE || st == IO_TOOLONG) {
            CHECK(strlen(buf) == n);
            snprintf(out + o, outlen - o, "%c%s|", st == IO_LINE ? 'L' : 'T', buf);
            continue;
        }
        snprintf(out + o, outlen - o, "%s", st == IO_EOF ? "E" : "X");
        break;
    }
    close(in);
}

static void skip(void)
{
    const char data[] = "0123456789abcdefghijklmnopqrstuvwxyz\r\nNEXT\r\n";
    struct io io;
    int in = feed(&io, data, sizeof data - 1, 3);
    if (in < 0)
        return;
    char buf[9];
    size_t n;
    CHECK(io_getline(&io, buf, 8, &n) == IO_TOOLONG && n == 8);
    CHECK(io_skipline(&io) == IO_LINE);
    CHECK(io_getline(&io, buf, 8, &n) == IO_LINE && strcmp(buf, "NEXT\r\n") == 0);
    CHECK(io_getline(&io, buf, 8, &n) == IO_EOF && n == 0);
    close(in);
}

/* A CRLF that falls across the piece size is never split: the CR waits for its LF. */
static void crlf_boundary(void)
{
    for (size_t readmax = 1; readmax <= 20; readmax++) {
        const char data[] = "0123456789abcde\r\n.\r\n";
        struct io io;
        int in = feed(&io, data, sizeof data - 1, readmax);
        if (in < 0)
            return;
        char buf[17];
        size_t n;
        CHECK(io_getline(&io, buf, 16, &n) == IO_TOOLONG && n == 15);
        CHECK(io_getline(&io, buf, 16, &n) == IO_LINE && strcmp(buf, "\r\n") == 0);
        CHECK(io_getline(&io, buf, 16, &n) == IO_LINE && strcmp(buf, ".\r\n") == 0);
        close(in);
    }
}

static void timeout(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return;
    ssize_t w = write(fds[1], "partial", 7);
    (void)w;
    struct io io;
    io_init(&io, fds[0], -1);
    io.timeout_ms = 50;
    char buf[32];
    size_t n;
    /* A partial line is never returned as a line: the wait ends in a timeout. */
    CHECK(io_getline(&io, buf, 31, &n) == IO_TIMEOUT && n == 0);
    close(fds[1]);
    close(fds[0]);
}

/* dribble: a child writes data one byte every gap_ms into a pipe; returns the read end
 * (the child's pid in *pid), or -1. */
static int dribble(const char *data, int gap_ms, pid_t *pid)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    *pid = fork();
    if (*pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (*pid == 0) {
        close(fds[0]);
        struct timespec gap = {gap_ms / 1000, (long)(gap_ms % 1000) * 1000000L};
        for (const char *p = data; *p; p++) {
            if (write(fds[1], p, 1) != 1)
                _exit(1);
            nanosleep(&gap, NULL);
        }
        _exit(0);
    }
    close(fds[1]);
    return fds[0];
}

/* deadline: the timeout bounds a whole line, not each read (RFC 5321 4.5.3.2). Bytes come
 * every 20 ms, well inside the 150 ms timeout, but the line takes 60 x 20 ms to arrive: it
 * times out. The pieces of an over-long line share the deadline, and a fresh line gets a
 * fresh one. */
static void deadline(void)
{
    const char slow[] = "MAIL FROM:<someone-who-types-very-slowly@example.test>\r\n";
    pid_t pid;
    int in = dribble(slow, 20, &pid);
    if (in < 0)
        return;
    struct io io;
    io_init(&io, in, -1);
    io.timeout_ms = 150;
    char buf[128];
    size_t n;
    CHECK(io_getline(&io, buf, sizeof buf - 1, &n) == IO_TIMEOUT && n == 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(in);

    in = dribble(slow, 20, &pid);
    if (in < 0)
        return;
    io_init(&io, in, -1);
    io.timeout_ms = 150;
    enum io_status st;
    int pieces = 0;
    while ((st = io_getline(&io, buf, 4, &n)) == IO_TOOLONG)
        pieces++;
    CHECK(st == IO_TIMEOUT && pieces < 20);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(in);

    /* Lines that each arrive within the timeout are all read, however long the session. */
    in = dribble("a\nb\nc\nd\ne\nf\ng\nh\n", 30, &pid);
    if (in < 0)
        return;
    io_init(&io, in, -1);
    io.timeout_ms = 150;
    int lines = 0;
    while (io_getline(&io, buf, sizeof buf - 1, &n) == IO_LINE)
        lines++;
    CHECK(lines == 8);
    waitpid(pid, NULL, 0);
    close(in);
}

static void output(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return;
    struct io io;
    io_init(&io, -1, fds[1]);
    io_puts(&io, "250-one\r\n");
    io_printf(&io, "250 %s\r\n", "two");
    char got[64] = {0};
    CHECK(io_flush(&io) == 0);
    close(fds[1]);
    ssize_t r = read(fds[0], got, sizeof got - 1);
    CHECK(r == 18 && strcmp(got, "250-one\r\n250 two\r\n") == 0);
    close(fds[0]);
}

void test_io(void)
{
    char want[512], got[512];
    read_all(LIM_IO_INBUF, want, sizeof want);
    CHECK(strcmp(want, "LEHLO a\r\n|Lshort\n|Tthis line is lon|Tger than sixteen|L\r\n|L\r\n|E") ==
          0);
    for (size_t k = 1; k < sizeof input; k++) {
        read_all(k, got, sizeof got);
        CHECK(strcmp(got, want) == 0);
    }
    skip();
    crlf_boundary();
    timeout();
    deadline();
    output();
}
