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

/* pgmail-metrics: seconds a whole HTTP request head may take (RFC 9110 leaves it to the
 * server; a scraper sends its request at once, so only a stalled client waits this long). */
#define LIM_DEFAULT_METRICS_TIMEOUT 10

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

/* Lifetime of a TLS session ticket, seconds (RFC 8446 4.6.1: at most 7 days; RFC 5077 3.3).
 * The same as the rotation period of the ticket keys (units/pgmail-tls-ticket-keys.timer,
 * hourly): a key is current for one period and accepted as the previous one for the next,
 * so every ticket's key is still there for its whole lifetime, and none lives longer than
 * two periods (README, "TLS session resumption", says why that matters). */
#define LIM_TLS_TICKET_LIFETIME 3600

/* ---- SMTP delivery and bounces ---- */

/* The trace header that DATA stores first (RFC 5321 4.4): Return-Path with a path of up to
 * LIM_PATH, Received with the HELO name (LIM_HELO), the peer address, our hostname (a
 * domain, up to LIM_DOMAIN), the TLS version and cipher and a date: under 1,300 octets. */
#define LIM_TRACE_HEADER 2048

/* How much of a message DATA keeps in memory for the notice of unknown recipients: the
 * header section (for the Subject) and the start of the body, from which the notice quotes
 * at most LIM_NOTICE_QUOTE octets. The header section of real mail is a few KiB. */
#define LIM_NOTICE_PREFIX (128 * 1024)

/* The notice of unknown recipients (bounce.c) is one per message and bounded, so that an
 * authenticated sender cannot fill the database (or their own mailbox, which the notice
 * enters whatever its quota) by writing to many unknown recipients: its header section,
 * (two host names of up to LIM_DOMAIN and a path: under 1,200 octets), the "Recipient X
 * was not found." lines up to LIM_NOTICE_RCPTS octets (then a count of the rest), the
 * quoted Subject up to LIM_NOTICE_SUBJECT octets and the quoted body up to
 * LIM_NOTICE_QUOTE octets, cut at a line end. LIM_NOTICE is the whole notice's ceiling
 * (the parts and the fixed words take under 11 KiB). */
#define LIM_NOTICE_HEADER  1536
#define LIM_NOTICE_RCPTS   4096
#define LIM_NOTICE_SUBJECT 998
#define LIM_NOTICE_QUOTE   4096
#define LIM_NOTICE         16384

/* RFC 5322 2.1.1: a line of a message is at most 998 octets without its CRLF. The notice
 * breaks longer lines (a Subject of 3,000 characters, a quoted body line) to fit. */
#define LIM_NOTICE_LINE 998

/* ---- SMTP protocol ---- */

/* The longest decoded AUTH credential (RFC 4954 4, RFC 4616 2): base64 turns 4 octets into
 * 3, so the longest continuation line LIM_SMTP_AUTH_LINE decodes to at most 3/4 of it; one
 * more for the NUL that ends it as a C string. */
#define LIM_SMTP_CRED (LIM_SMTP_AUTH_LINE / 4 * 3 + 1)

/* ---- shared: reader, configuration ---- */

/* The line reader's input buffer (shared/io.c): the most read from the peer at once, and so
 * the most pipelined input held unconsumed. Lines longer than a caller's buffer come in
 * pieces (IO_TOOLONG), so this bounds memory, not line length; 16 KiB holds a TLS record's
 * plaintext (RFC 8446 5.1: 2^14) and a full pipelined SMTP batch. */
#define LIM_IO_INBUF 16384

/* The largest message_size_limit pgmail.conf may set: 1 GiB. Message sizes are counted in a
 * long and SIZE= values compared against it (RFC 1870 4); a message is held in PostgreSQL
 * as one bytea value, whose field limit is 1 GB, so nothing larger could be stored. */
#define LIM_MESSAGE_SIZE_MAX (1024L * 1024 * 1024)

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

/* ---- passwords (pgmailctl, and what login can ever match) ---- */

/* The longest password, in octets: 511. libxcrypt's crypt_r refuses a longer passphrase
 * (ERANGE) for every scheme alike, yescrypt, sha512crypt and bcrypt
 * (CRYPT_MAX_PASSPHRASE_SIZE, 512 with the NUL), so a longer one could neither be hashed by
 * pgmailctl nor ever match at login (shared/auth.c passes what the client sent to crypt_r,
 * which fails the same way). admin/secret.h checks it against libxcrypt at compile time. */
#define LIM_PASSWORD 511

/* bcrypt hashes only the first 72 octets of a password and ignores the rest (a property of
 * the algorithm): pgmailctl accepts longer ones with a warning that says so. */
#define LIM_BCRYPT_USED 72

/* ---- outbound (pgmail-smtpd's submission side and pgmail-relay) */

