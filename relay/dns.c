/*
 * dns.c - where to send a destination's mail (see relay.h), with libunbound.
 *
 * RFC 5321 5.1: the MX records in preference order, random among equal preferences; the
 * addresses of each (AAAA then A, RFC 6724 prefers IPv6), at most LIM_RELAY_ADDRESSES;
 * the domain's own A/AAAA as an implicit MX only when it has no MX records at all
 * (NOERROR with no data). An MX that is this host (its name is our hostname, or one of its
 * addresses is ours, relay_is_self) is dropped with every MX of the same or a higher
 * preference; when that leaves none, mail would loop back to us (Postfix: "mail for X loops
 * back to myself", 5.4.6). RFC 7505: a lone "MX 0 ." says the domain takes no mail (5.1.10).
 * NXDOMAIN bounces (5.1.2); SERVFAIL, any other failure and a lookup that takes too long
 * defer (4.4.3): a broken resolver never bounces mail.
 *
 * The relayhost (relayhost = HOST:PORT or [ADDRESS]:PORT) is looked up by A/AAAA only
 * (Postfix's [brackets] semantics are implied: a smarthost is a host, not a domain).
 *
 * Lookups run asynchronously (ub_resolve_async in a libunbound thread) so that each is
 * bounded by RELAY_DNS_TIMEOUT_MS; an upstream that never answers otherwise holds the
 * caller for minutes of libunbound's own retries. No DNSSEC validation yet (no trust
 * anchor is loaded); DANE will need it.
 */
#include "relay.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unbound.h>

/* One lookup, at most (Postfix waits for the resolver's own timeouts, some 30 s). */
#define RELAY_DNS_TIMEOUT_MS 30000

/* MX records considered per domain (more are ignored: the address limit is 5 anyway). */
#define RELAY_MAX_MX 32

static struct ub_ctx *ub;

/* relay_test_timeout_ms: PGMAIL_RELAY_TEST_TIMEOUT_MS, a cap on every DNS and SMTP client
 * timeout for the tests (a stalled server or a silent resolver in seconds, not minutes);
 * 0 when unset. Not a configuration key: nobody should run with it. */
int relay_test_timeout_ms(int ms)
{
    const char *s = getenv("PGMAIL_RELAY_TEST_TIMEOUT_MS");
    long cap = s ? strtol(s, NULL, 10) : 0;
    return cap > 0 && cap < ms ? (int)cap : ms;
}

int relay_dns_init(const struct config *cfg)
{
    if (ub)
        return 0;
    ub = ub_ctx_create();
    if (!ub) {
        log_event(LOG_ERR, "dns-unavailable", "what=ub_ctx_create");
        return -1;
    }
    /* A local resolver (systemd-resolved, unbound on 127.0.0.1, the tests' server) is the
     * usual forwarder: libunbound would otherwise refuse to query localhost. */
    int r = ub_ctx_set_option(ub, "do-not-query-localhost:", "no");
    /* libunbound answers RFC 6761's .test itself (NXDOMAIN); a resolver that knows such
     * names (a lab, the tests' local server) is asked instead, as the C library would. */
    if (r == 0)
        r = ub_ctx_set_option(ub, "local-zone:", "test. transparent");
    if (r == 0)
        r = ub_ctx_async(ub, 1);
    if (r == 0)
        r = cfg->dns_resolver[0] ? ub_ctx_set_fwd(ub, cfg->dns_resolver)
                                 : ub_ctx_resolvconf(ub, NULL);
    if (r != 0) {
        log_event(LOG_ERR, "dns-unavailable", "resolver=\"%s\" error=\"%s\"",
                  cfg->dns_resolver[0] ? cfg->dns_resolver : "/etc/resolv.conf", ub_strerror(r));
        ub_ctx_delete(ub);
        ub = NULL;
        return -1;
    }
    return 0;
}

/* ---- lookups */

enum lookup { LOOK_DATA, LOOK_NODATA, LOOK_NXDOMAIN, LOOK_TEMP };

struct pending {
    int done;
    int err;
    struct ub_result *result;
};

