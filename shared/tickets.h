/*
 * tickets.h - TLS session-ticket keys shared by every handler process (RFC 5077 tickets in
 * TLS 1.2, RFC 8446 4.6.1 NewSessionTicket in TLS 1.3).
 *
 * Each connection is a new process, so a ticket key made by OpenSSL at start would be new for
 * every connection and no client could ever resume. The keys come from a file instead
 * (tls_ticket_keys; the units pass /run/pgmail/tls-ticket-keys as a systemd credential),
 * written by `pgmailctl tls rotate-ticket-keys` from a timer: every process, and every host
 * that has a copy, then encrypts and decrypts tickets with the same keys.
 *
 * The file: one or two keys of TICKET_KEY_SIZE octets each, nothing else (the 80-octet
 * layout nginx and HAProxy also use): 16 octets key name, 32 octets HMAC-SHA256 key, 32
 * octets AES-256 key. The first key is the current one (new tickets), the second, when
 * there, the previous one (accepted, its tickets renewed under the current key). A ticket
 * under any other key, or no longer valid, means a full handshake, never a failure.
 *
 * Invariant: the file is readable by nobody but the service: a regular file with no group
 * or other permission bits, owned by the reader (or by root). Else it is refused (a handler
 * then issues no tickets) and the caller says so: whoever holds the keys can decrypt the
 * TLS 1.2 sessions recorded while they were in use (README, "TLS session resumption").
 */
#ifndef PGMAIL_TICKETS_H
#define PGMAIL_TICKETS_H

#include <stddef.h>
#include <openssl/ssl.h>

#define TICKET_NAME_SIZE 16
#define TICKET_KEY_SIZE  80 /* name 16, HMAC-SHA256 key 32, AES-256 key 32 */
#define TICKET_KEYS_MAX  2  /* the current one and the previous one */

struct ticket_keys {
    unsigned char key[TICKET_KEYS_MAX][TICKET_KEY_SIZE];
    int n; /* keys read: 0 to TICKET_KEYS_MAX; key[0] is the current one */
};

enum tickets_status {
    TICKETS_OK,          /* keys read */
    TICKETS_MISSING,     /* no such file */
    TICKETS_PLACEHOLDER, /* a text line starting with '#': the units' default when the
                            file is missing (SetCredential=) */
    TICKETS_UNSAFE,      /* readable or writable by others, or owned by someone else */
    TICKETS_BAD,         /* unreadable, not a regular file, or not 1 or 2 keys */
};

/* tickets_read: read the key file at path into *k (k->n = 0 unless TICKETS_OK). err gets a
 * one-line reason for anything but TICKETS_OK. The caller wipes *k (explicit_bzero) when
 * done with it. */
enum tickets_status tickets_read(const char *path, struct ticket_keys *k, char *err, size_t errlen);

/* tickets_use: make ctx (a server context) issue tickets under k's
 * current key and accept tickets under either key. k must stay valid while the context is
 * used (the handlers keep it for the life of the process). 0, or -1 when OpenSSL refused. */
int tickets_use(SSL_CTX *ctx, const struct ticket_keys *k);

#endif