/* Remote recipients an authenticated account may send to per hour (450 4.7.1 beyond): a
 * compromised account is the usual way a small server lands on a blocklist. Default. */
#define LIM_DEFAULT_OUTBOUND_PER_HOUR 500

/* Connections per destination and in all (Postfix's default_destination_concurrency_limit
 * is 20 per destination; a small server is gentler). Defaults. */
#define LIM_DEFAULT_DEST_CONCURRENCY  5
#define LIM_DEFAULT_RELAY_CONNECTIONS 20

/* Messages one connection delivers before it is closed (connection reuse). */
#define LIM_RELAY_MESSAGES_PER_CONNECTION 100

/* RFC 5321 5.1: addresses tried per delivery attempt (Postfix: smtp_mx_address_limit 5). */
#define LIM_RELAY_ADDRESSES 5

/* How long a claimed recipient is one relay's: another relay takes it over only after
 * this, so a relay killed with SIGKILL leaves nothing stuck for longer. Renewed while a
 * delivery runs. Default, seconds. */
#define LIM_DEFAULT_RELAY_LEASE 300

/* Retries as Postfix schedules them: the delay is the message's age clamped to
 * [min, max] (minimal_backoff_time, maximal_backoff_time), seconds. Defaults. */
#define LIM_DEFAULT_MIN_BACKOFF 300
#define LIM_DEFAULT_MAX_BACKOFF 4000

/* A delay warning after 4 hours (0 turns it off), give up after 5 days (Postfix's
 * maximal_queue_lifetime). Defaults, seconds. */
#define LIM_DEFAULT_DELAY_WARNING  (4L * 3600)
#define LIM_DEFAULT_QUEUE_LIFETIME (5L * 86400)

/* RFC 5321 4.5.3.2 client timeouts, seconds: greeting 5 min, MAIL 5, RCPT 5, DATA
 * initiation 2, data block 3, final dot 10. */
#define LIM_CLIENT_TIMEOUT_GREETING 300
#define LIM_CLIENT_TIMEOUT_MAIL     300
#define LIM_CLIENT_TIMEOUT_RCPT     300
#define LIM_CLIENT_TIMEOUT_DATA     120
#define LIM_CLIENT_TIMEOUT_BLOCK    180
#define LIM_CLIENT_TIMEOUT_DOT      600

/* A remote reply: lines kept (a multiline reply's text, joined) for logs, the queue and
 * DSNs. */
#define LIM_REMOTE_REPLY 512

/* The original headers a DSN returns (text/rfc822-headers), at most. */
#define LIM_DSN_HEADERS 65536

/* Milters (smtp/milter*.c): at most LIM_MILTERS per session; a packet from a milter of at
 * most LIM_MILTER_PACKET octets (a header it adds is far smaller; libmilter's own bound on
 * what it reads is 2 MiB, but no reply of the protocol needs more than a header field);
 * body chunks of at most LIM_MILTER_CHUNK octets (the protocol's 65,535 without MDS_*);
 * a custom reply of at most LIM_MILTER_REPLY octets in LIM_MILTER_REPLY_LINES lines. */
#define LIM_MILTERS            8
#define LIM_MILTER_PACKET      (128 * 1024)
#define LIM_MILTER_CHUNK       65535
#define LIM_MILTER_REPLY       2048
#define LIM_MILTER_REPLY_LINES 16
/* The header section a client may send (Postfix's header_size_limit, 100 KiB by default),
 * and the room milters have on top of it for the fields they add or change. */
#define LIM_DEFAULT_HEADER_SIZE            (100 * 1024)
#define LIM_HEADER_SIZE_MAX                (1024 * 1024)
#define LIM_HEADER_EDITS                   (256 * 1024)
#define LIM_DEFAULT_MILTER_CONNECT_TIMEOUT 30
#define LIM_DEFAULT_MILTER_COMMAND_TIMEOUT 30
#define LIM_DEFAULT_MILTER_CONTENT_TIMEOUT 300

/* Finished queue rows (delivered, bounced) are kept this long as history, days. */
#define LIM_QUEUE_HISTORY_DAYS 7

/* Failed logins shared by every process and host (shared/auth.c, migrations/012): the
 * sliding window in seconds, the failures in it after which a source (an address, an IPv6
 * /64) is refused, and the failures on one login after which sources that failed too are
 * refused (auth_window, auth_source_failures, auth_account_failures). */
#define LIM_DEFAULT_AUTH_WINDOW           900
#define LIM_DEFAULT_AUTH_SOURCE_FAILURES  10
#define LIM_DEFAULT_AUTH_ACCOUNT_FAILURES 5

/* The delay after a failed login doubles with each failure in the window beyond the
 * LIM_AUTH_FAILURES that one connection may make anyway, at most this many times
 * (16 x auth_failure_delay_ms). */
#define LIM_AUTH_DELAY_DOUBLINGS 4

#endif