static void on_answer(void *arg, int err, struct ub_result *result)
{
    struct pending *p = arg;
    p->done = 1;
    p->err = err;
    p->result = result;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* lookup: name/type (class IN) within the timeout. LOOK_DATA leaves the answer in *out
 * (ub_resolve_free it); otherwise *out is NULL and why says what failed. */
static enum lookup lookup(const char *name, int type, struct ub_result **out, char *why,
                          size_t whylen)
{
    *out = NULL;
    struct pending p = {0};
    int id = 0;
    int r = ub ? ub_resolve_async(ub, name, type, 1, &p, on_answer, &id) : UB_INITFAIL;
    if (r != 0) {
        snprintf(why, whylen, "%s", ub_strerror(r));
        return LOOK_TEMP;
    }
    long long deadline = mono_ms() + relay_test_timeout_ms(RELAY_DNS_TIMEOUT_MS);
    while (!p.done) {
        long long left = deadline - mono_ms();
        struct pollfd pf = {.fd = ub_fd(ub), .events = POLLIN};
        if (left <= 0 || (poll(&pf, 1, (int)left) < 0 && errno != EINTR)) {
            ub_cancel(ub, id);
            snprintf(why, whylen, "timed out");
            return LOOK_TEMP;
        }
        if (ub_process(ub) != 0) {
            ub_cancel(ub, id);
            snprintf(why, whylen, "resolver failure");
            return LOOK_TEMP;
        }
    }
    if (p.err != 0 || !p.result) {
        snprintf(why, whylen, "%s", ub_strerror(p.err));
        return LOOK_TEMP;
    }
    struct ub_result *res = p.result;
    if (res->rcode == 3 || res->nxdomain) {
        ub_resolve_free(res);
        snprintf(why, whylen, "no such domain (NXDOMAIN)");
        return LOOK_NXDOMAIN;
    }
    if (res->rcode != 0) {
        snprintf(why, whylen, "%s", res->rcode == 2 ? "SERVFAIL" : "resolver error");
        ub_resolve_free(res);
        return LOOK_TEMP;
    }
    if (!res->havedata) {
        ub_resolve_free(res);
        snprintf(why, whylen, "no data");
        return LOOK_NODATA;
    }
    *out = res;
    return LOOK_DATA;
}

/* wire_name: the uncompressed domain name at p (n octets left) as text without the final
 * dot ("" for the root); -1 when malformed. */
static int wire_name(const unsigned char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    out[0] = '\0';
    while (i < n && p[i] != 0) {
        size_t len = p[i++];
        if (len > 63 || i + len > n || o + len + 2 > cap)
            return -1;
        if (o)
            out[o++] = '.';
        for (size_t k = 0; k < len; k++)
            out[o++] = (char)p[i + k];
        i += len;
    }
    out[o] = '\0';
    return i < n ? 0 : -1;
}

/* ---- this host */

static int same_addr(int family, const unsigned char *a, const struct sockaddr *sa)
{
    if (!sa || sa->sa_family != family)
        return 0;
    if (family == AF_INET)
        return memcmp(a, &((const struct sockaddr_in *)sa)->sin_addr, 4) == 0;
    return memcmp(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
}

int relay_is_self(const struct config *cfg, int family, const unsigned char *addr)
{
    struct ifaddrs *ifs = NULL;
    int self = 0;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i && !self; i = i->ifa_next)
            self = same_addr(family, addr, i->ifa_addr);
        freeifaddrs(ifs);
    }
    /* own_addresses: "192.0.2.1, 2001:db8::1 ..." (brackets allowed) */
    const char *s = cfg->own_addresses;
    while (!self && *s) {
        size_t skip = strspn(s, " ,\t[]");
        s += skip;
        size_t len = strcspn(s, " ,\t[]");
        char one[64];
        unsigned char bin[16];
        if (len > 0 && len < sizeof one) {
            memcpy(one, s, len);
            one[len] = '\0';
            self = inet_pton(family, one, bin) == 1 &&
                   memcmp(bin, addr, family == AF_INET ? 4 : 16) == 0;
        }
        s += len;
    }
    return self;
}

/* is_our_name: name (without the final dot) is our hostname. */
static int is_our_name(const struct config *cfg, const char *name)
{
    size_t n = strlen(cfg->hostname);
    if (n > 0 && cfg->hostname[n - 1] == '.')
        n--;
    return strlen(name) == n && strncasecmp(name, cfg->hostname, n) == 0;
}

/* ---- routes */

