/*
 * mail_limits.h - every bound pgmail enforces, in one place.
 *
 * Each limit names the RFC section it comes from. Those marked "default" can be changed in
 * pgmail.conf (see config.h); the others are fixed by the protocol. Every limit is enforced
 * in exactly one place and tested in tests/.
 */
#ifndef PGMAIL_LIMITS_H
#define PGMAIL_LIMITS_H

/* RFC 5321 4.5.3.1.4 allows 512 octets per command line; extensions (SIZE=, BODY=, AUTH=)
 * make it longer (4.5.3.1 "extensions may raise it"), so we accept 2048 including CRLF. */
#define LIM_SMTP_LINE 2048

/* RFC 4954 4: an AUTH continuation line may be as long as a base64 credential needs;
 * 12288 octets (Postfix uses the same order of magnitude) holds any sane PLAIN blob. */
#define LIM_SMTP_AUTH_LINE 12288

/* RFC 5321 4.5.3.1.6 text line limit is 1000 octets; we accept longer DATA lines as they
 * come (real mail breaks this), reading them in pieces of this size. */
#define LIM_DATA_PIECE 65536

/* RFC 1939 4 / RFC 2449 4: POP3 command lines are at most 255 octets. */
#define LIM_POP3_LINE 255

/* RFC 5321 4.5.3.1.1-3: local part 64, domain 255, path 256 octets. */
#define LIM_LOCALPART 64
#define LIM_DOMAIN    255
#define LIM_PATH      256

/* RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted; default 1000 (452 4.5.3). */
#define LIM_DEFAULT_RECIPIENTS 1000

/* Default message size limit (RFC 1870 SIZE), 25 MiB. */
#define LIM_DEFAULT_MESSAGE_SIZE (25L * 1024 * 1024)

/* RFC 5321 4.5.3.2.7: server timeout of 5 minutes waiting for the next command, and
 * 4.5.3.2.5/6 for data blocks. Default in seconds. */
#define LIM_DEFAULT_SMTP_TIMEOUT 300

/* RFC 1939 3: the autologout timer is at least 10 minutes. */
#define LIM_DEFAULT_POP3_TIMEOUT 600

/* RFC 5321 6.3: a message with this many Received: headers is a loop (554 5.4.6). */
#define LIM_RECEIVED_HOPS 100

/* Postfix-style error tarpit: after SOFT errors every reply is delayed one second,
 * at HARD the session is closed with 421. */
#define LIM_ERRORS_SOFT 10
#define LIM_ERRORS_HARD 20

/* The tarpit's pause, in milliseconds, before each reply past LIM_ERRORS_SOFT. */
#define LIM_DEFAULT_ERROR_DELAY_MS 1000

/* POP3: protocol errors before the session is closed. */
#define LIM_POP3_ERRORS 10

/* Authentication failures before the session is closed (421 / -ERR). */
#define LIM_AUTH_FAILURES 3

/* Default delay after a failed AUTH, in milliseconds: the same for unknown users. */
#define LIM_DEFAULT_AUTH_DELAY_MS 1000

/* Longest helo name and client text we keep (for logs and the Received header). */
#define LIM_HELO 255

/* Longest configuration file line. */
#define LIM_CONFIG_LINE 1024

/* ---- POP3 ---- */

/* RETR and TOP read a message from the database in slices of this many octets: the
 * process's memory stays bounded whatever the message size, while a slice is large enough
 * that the round trips cost little next to the bytes (a 256 KiB bytea slice reads only its
 * own TOAST pages, as bodies are stored uncompressed: migrations/001). */
#define LIM_POP3_RETR_CHUNK (256 * 1024)

/* The message list (id and size per message) is read in pages of this many rows, about
 * 0.5 MiB of result at a time, so that neither libpq nor the server holds a huge result
 * for a mailbox of millions of messages. */
#define LIM_POP3_LIST_PAGE 10000

#endif
