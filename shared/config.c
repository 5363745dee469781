/*
 * config.c - reads pgmail.conf and PGMAIL_* environment variables (see config.h).
 *
 * One static table describes every key: its name, type, where it lives in struct config
 * and its bounds. Parsing, environment overrides and error messages all come from it.
 */
#include "config.h"
#include "mail_limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum ktype { K_STR, K_LONG, K_BOOL, K_BARE, K_RELAY_TLS, K_MILTER_ACTION };

static const struct key {
    const char *name;
    enum ktype type;
    size_t off;
    size_t size; /* K_STR: buffer size */
    long min, max;
} keys[] = {
    {"hostname", K_STR, offsetof(struct config, hostname), 256, 0, 0},
    {"database", K_STR, offsetof(struct config, database), 1024, 0, 0},
    {"message_size_limit", K_LONG, offsetof(struct config, message_size_limit), 0, 1024,
     LIM_MESSAGE_SIZE_MAX},
    {"max_recipients", K_LONG, offsetof(struct config, max_recipients), 0, 1, 100000},
    {"smtp_timeout", K_LONG, offsetof(struct config, smtp_timeout), 0, 1, 3600},
    {"pop3_timeout", K_LONG, offsetof(struct config, pop3_timeout), 0, 1, 3600},
    {"allow_plaintext_auth", K_BOOL, offsetof(struct config, allow_plaintext_auth), 0, 0, 1},
    {"require_auth", K_BOOL, offsetof(struct config, require_auth), 0, 0, 1},
    {"sender_login_match", K_BOOL, offsetof(struct config, sender_login_match), 0, 0, 1},
    {"recipient_delimiter", K_STR, offsetof(struct config, recipient_delimiter), 8, 0, 0},
    {"bare_newline", K_BARE, offsetof(struct config, bare_newline), 0, 0, 0},
    {"auth_failure_delay_ms", K_LONG, offsetof(struct config, auth_failure_delay_ms), 0, 0, 60000},
    {"error_delay_ms", K_LONG, offsetof(struct config, error_delay_ms), 0, 0, 60000},
    {"password_scheme", K_STR, offsetof(struct config, password_scheme), 16, 0, 0},
    {"password_cost", K_LONG, offsetof(struct config, password_cost), 0, 0, 31},
    {"tls_cert", K_STR, offsetof(struct config, tls_cert), 1024, 0, 0},
    {"tls_key", K_STR, offsetof(struct config, tls_key), 1024, 0, 0},
    {"tls_implicit", K_BOOL, offsetof(struct config, tls_implicit), 0, 0, 1},
    {"tls_ticket_keys", K_STR, offsetof(struct config, tls_ticket_keys), 1024, 0, 0},
    {"max_outbound_per_hour", K_LONG, offsetof(struct config, max_outbound_per_hour), 0, 0,
     10000000},
    {"relay_database", K_STR, offsetof(struct config, relay_database), 1024, 0, 0},
    {"dns_resolver", K_STR, offsetof(struct config, dns_resolver), 128, 0, 0},
    {"relay_port", K_LONG, offsetof(struct config, relay_port), 0, 1, 65535},
    {"own_addresses", K_STR, offsetof(struct config, own_addresses), 1024, 0, 0},
    {"relay_destination_concurrency", K_LONG,
     offsetof(struct config, relay_destination_concurrency), 0, 1, 1000},
    {"relay_max_connections", K_LONG, offsetof(struct config, relay_max_connections), 0, 1, 10000},
    {"relay_tls", K_RELAY_TLS, offsetof(struct config, relay_tls), 0, 0, 0},
    {"relay_lease", K_LONG, offsetof(struct config, relay_lease), 0, 1, 86400},
    {"queue_min_backoff", K_LONG, offsetof(struct config, queue_min_backoff), 0, 1, 86400},
    {"queue_max_backoff", K_LONG, offsetof(struct config, queue_max_backoff), 0, 1, 864000},
    {"delay_warning_time", K_LONG, offsetof(struct config, delay_warning_time), 0, 0, 8640000},
    {"queue_lifetime", K_LONG, offsetof(struct config, queue_lifetime), 0, 1, 8640000},
    {"relayhost", K_STR, offsetof(struct config, relayhost), 300, 0, 0},
    {"relayhost_ca", K_STR, offsetof(struct config, relayhost_ca), 1024, 0, 0},
    {"relayhost_user", K_STR, offsetof(struct config, relayhost_user), 256, 0, 0},
    {"relayhost_password_file", K_STR, offsetof(struct config, relayhost_password_file), 1024, 0,
     0},
    {"metrics_timeout", K_LONG, offsetof(struct config, metrics_timeout), 0, 1, 3600},
    {"metrics_per_user", K_BOOL, offsetof(struct config, metrics_per_user), 0, 0, 1},
    {"milters", K_STR, offsetof(struct config, milters), 1024, 0, 0},
    {"milter_default_action", K_MILTER_ACTION, offsetof(struct config, milter_default_action), 0, 0,
     0},
    {"milter_connect_timeout", K_LONG, offsetof(struct config, milter_connect_timeout), 0, 1, 3600},
    {"milter_command_timeout", K_LONG, offsetof(struct config, milter_command_timeout), 0, 1, 3600},
    {"milter_content_timeout", K_LONG, offsetof(struct config, milter_content_timeout), 0, 1, 3600},
    {"header_size_limit", K_LONG, offsetof(struct config, header_size_limit), 0, 1024,
     LIM_HEADER_SIZE_MAX},
    {"authserv_id", K_STR, offsetof(struct config, authserv_id), 256, 0, 0},
    /* Failed logins shared across processes and hosts (shared/auth.c, migrations/012). */
    {"auth_window", K_LONG, offsetof(struct config, auth_window), 0, 1, 86400},
    {"auth_source_failures", K_LONG, offsetof(struct config, auth_source_failures), 0, 1, 1000000},
    {"auth_account_failures", K_LONG, offsetof(struct config, auth_account_failures), 0, 1,
     1000000},
};

