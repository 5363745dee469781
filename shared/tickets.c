/*
 * tickets.c - the session-ticket key file and OpenSSL's ticket key callback (see tickets.h).
 *
 * The callback is OpenSSL 3's SSL_CTX_set_tlsext_ticket_key_evp_cb (the HMAC through
 * EVP_MAC), the ticket protection of RFC 5077 4: AES-256-CBC with a fresh IV per ticket and
 * HMAC-SHA256 over it, the key chosen by the 16-octet name in the ticket. It never returns
 * -1 (which would fail the handshake): a ticket it cannot open is simply not resumed.
 */
#include "tickets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/* The keys of this process's one server context (tickets_use). */
static const struct ticket_keys *keys;

/* systemd_credential: path is a credential that systemd could not put on a private mount (a
 * container without CAP_SYS_ADMIN): owned by root, mode 0440, read by the service's user
 * through an ACL entry, in a directory that is the service's alone. No one else can read it
 * either, so its group bits are no reason to refuse it. */
static int systemd_credential(const char *path, const struct stat *st)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    size_t n = dir ? strlen(dir) : 0;
    return n > 0 && strncmp(path, dir, n) == 0 && path[n] == '/' && st->st_uid == 0 &&
           (st->st_mode & 027) == 0;
}

enum tickets_status tickets_read(const char *path, struct ticket_keys *k, char *err, size_t errlen)
{
    k->n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? TICKETS_MISSING : TICKETS_BAD;
    }
    struct stat st;
    unsigned char buf[TICKET_KEYS_MAX * TICKET_KEY_SIZE + 1];
    ssize_t n = 0;
    enum tickets_status rc = TICKETS_BAD;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
    } else if (((st.st_mode & 077) && !systemd_credential(path, &st)) ||
               (st.st_uid != geteuid() && st.st_uid != 0 && geteuid() != 0)) {
        /* Checked before reading: keys others could read are not used at all. */
        snprintf(err, errlen,
                 "%s: mode %04o owner %lu: others can read or change it (must be 0600 or "
                 "0400, owned by uid %lu or root)",
                 path, (unsigned)(st.st_mode & 07777), (unsigned long)st.st_uid,
                 (unsigned long)geteuid());
        rc = TICKETS_UNSAFE;
    } else {
        size_t got = 0;
        while (got < sizeof buf && (n = read(fd, buf + got, sizeof buf - got)) > 0)
            got += (size_t)n;
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        } else if (got > 0 && buf[0] == '#') {
            snprintf(err, errlen, "%s: no keys (a placeholder)", path);
            rc = TICKETS_PLACEHOLDER;
        } else if (got == 0 || got % TICKET_KEY_SIZE != 0 ||
                   got > TICKET_KEYS_MAX * TICKET_KEY_SIZE) {
            snprintf(err, errlen, "%s: %zu octets, expected %d or %d (1 or 2 keys)", path, got,
                     TICKET_KEY_SIZE, TICKET_KEYS_MAX * TICKET_KEY_SIZE);
        } else {
            k->n = (int)(got / TICKET_KEY_SIZE);
            memcpy(k->key, buf, got);
            rc = TICKETS_OK;
        }
    }
    explicit_bzero(buf, sizeof buf);
    close(fd);
    return rc;
}

/* set_mac_key: HMAC-SHA256 with the key's HMAC part. 1 or 0. */
static int set_mac_key(EVP_MAC_CTX *hctx, const unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(key + TICKET_NAME_SIZE), 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* ticket_key_cb: enc = 1: a new ticket under the current key (1, or 0: no ticket). enc = 0:
 * open a ticket: 1 under the current key, 2 under the previous one (OpenSSL then issues a
 * new ticket, under the current key), 0 for an unknown name (a full handshake). */
static int ticket_key_cb(SSL *s, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    (void)s;
    const EVP_CIPHER *aes = EVP_aes_256_cbc();
    if (!keys || keys->n == 0)
        return 0;
    if (enc) {
        const unsigned char *key = keys->key[0];
        int ivlen = EVP_CIPHER_get_iv_length(aes);
        if (ivlen <= 0 || RAND_bytes(iv, ivlen) != 1)
            return 0;
        memcpy(name, key, TICKET_NAME_SIZE);
        if (EVP_EncryptInit_ex(cctx, aes, NULL, key + TICKET_NAME_SIZE + 32, iv) != 1 ||
            set_mac_key(hctx, key) != 1)
            return 0;
        return 1;
    }
    for (int i = 0; i < keys->n; i++) {
        const unsigned char *key = keys->key[i];
        if (memcmp(name, key, TICKET_NAME_SIZE) != 0)
            continue;
        if (set_mac_key(hctx, key) != 1 ||
            EVP_DecryptInit_ex(cctx, aes, NULL, key + TICKET_NAME_SIZE + 32, iv) != 1)
            return 0;
        return i == 0 ? 1 : 2;
    }
    return 0;
}

int tickets_use(SSL_CTX *ctx, const struct ticket_keys *k)
{
    keys = k;
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) == 1 ? 0 : -1;
}
