/*
 * peer.c - peer address, loopback test, TCP_NODELAY and session id (see peer.h).
 */
#include "peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-id128.h>

static int is_loopback_text(const char *a)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, a, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, a, &v6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&v6))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&v6))
            return v6.s6_addr[12] == 127;
    }
    return 0;
}

void peer_init(struct peer *p)
{
    sd_id128_t id;
    if (sd_id128_randomize(&id) < 0)
        memset(&id, 0, sizeof id);
    sd_id128_to_string(id, p->session);

    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    const char *env;
    snprintf(p->addr, sizeof p->addr, "unknown");
    /* Not a socket (a pipe from a local operator or a test): the peer is this host. */
    p->loopback = 1;
    if (getpeername(0, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, p->addr, sizeof p->addr);
            p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, p->addr, sizeof p->addr);
            p->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            snprintf(p->addr, sizeof p->addr, "local");
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(0, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            p->loopback = is_loopback_text(p->addr);
        }
    } else if ((env = getenv("REMOTE_ADDR")) || (env = getenv("TCPREMOTEIP"))) {
        snprintf(p->addr, sizeof p->addr, "%s", env);
        p->loopback = is_loopback_text(p->addr);
    }
    if ((env = getenv("PGMAIL_PEER_OVERRIDE")) && *env) {
        snprintf(p->addr, sizeof p->addr, "%s", env);
        p->loopback = is_loopback_text(p->addr);
    }
}
