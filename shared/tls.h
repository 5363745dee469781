/*
 * tls.h - TLS for the handlers (RFC 3207 STARTTLS, RFC 2595 STLS, RFC 8314 implicit TLS),
 * with OpenSSL, as a transport under the shared line reader: the protocol code reads and
 * writes lines exactly as before, whatever the transport.
 *
 * Certificate and key come from tls_cert / tls_key (PEM files; the units pass them as
 * systemd credentials). Minimum protocol TLS 1.2, OpenSSL's default ciphers otherwise.
 * A missing or unreadable certificate is logged and TLS is simply not offered.
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

/* tls_active: 1 when io runs over TLS. */
int tls_active(const struct io *io);

/* tls_describe: "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384" for logs and Received:. */
void tls_describe(const struct io *io, char *out, size_t n);

/* tls_end: send close_notify (best effort) and free the connection's TLS state. */
void tls_end(struct io *io);

#endif
