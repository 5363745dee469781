/*
 * auth.h - password checks for every pgmail program, in one module.
 *
 * Passwords are stored as crypt(3) hashes (libxcrypt): yescrypt by default, sha512crypt or
 * bcrypt by choice; verification accepts any hash crypt(3) knows, so accounts imported from
 * a Dovecot SHA512-CRYPT or bcrypt setup keep working. A check takes the same time and gives
 * the same answer whether or not the account exists, and every failure waits
 * auth_failure_delay_ms before it returns (as checkpassword-style servers do).
 *
 * Failed logins are shared by every process and host through the database (migrations/012):
 * per source (the client's address, an IPv6 /64) and per login as typed, in a sliding window
 * of auth_window seconds. The delay doubles with the failures in the window (beyond what
 * one connection may make anyway), and a source is refused (AUTH_REFUSED, without checking
 * the password) once it has auth_source_failures in the window, or once the login has
 * auth_account_failures and the source has failed at least once. So a user whose own
 * address has no failure in the window is never refused for someone else's failures (only
 * their own failures are slowed down), and one who has failed is refused at most until that
 * failure leaves the window. Refused attempts are not recorded: each source gets at most
 * auth_source_failures guesses per window, however often it reconnects. All of this is
 * keyed by the login text, whether or not an account has it, so it tells nothing about
 * which accounts exist. Cost: the lookup returns the counts (one statement, as before), a
 * failure adds one row (one statement, as the failure counter did before).
 */
#ifndef PGMAIL_AUTH_H
#define PGMAIL_AUTH_H

#include <stddef.h>

#include "config.h"
#include "db.h"

enum auth_result { AUTH_OK = 0, AUTH_FAIL = 1, AUTH_TEMP = 2, AUTH_REFUSED = 3 };

/* auth_init: from cfg the scheme/cost of the stand-in hash for unknown users, the delay and
 * the window and limits; peer is the client's printable address (struct peer's addr), from
 * which the source key is made. cfg and peer are copied. */
void auth_init(const struct config *cfg, const char *peer);

/* auth_check: look up user (its address, any case) in the accounts table and verify
 * password. AUTH_OK stores the account id (decimal, NUL-terminated) in id.
 * AUTH_FAIL for an unknown user or a wrong password alike, after the delay (the failure is
 * recorded). AUTH_REFUSED when the source or the login has failed too often in the window
 * (see above): the password was not checked, the client should try later; also after the
 * delay. AUTH_TEMP when the database or crypt(3) failed: the client should try later. */
enum auth_result auth_check(struct db *db, const char *user, const char *password, char *id,
                            size_t idlen);

/* auth_hash: hash password with scheme ("yescrypt", "sha512crypt", "bcrypt") and cost
 * (0 = default) into out. Returns 0, or -1 with errno set. */
int auth_hash(const char *scheme, long cost, const char *password, char *out, size_t outlen);

/* auth_wipe: erase a secret so that the compiler cannot skip it. */
void auth_wipe(void *p, size_t n);

#endif
