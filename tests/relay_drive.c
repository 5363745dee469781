/*
 * relay_drive.c - a test driver for relay/dns.c and relay/client.c without the rest of
 * pgmail-relay (no database, no scheduler): tests/test_relay_net.py compiles it with them
 * and the shared objects.
 *
 *   relay_drive DOMAIN SENDER RCPT[,RCPT...] BODYFILE [BODYFILE...]
 *
 * Configuration from PGMAIL_* as every program (config_load). Routes DOMAIN, tries the
 * hosts in order as the agent does (the first that connects carries every message, one
 * transaction per BODYFILE, all to the same recipients) and prints:
 *
 *   route OK|TEMP|NXDOMAIN|NULLMX|LOOP|NOHOST
 *   host NAME ADDRESS PREFERENCE              (one per host, in order)
 *   msg N send=0|-1                            (per message sent)
 *   rcpt ADDR kind=K code=C status=S host=H address=A tls="..." reply="..."
 *
 * A BODYFILE named "-fail" stands for a message whose body cannot be read (the reader
 * returns -1 after the first chunk, as a database failure would).
 */
#include "config.h"
#include "log.h"
#include "relay.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const route_names[] = {"OK", "TEMP", "NXDOMAIN", "NULLMX", "LOOP", "NOHOST"};

static long read_file(void *ctx, const struct relay_msg *msg, long long off, char *buf, size_t n)
{
    const char *path = ctx;
    (void)msg;
    if (strcmp(path, "-fail") == 0) {
        if (off > 0)
            return -1;
        static const char head[] = "Subject: cut\r\n";
        memcpy(buf, head, sizeof head - 1); /* a body chunk, not a string */
        return (long)sizeof head - 1;
    }
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, (long)off, SEEK_SET) != 0) {
        if (f)
            fclose(f);
        return -1;
    }
    /* small chunks: dot-stuffing across chunk borders gets exercised */
    size_t got = fread(buf, 1, n < 7 ? n : 7, f);
    fclose(f);
    return (long)got;
}

static void print_result(const char *addr, const struct relay_result *r)
{
    printf("rcpt %s kind=%d code=%d status=%s host=%s address=%s tls=\"%s\" reply=\"%s\"\n", addr,
           r->kind, r->code, r->status[0] ? r->status : "-", r->host[0] ? r->host : "-",
           r->address[0] ? r->address : "-", r->tls, r->reply);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: relay_drive DOMAIN SENDER RCPTS BODYFILE...\n");
        return 2;
    }
    struct config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_init("pgmail-relay-drive", "drive", argv[1]);
    /* as pgmail-relay must: a peer that closes makes write() fail with EPIPE, not kill us */
    signal(SIGPIPE, SIG_IGN);
    if (relay_dns_init(&cfg) < 0)
        return 1;

    static struct relay_rcpt rcpts[64];
    size_t nrcpts = 0;
    for (char *save, *a = strtok_r(argv[3], ",", &save); a && nrcpts < 64;
         a = strtok_r(NULL, ",", &save))
        snprintf(rcpts[nrcpts++].addr, sizeof rcpts[0].addr, "%s", a);

    struct relay_host hosts[LIM_RELAY_ADDRESSES];
    size_t n = 0;
    struct relay_result res;
    enum relay_route_status st = relay_route(&cfg, argv[1], hosts, &n, &res);
    printf("route %s\n", route_names[st]);
    for (size_t i = 0; i < n; i++) {
        char a[64];
        inet_ntop(hosts[i].family, hosts[i].addr, a, sizeof a);
        printf("host %s %s %d\n", hosts[i].name, a, hosts[i].preference);
    }
    if (st != ROUTE_OK) {
        for (size_t i = 0; i < nrcpts; i++)
            print_result(rcpts[i].addr, &res);
        return 0;
    }
    struct relay_conn *c = NULL;
    for (size_t i = 0; i < n && !c; i++)
        c = relay_connect(&cfg, &hosts[i], &res);
    if (!c) {
        printf("connect failed\n");
        for (size_t i = 0; i < nrcpts; i++)
            print_result(rcpts[i].addr, &res);
        return 0;
    }
    for (int m = 4; m < argc; m++) {
        struct relay_msg msg = {.message_id = m - 3, .rcpts = rcpts, .nrcpts = nrcpts};
        snprintf(msg.sender, sizeof msg.sender, "%s", argv[2]);
        FILE *f = fopen(argv[m], "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            msg.size = ftell(f);
            fclose(f);
        }
        int rc = relay_send(c, &msg, read_file, argv[m]);
        printf("msg %d send=%d\n", m - 3, rc);
        for (size_t i = 0; i < nrcpts; i++)
            print_result(rcpts[i].addr, &rcpts[i].result);
        fflush(stdout);
        if (rc < 0)
            break;
    }
    relay_close(c);
    return 0;
}
