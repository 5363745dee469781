/*
 * tls.h - TLS for the handlers (RFC 3207 STARTTLS, RFC 2595 STLS, RFC 8314 implicit TLS),
 * and for pgmail-relay as a client (tls_connect),
 * with OpenSSL, as a transport under the shared line reader: the protocol code reads and
 * writes lines exactly as before, whatever the transport.
 *
 * Certificate and key come from tls_cert / tls_key (PEM files; the units pass them as
 * systemd credentials). Minimum protocol TLS 1.2, OpenSSL's default ciphers otherwise.
 * A missing or unreadable certificate is logged and TLS is simply not offered.
 * Sessions resume across handler processes through tickets under the keys of the file
 * tls_ticket_keys (tickets.h); without it, every handshake is a full one.
 */
#ifndef PGMAIL_TLS_H
#define PGMAIL_TLS_H

#include <stddef.h>

#include "config.h"
#include "io.h"

/* tls_init: load the certificate and key named in cfg. 1 when TLS can be offered, 0 when
 * none is configured, -1 when one is configured but unusable (logged). */
int tls_init(const struct config *cfg);

/* tls_start: discard any buffered input (see io_discard_input), run the server handshake on
 * io's fds within timeout_ms, and on success switch io to the TLS transport. 0, or -1
 * (logged) after which the session must end: the stream is in an unknown state. */
int tls_start(struct io *io, int timeout_ms);

/* tls_connect: the client side (pgmail-relay after STARTTLS): discard buffered input, run
 * the handshake on io's fds (a connected socket) within timeout_ms, and on success switch io
 * to the TLS transport. name is sent as SNI (unless an address literal); with verify the
 * peer's certificate must chain to cafile (the system CAs when cafile is NULL or empty) and
 * carry name (SSL_set1_host, or the IP address); without it anything is accepted
 * (opportunistic TLS, RFC 7435). 0, or -1 with the reason in err: the stream is then in an
 * unknown state and the connection must be closed. */
int tls_connect(struct io *io, const char *name, int verify, const char *cafile, int timeout_ms,
                char *err, size_t errlen);

/* tls_active: 1 when io runs over TLS. */
int tls_active(const struct io *io);

/* tls_describe: "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384" for logs and Received:. */
void tls_describe(const struct io *io, char *out, size_t n);

/* tls_end: send close_notify (best effort) and free the connection's TLS state. */
void tls_end(struct io *io);

#endif
