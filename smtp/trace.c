/*
 * trace.c - the date and trace fields pgmail-smtpd writes into mail: the Return-Path and
 * Received header fields of every stored message (RFC 5321 4.4) and the RFC 5322 3.3 date
 * of those and of the notice of unknown recipients (bounce.c).
 *
 * A leaf: it calls only shared/ (TLS details for the Received field).
 */
#include "smtpd.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void smtp_rfc5322_date(char *out, size_t n)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    /* RFC 5322 3.3, English names whatever the locale. */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long off = tm.tm_gmtoff / 60;
    snprintf(out, n, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
             off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
}

size_t smtp_trace_header(const struct smtp_session *s, char *hdr, size_t cap)
{
    char date[64], using[160] = "";
    smtp_rfc5322_date(date, sizeof date);
    int secure = tls_active(&s->io);
    if (secure) {
        char info[128];
        tls_describe(&s->io, info, sizeof info);
        snprintf(using, sizeof using, "\r\n\t(using %s)", info);
    }
    /* The RFC 3848 protocol name; under TLS the version and cipher as Postfix writes them. */
    const char *with = s->auth_id[0] ? (secure ? "ESMTPSA" : "ESMTPA")
                       : s->esmtp    ? (secure ? "ESMTPS" : "ESMTP")
                                     : "SMTP";
    int n = snprintf(hdr, cap,
                     "Return-Path: <%s>\r\n"
                     "Received: from %s (%s)%s\r\n"
                     "\tby %s (pgmail) with %s id %.16s;\r\n"
                     "\t%s\r\n",
                     s->tx.sender, s->helo, s->peer.addr, using, s->cfg.hostname, with,
                     s->peer.session, date);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
