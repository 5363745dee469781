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

#include "mail_limits.h"

/* The longest password and bcrypt's 72 used octets are bounds like any other: they live in
 * shared/mail_limits.h (LIM_PASSWORD, LIM_BCRYPT_USED), with their reasons. */
#define ADMIN_PASSWORD_MAX LIM_PASSWORD
#define ADMIN_BCRYPT_USED  LIM_BCRYPT_USED
_Static_assert(LIM_PASSWORD == CRYPT_MAX_PASSPHRASE_SIZE - 1,
               "LIM_PASSWORD must follow libxcrypt's CRYPT_MAX_PASSPHRASE_SIZE");

/* admin_read_secret: read one line of secret into buf (len > 1, at most
 * ADMIN_PASSWORD_MAX + 1), without its LF or CRLF; a secret longer than len - 1 octets is
 * refused with a message naming that limit. what names it in prompts and messages
 * ("password", "hash"); with confirm, a terminal user types it twice. Returns 0 with a
 * non-empty secret in buf, or -1 after reporting why not (nothing given, empty, too long, a
 * NUL byte, no match, or a read error); buf is wiped then. */
int admin_read_secret(const char *what, int confirm, char *buf, size_t len);

#endif
