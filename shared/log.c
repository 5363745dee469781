/*
 * log.c - structured logging through sd-journal, with a stderr fallback (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

static const char *prog = "pgmail";
static char sess[40] = "-";
static char peer_addr[64] = "-";
static int use_journal = -1;

void log_init(const char *program, const char *session, const char *peer)
{
    prog = program;
    snprintf(sess, sizeof sess, "%s", session);
    snprintf(peer_addr, sizeof peer_addr, "%s", peer);
    /* Under systemd stderr is a journal stream (JOURNAL_STREAM is set); use native fields
     * then. Elsewhere (tests, inetd) stderr is the log. PGMAIL_LOG=stderr forces it. */
    const char *force = getenv("PGMAIL_LOG");
    if (force && strcmp(force, "none") == 0)
        use_journal = -2; /* the fuzzer: nothing at all */
    else if (force && strcmp(force, "stderr") == 0)
        use_journal = 0;
    else
        use_journal =
            getenv("JOURNAL_STREAM") != NULL && access("/run/systemd/journal/socket", W_OK) == 0;
}

char *log_clean(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s && *s && i + 1 < n; s++)
        out[i++] = (*s >= 0x20 && *s < 0x7f && *s != '"' && *s != '\\') ? *s : '?';
    out[i] = '\0';
    return out;
}

void log_event(int priority, const char *event, const char *fmt, ...)
{
    if (use_journal == -2)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (use_journal > 0) {
        sd_journal_send("MESSAGE=%s session=%s %s", event, sess, msg, "PRIORITY=%d", priority,
                        "SYSLOG_IDENTIFIER=%s", prog, "PGMAIL_EVENT=%s", event, "PGMAIL_SESSION=%s",
                        sess, "PGMAIL_PEER=%s", peer_addr, NULL);
        return;
    }
    fprintf(stderr, "%s[%d]: event=%s session=%s peer=%s %s\n", prog, (int)getpid(), event, sess,
            peer_addr, msg);
}
