/*
 * base64.h - RFC 4648 base64 for SASL exchanges (RFC 4954, RFC 5034).
 */
#ifndef PGMAIL_BASE64_H
#define PGMAIL_BASE64_H

#include <stddef.h>

/* base64_decode: decode n characters of in (no whitespace, '=' padding required) into out,
 * which must hold n/4*3+1 bytes; NUL-terminates. Returns the decoded length or -1 when in
 * is not valid base64. */
long base64_decode(const char *in, size_t n, unsigned char *out);

/* base64_encode: encode n bytes into out (4*((n+2)/3)+1 bytes), NUL-terminated. Returns the
 * encoded length. */
size_t base64_encode(const unsigned char *in, size_t n, char *out);

#endif
