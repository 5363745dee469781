/*
 * expose.c - the metrics of pgmail-metrics and their text exposition format (Prometheus
 * 0.0.4): "# HELP", "# TYPE", then one sample per line, name{label="value"} number.
 *
 * The table below is the whole list of what is exported; the database gives the samples
 * (migrations/010's view pgmail_metrics: metric, label, value). Counters end in _total and
 * come from pgmail_counters, which only ever grows. A sample the table does not name is
 * not exported (a newer schema with an older program exports what it knows).
 */
#include "metrics.h"

#include <string.h>

struct metric {
    const char *key;   /* the view's metric column */
    const char *name;  /* the exported name, after "pgmail_" */
    const char *type;  /* counter or gauge */
    const char *label; /* the label's name; NULL: no label */
    const char *help;
};

static const struct metric metrics[] = {
    {"received", "messages_received_total", "counter", "domain",
     "Messages stored into local mailboxes (one per mailbox), by the mailbox's domain."},
    {"received_bytes", "received_bytes_total", "counter", "domain",
     "Octets stored into local mailboxes (per mailbox), by the mailbox's domain."},
    {"delivered", "messages_delivered_total", "counter", "domain",
     "Outbound recipients delivered, by the sender's local domain (other: none)."},
    {"deliveries", "deliveries_total", "counter", "outcome",
     "Outbound delivery attempts and local bounces, by outcome."},
    {"login_failures", "login_failures_total", "counter", "service",
     "Failed logins (SMTP AUTH, POP3 USER/PASS and AUTH), by program."},
    {"mailboxes", "mailboxes", "gauge", "domain", "Mailboxes (accounts), by domain."},
    {"mailbox_messages", "mailbox_messages", "gauge", "domain",
     "Messages waiting in mailboxes, by domain."},
    {"mailbox_bytes", "mailbox_bytes", "gauge", "domain", "Octets in mailboxes, by domain."},
    {"queue_recipients", "queue_recipients", "gauge", "state",
     "Recipients in the outbound queue not yet finished, by state."},
    {"queue_oldest_deferred_seconds", "queue_oldest_deferred_age_seconds", "gauge", NULL,
     "Age of the oldest deferred recipient in the queue (0: none)."},
    {"store_bytes", "store_bytes", "gauge", NULL,
     "On-disk size of the message store (messages with its TOAST and indexes)."},
    {"user_messages", "user_mailbox_messages", "gauge", "address",
     "Messages waiting in each mailbox (metrics_per_user = yes)."},
    {"user_bytes", "user_mailbox_bytes", "gauge", "address",
     "Octets in each mailbox (metrics_per_user = yes)."},
};

void metrics_write_label(FILE *f, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else
            fputc(*p, f);
    }
}

static void samples(FILE *f, const struct metric *m, const PGresult *res)
{
    for (int i = 0; res && i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), m->key) != 0 || PQgetisnull(res, i, 2))
            continue;
        fprintf(f, "pgmail_%s", m->name);
        if (m->label && !PQgetisnull(res, i, 1)) {
            fprintf(f, "{%s=\"", m->label);
            metrics_write_label(f, PQgetvalue(res, i, 1));
            fputs("\"}", f);
        }
        fprintf(f, " %s\n", PQgetvalue(res, i, 2));
    }
}

void metrics_expose(FILE *f, const PGresult *res, const PGresult *users)
{
    for (size_t i = 0; res && i < sizeof metrics / sizeof metrics[0]; i++) {
        const struct metric *m = &metrics[i];
        int per_user = strncmp(m->key, "user_", 5) == 0;
        if (per_user && !users)
            continue;
        fprintf(f, "# HELP pgmail_%s %s\n# TYPE pgmail_%s %s\n", m->name, m->help, m->name,
                m->type);
        samples(f, m, per_user ? users : res);
    }
    fprintf(f,
            "# HELP pgmail_database_up Whether the database answered this scrape.\n"
            "# TYPE pgmail_database_up gauge\npgmail_database_up %d\n",
            res ? 1 : 0);
}
