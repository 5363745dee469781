/*
 * log.h - one structured event per line, to the journal or to stderr.
 *
 * Every event carries the program, the session id and the peer as journal fields
 * (PGMAIL_SESSION, PGMAIL_PEER, PGMAIL_EVENT) plus its own key=value pairs in MESSAGE.
 * Without a journal (tests, inetd) the same line goes to stderr, with the same text.
 *
 * Every %s and %c argument is escaped by log_event itself (see log_format), so client text
 * (user names, addresses) and server text (database errors) can be passed as they are: a
 * record is always one line, a quoted value ("%s") cannot be closed early and an unquoted
 * one (key=%s) cannot grow a second key. Passwords and AUTH payloads are never logged.
 */
#ifndef PGMAIL_LOG_H
#define PGMAIL_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* log_init: remember program name, session id and peer for every later event. */
void log_init(const char *program, const char *session, const char *peer);

/* log_event: priority is a syslog level (LOG_INFO, ...); event a short word ("connect");
 * fmt/... the key=value text, formatted by log_format. */
void log_event(int priority, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_format: the key=value text of fmt/ap into out (n octets, NUL-terminated; a text that
 * does not fit is cut between two whole pieces, an open quoted value closed, and
 * " truncated=yes" added). Literal text is copied; in each %s / %.Ns / %.*s / %c argument
 * '"' and '\' are backslash-escaped and bytes < 0x20, 0x7f and >= 0x80 written \xNN, and a
 * space too outside a quoted value. Numbers: %d %i %u %x %X with flags, width, precision
 * and the lengths hh h l ll z. Returns 0; -1 for any other conversion (or a width on %s),
 * which ends the text with "unsupported-log-format=%..." instead of misreading ap. */
int log_format(char *out, size_t n, const char *fmt, va_list ap);

/* log_clean: copy at most n-1 bytes of client text s into out, replacing bytes outside
 * printable ASCII and quotes/backslashes with '?'. Not needed for logs any more (log_event
 * escapes); for text shown elsewhere on one line: a reply parameter, an admin message.
 * Returns out. */
char *log_clean(char *out, size_t n, const char *s);

#endif
