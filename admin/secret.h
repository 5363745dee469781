/*
 * secret.h - reading a password (or an imported hash) from standard input.
 *
 * Secrets never come from the command line, where ps(1) and shell history would show them.
 * From a pipe or file the secret is the first line; from a terminal it is typed at a prompt
 * without echo, and a password is asked twice. The caller wipes the buffer (auth_wipe) as
 * soon as it is done with it; this module wipes every copy of its own.
 */
#ifndef PGMAIL_ADMIN_SECRET_H
#define PGMAIL_ADMIN_SECRET_H

#include <crypt.h>
#include <stddef.h>

/* The longest password, in octets: 511. libxcrypt's crypt_r refuses a longer passphrase
 * (ERANGE) for every scheme alike, yescrypt, sha512crypt and bcrypt
 * (CRYPT_MAX_PASSPHRASE_SIZE, 512 with the NUL), so a longer one could neither be hashed
 * here nor ever match at login (shared/auth.c passes what the client sent to crypt_r, which
 * fails the same way). A password buffer needs one octet more. */
#define ADMIN_PASSWORD_MAX (CRYPT_MAX_PASSPHRASE_SIZE - 1)

/* bcrypt hashes only the first 72 octets of a password and ignores the rest (a property of
 * the algorithm, the same in every implementation): longer passwords are still accepted,
 * with a warning that says so. */
#define ADMIN_BCRYPT_USED 72

/* admin_read_secret: read one line of secret into buf (len > 1, at most
 * ADMIN_PASSWORD_MAX + 1), without its LF or CRLF; a secret longer than len - 1 octets is
 * refused with a message naming that limit. what names it in prompts and messages
 * ("password", "hash"); with confirm, a terminal user types it twice. Returns 0 with a
 * non-empty secret in buf, or -1 after reporting why not (nothing given, empty, too long, a
 * NUL byte, no match, or a read error); buf is wiped then. */
int admin_read_secret(const char *what, int confirm, char *buf, size_t len);

#endif
