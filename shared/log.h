/*
 * log.h - one structured event per line, to the journal or to stderr.
 *
 * Every event carries the program, the session id and the peer as journal fields
 * (PGMAIL_SESSION, PGMAIL_PEER, PGMAIL_EVENT) plus its own key=value pairs in MESSAGE.
 * Without a journal (tests, inetd) the same line goes to stderr. Client-supplied text must
 * pass through log_clean() first; passwords and AUTH payloads are never logged.
 */
#ifndef PGMAIL_LOG_H
#define PGMAIL_LOG_H

#include <stddef.h>

/* log_init: remember program name, session id and peer for every later event. */
void log_init(const char *program, const char *session, const char *peer);

/* log_event: priority is a syslog level (LOG_INFO, ...); event a short word ("connect");
 * fmt/... the key=value text. */
void log_event(int priority, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_clean: copy at most n-1 bytes of client text s into out, replacing bytes outside
 * printable ASCII and quotes/backslashes with '?', so that one log line stays one line.
 * Returns out. */
char *log_clean(char *out, size_t n, const char *s);

#endif