static void fail(struct relay_result *res, int kind, const char *status, const char *fmt,
                 const char *a, const char *b)
{
    memset(res, 0, sizeof *res);
    res->kind = kind;
    snprintf(res->status, sizeof res->status, "%s", status);
    snprintf(res->reply, sizeof res->reply, fmt, a, b);
}

struct mx {
    char name[LIM_DOMAIN + 1];
    int preference;
    unsigned key; /* random order among equal preferences */
};

static int mx_order(const void *a, const void *b)
{
    const struct mx *x = a, *y = b;
    if (x->preference != y->preference)
        return x->preference < y->preference ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* addresses: AAAA then A records of name appended to hosts (up to max) with preference.
 * Returns 1 when one of them is this host (nothing appended then), 0 otherwise; *temp is set
 * when a lookup failed temporarily. All the addresses are checked, even past max. */
static int addresses(const struct config *cfg, const char *name, int preference,
                     struct relay_host *hosts, size_t *n, size_t max, int *temp)
{
    static const int types[2] = {28, 1}; /* AAAA, A */
    struct relay_host found[2 * LIM_RELAY_ADDRESSES];
    size_t nfound = 0;
    for (int t = 0; t < 2; t++) {
        struct ub_result *r;
        char why[128];
        enum lookup st = lookup(name, types[t], &r, why, sizeof why);
        if (st == LOOK_TEMP)
            *temp = 1;
        if (st != LOOK_DATA)
            continue;
        int family = types[t] == 28 ? AF_INET6 : AF_INET;
        size_t alen = family == AF_INET6 ? 16 : 4;
        for (int i = 0; r->data[i]; i++) {
            if ((size_t)r->len[i] != alen)
                continue;
            if (relay_is_self(cfg, family, (const unsigned char *)r->data[i])) {
                ub_resolve_free(r);
                return 1;
            }
            if (nfound < sizeof found / sizeof found[0]) {
                struct relay_host *h = &found[nfound++];
                memset(h, 0, sizeof *h);
                snprintf(h->name, sizeof h->name, "%s", name);
                h->family = family;
                memcpy(h->addr, r->data[i], alen);
                h->preference = preference;
            }
        }
        ub_resolve_free(r);
    }
    for (size_t i = 0; i < nfound && *n < max; i++)
        hosts[(*n)++] = found[i];
    return 0;
}

/* route_host: the relayhost "HOST[:PORT]" or "[ADDRESS][:PORT]": its addresses only. */
static enum relay_route_status route_host(const struct config *cfg, struct relay_host *hosts,
                                          size_t *n, struct relay_result *res)
{
    char host[LIM_DOMAIN + 1];
    int port;
    if (relay_relayhost(cfg->relayhost, host, sizeof host, &port) < 0) {
        fail(res, 4, "4.3.5", "relayhost %s is not HOST:PORT or [ADDRESS]:PORT", cfg->relayhost,
             "");
        return ROUTE_TEMP;
    }
    unsigned char bin[16];
    int family = inet_pton(AF_INET, host, bin) == 1    ? AF_INET
                 : inet_pton(AF_INET6, host, bin) == 1 ? AF_INET6
                                                       : 0;
    if (family) {
        memset(&hosts[0], 0, sizeof hosts[0]);
        snprintf(hosts[0].name, sizeof hosts[0].name, "%s", host);
        hosts[0].family = family;
        memcpy(hosts[0].addr, bin, sizeof bin);
        *n = 1;
        return ROUTE_OK;
    }
    int temp = 0;
    addresses(cfg, host, 0, hosts, n, LIM_RELAY_ADDRESSES, &temp);
    if (*n > 0)
        return ROUTE_OK;
    /* The relayhost is ours to configure: a name that does not resolve defers (the
     * operator fixes it), it never bounces the users' mail. */
    fail(res, 4, "4.4.3", "relayhost %s: no address found%s", host, temp ? " (DNS failure)" : "");
    return ROUTE_TEMP;
}

enum relay_route_status relay_route(const struct config *cfg, const char *domain,
                                    struct relay_host *hosts, size_t *n, struct relay_result *res)
{
    *n = 0;
    if (cfg->relayhost[0])
        return route_host(cfg, hosts, n, res);

    struct ub_result *r;
    char why[128];
    enum lookup st = lookup(domain, 15, &r, why, sizeof why);
    if (st == LOOK_NXDOMAIN) {
        fail(res, 5, "5.1.2", "Host or domain name not found: %s (%s)", domain, why);
        return ROUTE_NXDOMAIN;
    }
    if (st == LOOK_TEMP) {
        fail(res, 4, "4.4.3", "DNS lookup of the MX records of %s failed: %s", domain, why);
        return ROUTE_TEMP;
    }

    struct mx mx[RELAY_MAX_MX] = {0};
    size_t nmx = 0;
    if (st == LOOK_NODATA) { /* RFC 5321 5.1: the implicit MX */
        snprintf(mx[0].name, sizeof mx[0].name, "%s", domain);
        mx[0].preference = 0;
        nmx = 1;
    } else {
        int records = 0, null_mx = 0;
        for (int i = 0; r->data[i]; i++) {
            records++;
            char name[LIM_DOMAIN + 1];
            if (r->len[i] < 3 || wire_name((unsigned char *)r->data[i] + 2, (size_t)r->len[i] - 2,
                                           name, sizeof name) < 0)
                continue;
            if (!name[0]) {
                null_mx = 1; /* "MX 0 .": among others it is simply not a host */
                continue;
            }
            if (nmx < RELAY_MAX_MX) {
                const unsigned char *d = (const unsigned char *)r->data[i];
                snprintf(mx[nmx].name, sizeof mx[nmx].name, "%s", name);
                mx[nmx].preference = d[0] << 8 | d[1];
                mx[nmx].key = arc4random();
                nmx++;
            }
        }
        ub_resolve_free(r);
        if (null_mx && records == 1) {
            fail(res, 5, "5.1.10", "Domain %s does not accept mail (null MX, RFC 7505)%s", domain,
                 "");
            return ROUTE_NULLMX;
        }
        qsort(mx, nmx, sizeof mx[0], mx_order);
    }

    /* RFC 5321 5.1: we are one of the MX hosts: only those preferred to us are tried. */
    int temp = 0, self = 0, self_pref = 0;
    for (size_t i = 0; i < nmx; i++) {
        if (self && mx[i].preference >= self_pref)
            break;
        /* Enough addresses, all preferred to this MX: whatever it is changes nothing. */
        if (*n == LIM_RELAY_ADDRESSES && hosts[*n - 1].preference < mx[i].preference)
            break;
        if (is_our_name(cfg, mx[i].name) ||
            addresses(cfg, mx[i].name, mx[i].preference, hosts, n, LIM_RELAY_ADDRESSES, &temp)) {
            self = 1;
            self_pref = mx[i].preference;
            /* drop what was taken from hosts of this same preference */
            while (*n > 0 && hosts[*n - 1].preference >= self_pref)
                (*n)--;
        }
    }
    if (*n > 0)
        return ROUTE_OK;
    /* A better MX that could not be looked up may be the right one: defer, not loop. */
    if (temp) {
        fail(res, 4, "4.4.3", "DNS lookup of the mail hosts of %s failed%s", domain, "");
        return ROUTE_TEMP;
    }
    if (self) {
        fail(res, 5, "5.4.6", "mail for %s loops back to myself%s", domain, "");
        return ROUTE_LOOP;
    }
    fail(res, 5, st == LOOK_NODATA ? "5.1.2" : "5.4.4",
         "Host or domain name not found: no address for the mail hosts of %s%s", domain, "");
    return ROUTE_NOHOST;
}

int relay_relayhost(const char *spec, char *host, size_t n, int *port)
{
    const char *end;
    *port = 25;
    if (spec[0] == '[') {
        end = strchr(spec, ']');
        if (!end)
            return -1;
        spec++;
    } else {
        end = strrchr(spec, ':');
        if (!end)
            end = spec + strlen(spec);
    }
    size_t len = (size_t)(end - spec);
    if (len == 0 || len >= n)
        return -1;
    memcpy(host, spec, len);
    host[len] = '\0';
    if (*end == ']')
        end++;
    if (*end == ':') {
        char *stop;
        long p = strtol(end + 1, &stop, 10);
        if (*stop || p < 1 || p > 65535)
            return -1;
        *port = (int)p;
    } else if (*end) {
        return -1;
    }
    return 0;
}
