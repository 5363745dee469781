/*
 * tls.c - OpenSSL as an io transport (see tls.h): the handlers' server side and
 * pgmail-relay's client side share the transport below.
 *
 * The handshake runs on blocking fds, each read bounded by a receive timeout (SO_RCVTIMEO)
 * and the whole by an alarm. After it the fds are switched to non-blocking mode and every
 * SSL_read/SSL_write that wants more (SSL_ERROR_WANT_READ/WANT_WRITE) waits in poll(): a
 * read only until the deadline of the line being read (io_wait_ms), a write for the send
 * timeout. So a peer that stalls in the middle of a TLS record, or trickles it byte by
 * byte, meets the same per-line deadline as in clear, and the reader reports IO_TIMEOUT
 * (errno EAGAIN), never an error. fd 0 is read and fd 1 written, as inetd and systemd hand
 * them over.
 */
#include "tls.h"
#include "log.h"
#include "mail_limits.h"
#include "tickets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static SSL_CTX *ctx;
static struct ticket_keys ticket_keys; /* tls_ticket_keys, for the life of the process */

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
    (void)sig;
    alarmed = 1;
}

static void log_ssl_error(const char *event, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    log_event(LOG_ERR, event, "what=\"%s\" error=\"%s\"", what, buf[0] ? buf : strerror(errno));
}

/* use_ticket_keys: issue and accept session tickets under the keys in path (tickets.h), or
 * none at all: a ticket key of this process alone would only make clients try in vain. A
 * file that cannot be used is logged and costs resumption, never TLS itself. An empty path
 * turns tickets off on purpose, silently. */
static void use_ticket_keys(const char *path)
{
    char why[512] = "";
    enum tickets_status st =
        path[0] ? tickets_read(path, &ticket_keys, why, sizeof why) : TICKETS_MISSING;
    if (st == TICKETS_OK && tickets_use(ctx, &ticket_keys) == 0) {
        /* TLS 1.2's ticket lifetime and TLS 1.3's ticket_lifetime (RFC 8446 4.6.1), checked
         * again when a ticket comes back. */
        SSL_CTX_set_timeout(ctx, LIM_TLS_TICKET_LIFETIME);
        return;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (!path[0])
        return;
    if (st == TICKETS_OK)
        snprintf(why, sizeof why, "OpenSSL refused the ticket key callback");
    ERR_clear_error();
    log_event(st == TICKETS_UNSAFE || st == TICKETS_BAD ? LOG_WARNING : LOG_NOTICE,
              "tls-tickets-off", "reason=\"%s\"", why);
}

int tls_init(const struct config *cfg)
{
    if (!cfg->tls_cert[0] && !cfg->tls_key[0])
        return 0;
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_ssl_error("tls-unavailable", "SSL_CTX_new");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Each process serves one connection: a session cache could never be hit. Sessions
     * resume only through tickets under the shared keys (use_ticket_keys). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    const char *key = cfg->tls_key[0] ? cfg->tls_key : cfg->tls_cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        log_ssl_error("tls-unavailable", cfg->tls_cert);
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_ssl_error("tls-unavailable", key);
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        log_ssl_error("tls-unavailable", "key does not match certificate");
    } else {
        use_ticket_keys(cfg->tls_ticket_keys); /* only for a context that will be used */
        return 1;
    }
    SSL_CTX_free(ctx);
    ctx = NULL;
    return -1;
}

/* fail_errno: map an OpenSSL I/O failure (e from SSL_get_error) to read(2)/write(2)
 * conventions. A wait that ran out of time is EAGAIN, which the reader reports as
 * IO_TIMEOUT: the timeout reply and log event are then the same as in clear. */
static long fail_errno(int e)
{
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0; /* close_notify: end of stream */
    if (e == SSL_ERROR_SYSCALL && errno == 0)
        return 0; /* the peer closed without close_notify */
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        errno = EAGAIN;
    else if (e != SSL_ERROR_SYSCALL)
        errno = EPROTO;
    return -1;
}

/* transfer: one SSL_read_ex (wbuf NULL) or SSL_write_ex of up to n bytes, waiting in poll()
 * for what OpenSSL wants (either direction: TLS 1.3 may write while reading). A read waits
 * until the current line's deadline, a write for io's timeout per wait. Returns the bytes
 * moved, 0 at end of stream, -1 with errno (EAGAIN: out of time). */
static long transfer(struct io *io, char *rbuf, const char *wbuf, size_t n)
{
    SSL *ssl = io->transport_data;
    for (;;) {
        size_t done = 0;
        errno = 0;
        int r = wbuf ? SSL_write_ex(ssl, wbuf, n, &done) : SSL_read_ex(ssl, rbuf, n, &done);
        if (r == 1)
            return (long)done;
        int e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return fail_errno(e);
        int ms = wbuf ? (io->timeout_ms > 0 ? io->timeout_ms : -1) : io_wait_ms(io);
        struct pollfd p = {.fd = e == SSL_ERROR_WANT_READ ? io->in_fd : io->out_fd,
                           .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        int ready = poll(&p, 1, ms);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready == 0)
            return fail_errno(e); /* out of time: EAGAIN */
    }
}

static long tls_read(struct io *io, char *buf, size_t n)
{
    return transfer(io, buf, NULL, n);
}

static long tls_write(struct io *io, const char *buf, size_t n)
{
    return transfer(io, NULL, buf, n);
}

/* set_nonblock: switch fd's O_NONBLOCK flag on or off. */
static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static size_t tls_pending(struct io *io)
{
    return (size_t)SSL_pending(io->transport_data);
}

static const struct io_transport transport = {tls_read, tls_write, tls_pending};

