/*
 * io.h - the one bounded line reader and the buffered writer of pgmail.
 *
 * Handlers talk to their peer over fd 0 (input) and fd 1 (output), as systemd's Accept=yes
 * sockets and inetd give them. Input is read into a fixed buffer; a "line" ends at LF, and
 * the reader tells exactly what it found (in the manner of skalibs' getln): a whole line,
 * end of file, a piece of a line too long for the caller's buffer (ERANGE), a timeout, or an
 * error. It never passes a partial line off as whole and resumes across partial reads.
 *
 * The timeout bounds a whole line, not each read (RFC 5321 4.5.3.2 times commands): a
 * deadline is set when a line read starts and every wait gets only the time left, so a
 * client that trickles one byte at a time cannot hold a session longer than one timeout per
 * line. The pieces of an over-long line (IO_TOOLONG, io_skipline) share that deadline.
 *
 * Output is buffered and written in one write() right before any blocking read (qmail's
 * habit, which makes PIPELINING free and avoids delayed-ACK stalls), and at exit.
 */
#ifndef PGMAIL_IO_H
#define PGMAIL_IO_H

#include <stddef.h>

enum io_status {
    IO_LINE = 0,    /* a whole line, LF included */
    IO_EOF = 1,     /* the peer closed; any unterminated tail is dropped */
    IO_TOOLONG = 2, /* the buffer filled before LF: a piece; the rest follows on the next call */
    IO_TIMEOUT = 3, /* the line was not complete within the timeout */
    IO_ERROR = 4,   /* read or write failed (errno set) */
};

#include "mail_limits.h"

#define IO_OUTBUF 16384 /* replies are short; a full buffer is simply written out */

struct io;

/* A transport other than plain read()/write() (TLS, see tls.h): read and write behave like
 * read(2) and write(2) on the stream (returning -1 with errno set on failure), pending
 * says how many decrypted bytes wait inside the transport (so no poll is needed). */
struct io_transport {
    long (*read)(struct io *io, char *buf, size_t n);
    long (*write)(struct io *io, const char *buf, size_t n);
    size_t (*pending)(struct io *io);
};

struct io {
    int in_fd, out_fd;
    const struct io_transport *transport; /* NULL: plain fds */
    void *transport_data;
    int timeout_ms;        /* per line (see above); <= 0 waits for ever */
    long long deadline_ms; /* CLOCK_MONOTONIC ms by which the current line must be complete */
    int in_line;           /* a line is under way: IO_TOOLONG returned a piece of it */
    size_t readmax;        /* largest single read(); tests lower it to split input at every byte */
    size_t in_pos, in_len;
    size_t out_len;
    int out_error;
    char in[LIM_IO_INBUF];
    char out[IO_OUTBUF];
};

/* io_init: set up a stream on in_fd/out_fd with no timeout and full-size reads. */
void io_init(struct io *io, int in_fd, int out_fd);

/* io_set_timeout: give every input line at most ms to arrive whole (the deadline above),
 * and each write at most ms to drain: a peer that stops reading its replies cannot hold the
 * process (SO_SNDTIMEO on a socket; a pipe's writer is local). An output failure ends the
 * session at the next read. */
void io_set_timeout(struct io *io, int ms);

/* io_wait_ms: how long a wait for input may still last: the milliseconds left until the
 * current line's deadline (0 once it has passed), or -1 when there is no timeout. For
 * transports, whose reads must respect the same deadline. */
int io_wait_ms(const struct io *io);

/* io_getline: read up to and including the next LF into buf (at most cap bytes, cap >= 2),
 * NUL-terminate it (buf must hold cap+1 bytes) and store its length in *len.
 * Returns IO_LINE when buf ends in LF; IO_TOOLONG when cap bytes (cap - 1 when the last would be
 * a CR, which stays unread so that CRLF is never split) were stored without LF (the rest of
 * the line is still unread: call again to continue, or io_skipline to drop it);
 * IO_EOF, IO_TIMEOUT or IO_ERROR otherwise, with *len = 0. Pending output is flushed first
 * whenever the call has to wait for input. */
enum io_status io_getline(struct io *io, char *buf, size_t cap, size_t *len);

/* io_skipline: discard input up to and including the next LF. Returns IO_LINE when it was
 * found, or the status that stopped it. */
enum io_status io_skipline(struct io *io);

/* io_pending: bytes already read and buffered, not yet consumed (pipelined input). */
size_t io_pending(const struct io *io);

/* io_discard_input: drop every byte read but not yet consumed. Before a TLS handshake this
 * makes sure that plaintext pipelined after STARTTLS/STLS is never executed under TLS
 * (RFC 3207 4.2 / RFC 2595 4, the 2011 command injection bugs). */
void io_discard_input(struct io *io);

/* io_put / io_puts / io_printf: append to the output buffer; it is written when full, by
 * io_flush, or before a blocking read. Errors are sticky and reported by io_flush. */
void io_put(struct io *io, const char *s, size_t n);
void io_puts(struct io *io, const char *s);
void io_printf(struct io *io, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* io_flush: write all buffered output. Returns 0, or -1 once any write has failed. */
int io_flush(struct io *io);

#endif