int config_parse_bool(const char *s)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

const char *config_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return "empty: expected a domain name or an address literal";
    if (s[0] == '[') {
        /* RFC 5321 4.1.3; the tag of an IPv6 literal is case-insensitive (RFC 5234 2.3). */
        char addr[LIM_DOMAIN + 1];
        unsigned char bin[16];
        if (n < 3 || s[n - 1] != ']' || n - 2 > LIM_DOMAIN)
            return "expected an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]";
        int v6 = strncasecmp(s + 1, "IPv6:", 5) == 0;
        size_t skip = v6 ? 6 : 1;
        memcpy(addr, s + skip, n - 1 - skip);
        addr[n - 1 - skip] = '\0';
        if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, bin) != 1)
            return "expected an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]";
        return NULL;
    }
    if (n > LIM_DOMAIN)
        return "longer than 255 octets (RFC 5321 4.5.3.1.2)";
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0)
                return "empty label: expected a domain name such as mx.example.org";
            if (s[i - 1] == '-')
                return "a label ends with '-' (RFC 1035 2.3.1)";
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-') {
            if (label == 0 && c == '-')
                return "a label starts with '-' (RFC 1035 2.3.1)";
            if (++label > 63)
                return "a label is longer than 63 octets (RFC 1035 2.3.4)";
        } else {
            return "not a domain name: only letters, digits, '-' and '.' (RFC 5321 4.1.2)";
        }
    }
    return NULL;
}

/* milter_list: NULL when every milter of v (separated by spaces or commas) is in Postfix's
 * notation that pgmail-smtpd speaks: inet:HOST:PORT (HOST a name, an address, or [IPv6])
 * or unix:/absolute/path; at most LIM_MILTERS of them. Else what is wrong. */
static const char *milter_list(const char *v)
{
    size_t count = 0;
    while (*v) {
        size_t n = strcspn(v, " ,\t");
        if (n > 0) {
            const char *colon = memrchr(v, ':', n);
            if (++count > LIM_MILTERS)
                return "too many milters";
            if (n > 5 && strncmp(v, "unix:", 5) == 0) {
                if (v[5] != '/')
                    return "expected unix:/absolute/path";
            } else if (strncmp(v, "inet:", 5) != 0 || !colon || colon - v <= 5 ||
                       strspn(colon + 1, "0123456789") != (size_t)(v + n - colon - 1) ||
                       colon + 1 == v + n) {
                return "expected inet:HOST:PORT or unix:/path for each milter";
            }
        }
        v += n + (v[n] != '\0');
    }
    return NULL;
}

/* set: store value into the field of key k; returns NULL or what is wrong with the value. */
static const char *set(struct config *cfg, const struct key *k, const char *v)
{
    char *field = (char *)cfg + k->off;
    switch (k->type) {
    case K_STR:
        if (strlen(v) >= k->size)
            return "value too long";
        for (const char *p = v; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return "control character in value";
        memcpy(field, v, strlen(v) + 1);
        if (strcmp(k->name, "hostname") == 0)
            return config_hostname(v);
        if (strcmp(k->name, "milters") == 0)
            return milter_list(v);
        if (strcmp(k->name, "password_scheme") == 0 && strcmp(v, "yescrypt") != 0 &&
            strcmp(v, "sha512crypt") != 0 && strcmp(v, "bcrypt") != 0)
            return "expected yescrypt, sha512crypt or bcrypt";
        return NULL;
    case K_LONG: {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < k->min || n > k->max)
            return "expected a whole number in range";
        *(long *)(void *)field = n;
        return NULL;
    }
    case K_BOOL: {
        int b = config_parse_bool(v);
        if (b < 0)
            return "expected yes or no";
        *(int *)(void *)field = b;
        return NULL;
    }
    case K_BARE:
        if (strcmp(v, "normalize") == 0)
            cfg->bare_newline = BARE_NORMALIZE;
        else if (strcmp(v, "reject") == 0)
            cfg->bare_newline = BARE_REJECT;
        else
            return "expected normalize or reject";
        return NULL;
    case K_MILTER_ACTION:
        if (strcmp(v, "tempfail") == 0)
            cfg->milter_default_action = MILTER_TEMPFAIL;
        else if (strcmp(v, "accept") == 0)
            cfg->milter_default_action = MILTER_ACCEPT;
        else if (strcmp(v, "reject") == 0)
            cfg->milter_default_action = MILTER_REJECT;
        else
            return "expected tempfail, accept or reject";
        return NULL;
    case K_RELAY_TLS:
        if (strcmp(v, "may") == 0)
            cfg->relay_tls = RELAY_TLS_MAY;
        else if (strcmp(v, "encrypt") == 0)
            cfg->relay_tls = RELAY_TLS_ENCRYPT;
        else
            return "expected may or encrypt";
        return NULL;
    }
    return "bad key type";
}