/* use_transport: after a handshake, io reads and writes through ssl, the fds non-blocking
 * (see the header comment). */
static void use_transport(struct io *io, SSL *ssl)
{
    io->transport = &transport;
    io->transport_data = ssl;
    set_nonblock(io->in_fd, 1);
    set_nonblock(io->out_fd, 1);
}

int tls_start(struct io *io, int timeout_ms)
{
    io_discard_input(io);
    if (io_flush(io) < 0 || !ctx)
        return -1;
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(io->in_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(io->out_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_rfd(ssl, io->in_fd) != 1 || SSL_set_wfd(ssl, io->out_fd) != 1) {
        log_ssl_error("tls-failed", "SSL_new");
        SSL_free(ssl);
        return -1;
    }
    /* SO_RCVTIMEO bounds each read; the alarm bounds the whole handshake, so that a peer
     * sending a byte just inside each timeout cannot stretch it out. SIGALRM interrupts
     * the blocking read (no SA_RESTART) and the handshake fails. */
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, &old);
    alarmed = 0;
    alarm(timeout_ms > 0 ? (unsigned)(timeout_ms + 999) / 1000 : 0);
    errno = 0;
    int r = SSL_accept(ssl);
    alarm(0);
    sigaction(SIGALRM, &old, NULL);
    if (r != 1) {
        log_ssl_error("tls-failed", errno == EAGAIN || alarmed ? "handshake timeout" : "handshake");
        SSL_free(ssl);
        return -1;
    }
    use_transport(io, ssl);
    char info[128];
    tls_describe(io, info, sizeof info);
    log_event(LOG_INFO, "tls", "using=\"%s\" resumed=%s", info,
              SSL_session_reused(ssl) ? "yes" : "no");
    return 0;
}

/* client_ctx: a client context; verify: the peer's chain against cafile (or the system
 * CAs when cafile is empty). NULL with err filled. */
static SSL_CTX *client_ctx(int verify, const char *cafile, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
    if (!verify) {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
        return c;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    int ok = cafile && cafile[0] ? SSL_CTX_load_verify_locations(c, cafile, NULL)
                                 : SSL_CTX_set_default_verify_paths(c);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load the CA certificates %s", cafile ? cafile : "");
        ERR_clear_error();
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}

/* set_peer_name: SNI and the name checked against the certificate. An address literal
 * gets no SNI (RFC 6066 3) and is checked against the certificate's IP entries. */
static int set_peer_name(SSL *ssl, const char *name, int verify)
{
    unsigned char bin[16];
    int literal = inet_pton(AF_INET, name, bin) == 1 || inet_pton(AF_INET6, name, bin) == 1;
    if (!literal && name[0] && SSL_set_tlsext_host_name(ssl, name) != 1)
        return -1;
    if (!verify)
        return 0;
    if (literal)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
    return SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

int tls_connect(struct io *io, const char *name, int verify, const char *cafile, int timeout_ms,
                char *err, size_t errlen)
{
    io_discard_input(io);
    if (io_flush(io) < 0) {
        snprintf(err, errlen, "write failed before the handshake");
        return -1;
    }
    SSL_CTX *c = client_ctx(verify, cafile, err, errlen);
    if (!c)
        return -1;
    SSL *ssl = SSL_new(c);
    SSL_CTX_free(c); /* the SSL holds its own reference */
    if (!ssl || SSL_set_rfd(ssl, io->in_fd) != 1 || SSL_set_wfd(ssl, io->out_fd) != 1 ||
        set_peer_name(ssl, name, verify) < 0) {
        snprintf(err, errlen, "cannot set up the TLS client");
        ERR_clear_error();
        SSL_free(ssl);
        return -1;
    }
    /* Non-blocking with poll: the whole handshake within timeout_ms, without an alarm. */
    set_nonblock(io->in_fd, 1);
    set_nonblock(io->out_fd, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        errno = 0;
        int r = SSL_connect(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = e == SSL_ERROR_WANT_WRITE ? io->out_fd : io->in_fd,
                           .events = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0 ||
            poll(&p, 1, (int)left) == 0) {
            long v = SSL_get_verify_result(ssl);
            unsigned long q = ERR_get_error();
            char buf[256] = "";
            if (q)
                ERR_error_string_n(q, buf, sizeof buf);
            ERR_clear_error();
            if (v != X509_V_OK)
                snprintf(err, errlen, "certificate verification failed: %s",
                         X509_verify_cert_error_string(v));
            else if (left <= 0 || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                snprintf(err, errlen, "handshake timeout");
            else
                snprintf(err, errlen, "handshake failed: %s",
                         buf[0]  ? buf
                         : errno ? strerror(errno)
                                 : "connection closed");
            SSL_free(ssl);
            set_nonblock(io->in_fd, 0);
            set_nonblock(io->out_fd, 0);
            return -1;
        }
    }
    use_transport(io, ssl);
    return 0;
}

int tls_active(const struct io *io)
{
    return io->transport == &transport;
}

void tls_describe(const struct io *io, char *out, size_t n)
{
    if (!tls_active(io)) {
        snprintf(out, n, "plaintext");
        return;
    }
    SSL *ssl = io->transport_data;
    snprintf(out, n, "%s with cipher %s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
}

void tls_end(struct io *io)
{
    if (!tls_active(io))
        return;
    io_flush(io);
    SSL *ssl = io->transport_data;
    SSL_shutdown(ssl); /* best effort: on a full socket buffer it simply gives up */
    SSL_free(ssl);
    io->transport = NULL;
    io->transport_data = NULL;
    set_nonblock(io->in_fd, 0);
    set_nonblock(io->out_fd, 0);
}
