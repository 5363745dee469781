/*
 * config.h - pgmail.conf: one "key = value" per line, shared by every pgmail program.
 *
 * The file is /etc/pgmail/pgmail.conf, or the one named by PGMAIL_CONFIG. Every key "name"
 * can also be set from the environment as PGMAIL_NAME (upper case), which wins over the
 * file. An unknown key or a bad value is an error that names the file, line and key.
 * The keys are documented in README.md; their table is in config.c.
 */
#ifndef PGMAIL_CONFIG_H
#define PGMAIL_CONFIG_H

#include <stddef.h>

enum bare_newline { BARE_NORMALIZE, BARE_REJECT };
enum relay_tls { RELAY_TLS_MAY, RELAY_TLS_ENCRYPT };
enum milter_action { MILTER_TEMPFAIL, MILTER_ACCEPT, MILTER_REJECT };

struct config {
    char hostname[256];             /* our name in greetings and Received: (config_hostname) */
    char database[1024];            /* libpq conninfo; empty = libpq's PG* environment */
    long message_size_limit;        /* octets, RFC 1870 SIZE */
    long max_recipients;            /* per transaction */
    long smtp_timeout;              /* seconds per command / data block */
    long pop3_timeout;              /* seconds idle */
    int allow_plaintext_auth;       /* offer AUTH without TLS to non-loopback peers */
    int require_auth;               /* MAIL needs AUTH first (submission, port 587) */
    int sender_login_match;         /* authenticated MAIL FROM must be one's own address */
    char recipient_delimiter[8];    /* "+" for alice+tag@; empty turns it off */
    enum bare_newline bare_newline; /* lines ended by a bare LF in DATA */
    long auth_failure_delay_ms;     /* pause before every failed-AUTH reply */
    long error_delay_ms;            /* the tarpit's pause per reply after LIM_ERRORS_SOFT */
    char password_scheme[16];       /* pgmailctl: yescrypt, sha512crypt or bcrypt */
    long password_cost;             /* pgmailctl: 0 = the scheme's default */
    char tls_cert[1024];            /* PEM certificate chain; empty: no TLS */
    char tls_key[1024];             /* PEM private key; empty: in tls_cert */
    int tls_implicit;               /* TLS from the first byte (RFC 8314: 465, 995) */
    char tls_ticket_keys[1024];     /* session-ticket key file (tickets.h); empty: none */

    /* Outbound (pgmail-smtpd's submission side, pgmail-relay, pgmailctl queue). Times in
     * seconds. */
    long max_outbound_per_hour;         /* remote recipients per account and hour (default) */
    char relay_database[1024];          /* pgmail-relay's scheduler; empty = database (LISTEN
                                           needs a session: not a transaction-mode pooler);
                                           its agents always use database */
    char dns_resolver[128];             /* ADDRESS or ADDRESS@PORT; empty = /etc/resolv.conf */
    long relay_port;                    /* port of MX hosts (25) */
    char own_addresses[1024];           /* more addresses that are this host (NAT, proxies) */
    long relay_destination_concurrency; /* connections per destination */
    long relay_max_connections;         /* connections in all */
    enum relay_tls relay_tls;           /* may or encrypt */
    long relay_lease;                   /* how long a claimed recipient is ours */
    long queue_min_backoff, queue_max_backoff;
    long delay_warning_time;            /* 0: no delay warnings */
    long queue_lifetime;                /* give up and bounce after this */
    char relayhost[300];                /* HOST:PORT (HOST may be [ADDRESS]); empty = MX */
    char relayhost_ca[1024];            /* PEM CA file for the relayhost; empty = system CAs */
    char relayhost_user[256];           /* AUTH user at the relayhost; empty = no AUTH */
    char relayhost_password_file[1024]; /* the password, first line (a systemd credential) */
    /* Milters (pgmail-smtpd): Postfix notation, in order; timeouts in seconds. */
    char milters[1024];                       /* "inet:HOST:PORT unix:/path ..."; empty: none */
    enum milter_action milter_default_action; /* for a milter that is unavailable */
    long milter_connect_timeout, milter_command_timeout, milter_content_timeout;
    long header_size_limit; /* octets of a message's header section */
    char authserv_id[256];  /* RFC 8601 authserv-id; empty = hostname */
    /* pgmail-metrics */
    long metrics_timeout; /* seconds the whole request head may take to arrive */
    int metrics_per_user; /* also export per-mailbox gauges (addresses as labels) */
    /* Failed logins, shared by every process and host (shared/auth.c): the sliding window
     * in seconds; failures in it after which a source is refused; failures on one login
     * after which the sources that failed too are refused. */
    long auth_window, auth_source_failures, auth_account_failures;
};

/* config_load: fill *cfg with defaults, then the file, then the environment. On error,
 * writes one line naming file, line and key into err and returns -1; 0 on success. */
int config_load(struct config *cfg, char *err, size_t errlen);

/* config_hostname: NULL when s can be our name in the greeting, Received:, Message-ID and
 * MAILER-DAEMON@...: a domain (RFC 5321 4.1.2 Domain: LDH labels of 1 to 63 octets, neither
 * starting nor ending with '-', at most 255 octets in all, RFC 1035 2.3.4) or an address
 * literal (4.1.3: [192.0.2.1] or [IPv6:2001:db8::1]). Else what is wrong with it. */
const char *config_hostname(const char *s);

/* config_parse_bool: "yes/no/true/false/on/off/1/0" -> 1/0, or -1 when it is none of those. */
int config_parse_bool(const char *s);

#endif