static const struct key *find(const char *name)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int load_file(struct config *cfg, const char *path, int must_exist, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!must_exist && errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char line[LIM_CONFIG_LINE + 2];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        const struct key *k = find(name);
        if (!k) {
            snprintf(err, errlen, "%s:%d: unknown key '%.64s'", path, lineno, name);
            rc = -1;
            break;
        }
        const char *why = set(cfg, k, value);
        if (why) {
            snprintf(err, errlen, "%s:%d: key '%s': %s", path, lineno, k->name, why);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

static void defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (gethostname(cfg->hostname, sizeof cfg->hostname - 1) != 0)
        strcpy(cfg->hostname, "localhost");
    cfg->message_size_limit = LIM_DEFAULT_MESSAGE_SIZE;
    cfg->max_recipients = LIM_DEFAULT_RECIPIENTS;
    cfg->smtp_timeout = LIM_DEFAULT_SMTP_TIMEOUT;
    cfg->pop3_timeout = LIM_DEFAULT_POP3_TIMEOUT;
    cfg->sender_login_match = 1;
    strcpy(cfg->recipient_delimiter, "+");
    cfg->bare_newline = BARE_NORMALIZE;
    cfg->auth_failure_delay_ms = LIM_DEFAULT_AUTH_DELAY_MS;
    cfg->error_delay_ms = LIM_DEFAULT_ERROR_DELAY_MS;
    strcpy(cfg->password_scheme, "yescrypt");
    cfg->max_outbound_per_hour = LIM_DEFAULT_OUTBOUND_PER_HOUR;
    cfg->relay_port = 25;
    cfg->milter_default_action = MILTER_TEMPFAIL;
    cfg->milter_connect_timeout = LIM_DEFAULT_MILTER_CONNECT_TIMEOUT;
    cfg->milter_command_timeout = LIM_DEFAULT_MILTER_COMMAND_TIMEOUT;
    cfg->milter_content_timeout = LIM_DEFAULT_MILTER_CONTENT_TIMEOUT;
    cfg->header_size_limit = LIM_DEFAULT_HEADER_SIZE;
    cfg->metrics_timeout = LIM_DEFAULT_METRICS_TIMEOUT;
    cfg->relay_destination_concurrency = LIM_DEFAULT_DEST_CONCURRENCY;
    cfg->relay_max_connections = LIM_DEFAULT_RELAY_CONNECTIONS;
    cfg->relay_tls = RELAY_TLS_MAY;
    cfg->relay_lease = LIM_DEFAULT_RELAY_LEASE;
    cfg->queue_min_backoff = LIM_DEFAULT_MIN_BACKOFF;
    cfg->queue_max_backoff = LIM_DEFAULT_MAX_BACKOFF;
    cfg->delay_warning_time = LIM_DEFAULT_DELAY_WARNING;
    cfg->queue_lifetime = LIM_DEFAULT_QUEUE_LIFETIME;
    cfg->auth_window = LIM_DEFAULT_AUTH_WINDOW;
    cfg->auth_source_failures = LIM_DEFAULT_AUTH_SOURCE_FAILURES;
    cfg->auth_account_failures = LIM_DEFAULT_AUTH_ACCOUNT_FAILURES;
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
    defaults(cfg);
    const char *path = getenv("PGMAIL_CONFIG");
    const char *file = path && *path ? path : "/etc/pgmail/pgmail.conf";
    if (load_file(cfg, file, path && *path, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char env[64] = "PGMAIL_";
        size_t n = strlen(env);
        for (const char *p = keys[i].name; *p && n < sizeof env - 1; p++)
            env[n++] = (char)toupper((unsigned char)*p);
        env[n] = '\0';
        const char *v = getenv(env);
        if (!v)
            continue;
        const char *why = set(cfg, &keys[i], v);
        if (why) {
            snprintf(err, errlen, "environment %s: key '%s': %s", env, keys[i].name, why);
            return -1;
        }
    }
    /* A hostname set in the file or environment was checked by set(); one still invalid
     * here is the system's (gethostname), which the operator must override. */
    const char *why = config_hostname(cfg->hostname);
    if (why) {
        for (char *p = cfg->hostname; *p; p++)
            if (!isprint((unsigned char)*p) || *p == '\'')
                *p = '?';
        snprintf(err, errlen,
                 "the system's host name '%.64s' cannot be key 'hostname': %s; set hostname in %s",
                 cfg->hostname, why, file);
        return -1;
    }
    return 0;
}
