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

#include <stddef.h>

/* Longest secret accepted, in octets; the buffer needs one more. */
#define ADMIN_SECRET_MAX 1023

/* admin_read_secret: read one line of secret into buf (len > 1), without its LF or CRLF.
 * what names it in prompts and messages ("password", "hash"); with confirm, a terminal user
 * types it twice. Returns 0 with a non-empty secret in buf, or -1 after reporting why not
 * (nothing given, empty, too long, a NUL byte, no match, or a read error); buf is wiped
 * then. */
int admin_read_secret(const char *what, int confirm, char *buf, size_t len);

#endif
