/*
 * auth.h - password checks for every pgmail program, in one module.
 *
 * Passwords are stored as crypt(3) hashes (libxcrypt): yescrypt by default, sha512crypt or
 * bcrypt by choice; verification accepts any hash crypt(3) knows, so accounts imported from
 * a Dovecot SHA512-CRYPT or bcrypt setup keep working. A check takes the same time and gives
 * the same answer whether or not the account exists, and every failure waits
 * auth_failure_delay_ms before it returns (as checkpassword-style servers do).
 */
#ifndef PGMAIL_AUTH_H
#define PGMAIL_AUTH_H

#include <stddef.h>

#include "db.h"

enum auth_result { AUTH_OK = 0, AUTH_FAIL = 1, AUTH_TEMP = 2 };

/* auth_init: the scheme/cost used for the stand-in hash of unknown users, and the delay. */
void auth_init(const char *scheme, long cost, long fail_delay_ms);

/* auth_check: look up user (its address, any case) in the accounts table and verify
 * password. AUTH_OK stores the account id (decimal, NUL-terminated) in id.
 * AUTH_FAIL for an unknown user or a wrong password alike, after the delay. AUTH_TEMP when
 * the database or crypt(3) failed: the client should try later. */
enum auth_result auth_check(struct db *db, const char *user, const char *password, char *id,
                            size_t idlen);

/* auth_hash: hash password with scheme ("yescrypt", "sha512crypt", "bcrypt") and cost
 * (0 = default) into out. Returns 0, or -1 with errno set. */
int auth_hash(const char *scheme, long cost, const char *password, char *out, size_t outlen);

/* auth_wipe: erase a secret so that the compiler cannot skip it. */
void auth_wipe(void *p, size_t n);

#endif
