/*
 * floor.c - the floors of pgmail's benchmark: a handler that does nothing but speak just
 * enough SMTP (for smtp-source) or POP3 (for pop3load) on fd 0/1, started per connection
 * by systemd-socket-activate exactly as pgmail's handlers are.
 *
 *   floor smtp | floor pop3
 *
 * Built twice by tests/bench/bench.py: plain (the cost of fork + exec + the protocol's
 * round trips: the spawn floor) and with -DFLOOR_LIBPQ, linked with libpq, which first
 * opens a libpq connection with the environment's PGHOST/PGUSER/PGDATABASE and closes it
 * again (the floor of any handler that talks to PostgreSQL per session).
 * Like pgmail it sets TCP_NODELAY and writes each batch of replies once, right before it
 * blocks reading. Nothing is stored: DATA is read to the final dot and thrown away; RETR
 * sends a fixed 4 KiB message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef FLOOR_LIBPQ
#include <libpq-fe.h>
#endif

static char in[65536], out[65536];
static size_t ipos, ilen, olen;

static void flush(void)
{
    for (size_t off = 0; off < olen;) {
        ssize_t w = write(1, out + off, olen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            exit(0);
        off += (size_t)w;
    }
    olen = 0;
}

static void put(const char *s, size_t n)
{
    if (olen + n > sizeof out)
        flush();
    if (n > sizeof out) {
        olen = n; /* never happens: replies are small */
        exit(1);
    }
    memcpy(out + olen, s, n);
    olen += n;
}

static void puts_(const char *s)
{
    put(s, strlen(s));
}

/* getline_: the next line (with its LF) into line, NUL-terminated, cut at cap-1; flushes
 * pending output before blocking. Returns -1 at EOF. */
static long getline_(char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (ipos == ilen) {
            flush();
            ssize_t r;
            do
                r = read(0, in, sizeof in);
            while (r < 0 && errno == EINTR);
            if (r <= 0)
                return -1;
            ipos = 0;
            ilen = (size_t)r;
        }
        char *start = in + ipos;
        char *nl = memchr(start, '\n', ilen - ipos);
        size_t take = nl ? (size_t)(nl - start) + 1 : ilen - ipos;
        if (n + take < cap) {
            memcpy(line + n, start, take);
            n += take;
        }
        ipos += take;
        if (nl) {
            line[n] = '\0';
            return (long)n;
        }
    }
}

static void smtp(void)
{
    char line[4096];
    puts_("220 floor ESMTP\r\n");
    while (getline_(line, sizeof line) >= 0) {
        if (strncasecmp(line, "EHLO", 4) == 0) {
            puts_("250-floor\r\n250 PIPELINING\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            puts_("354 go ahead\r\n");
            long n;
            while ((n = getline_(line, sizeof line)) >= 0 && strcmp(line, ".\r\n") != 0)
                ;
            if (n < 0)
                return;
            puts_("250 2.0.0 Ok: thrown away\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            puts_("221 2.0.0 Bye\r\n");
            flush();
            return;
        } else {
            puts_("250 2.0.0 Ok\r\n");
        }
    }
}

static void pop3(void)
{
    char line[1024];
    static char msg[4096 + 64];
    size_t mlen = 0;
    while (mlen + 64 < 4096) { /* 4 KiB of 64-octet lines */
        memset(msg + mlen, 'x', 62);
        memcpy(msg + mlen + 62, "\r\n", 2);
        mlen += 64;
    }
    puts_("+OK floor POP3\r\n");
    while (getline_(line, sizeof line) >= 0) {
        if (strncasecmp(line, "STAT", 4) == 0) {
            puts_("+OK 1 4096\r\n");
        } else if (strncasecmp(line, "RETR", 4) == 0) {
            puts_("+OK 4096 octets\r\n");
            put(msg, mlen);
            puts_(".\r\n");
        } else if (strncasecmp(line, "LIST", 4) == 0 || strncasecmp(line, "UIDL", 4) == 0) {
            puts_("+OK\r\n1 4096\r\n.\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            puts_("+OK Bye\r\n");
            flush();
            return;
        } else {
            puts_("+OK\r\n");
        }
    }
}

int main(int argc, char **argv)
{
    int pop = argc > 1 && strcmp(argv[1], "pop3") == 0;
    int one = 1;
    setsockopt(0, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef FLOOR_LIBPQ
    PGconn *c = PQconnectdb("");
    if (!c || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "floor: %s", c ? PQerrorMessage(c) : "out of memory\n");
        puts_(pop ? "-ERR [SYS/TEMP] no database\r\n" : "421 4.3.0 no database\r\n");
        flush();
        return 1;
    }
    PQfinish(c);
#endif
    if (pop)
        pop3();
    else
        smtp();
    return 0;
}
