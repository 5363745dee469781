/*
 * check.h - validation of what the operator types: domain names, addresses, byte counts and
 * imported password hashes. Each check either fills in the canonical (lower-case) form or
 * reports one line naming the problem and returns -1.
 */
#ifndef PGMAIL_ADMIN_CHECK_H
#define PGMAIL_ADMIN_CHECK_H

#include <stddef.h>

#include "mail_limits.h"

/* A mail address as pgmailctl stores it: lower-case localpart@domain. */
struct admin_address {
    char text[LIM_PATH - 1]; /* RFC 5321 4.5.3.1.3: a path is 256 octets with its <> */
    const char *domain;      /* points into text, after the '@' */
};

/* admin_check_domain: name must be letters, digits, hyphens and dots, labels of 1 to 63
 * octets that neither start nor end with a hyphen, at most LIM_DOMAIN octets, no leading or
 * trailing dot (RFC 1035 2.3.1 as relaxed by RFC 1123 2.1). Copies it lower-cased into out
 * (outlen > LIM_DOMAIN). Returns 0, or -1 after reporting what is wrong. */
int admin_check_domain(const char *name, char *out, size_t outlen);

/* admin_check_address: arg must be localpart@domain, the local part an RFC 5321 4.1.2
 * Dot-string of at most LIM_LOCALPART octets (quoted strings are not accepted), the domain
 * valid for admin_check_domain. Fills *out lower-cased. Returns 0, or -1 after reporting. */
int admin_check_address(const char *arg, struct admin_address *out);

/* admin_check_bytes: arg must be a whole number of bytes (digits only, fitting a bigint),
 * or "none" when none_ok. Stores the number's canonical decimal in buf (len >= 21) and
 * points *value at it, or sets *value to NULL for "none". Returns 0, or -1 after reporting. */
int admin_check_bytes(const char *arg, int none_ok, char *buf, size_t len, const char **value);

/* admin_check_duration: arg must be a positive whole number with one unit, s, m, h, d or w
 * ("24h", "7d"), of at most 10 years. Stores its seconds' decimal in buf (len >= 21).
 * Returns 0, or -1 after reporting. */
int admin_check_duration(const char *arg, char *buf, size_t len);

/* admin_check_hash: hash must be a crypt(3) hash ("$id$..."), printable, of a method this
 * system's libxcrypt supports and well formed (it re-hashes to a string of its own length).
 * Returns 0, or -1 after reporting. */
int admin_check_hash(const char *hash);

#endif
