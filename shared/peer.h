/*
 * peer.h - who is on the other end of fd 0, and this session's id.
 *
 * The peer address comes from getpeername(0) when stdin is a socket (systemd's Accept=yes
 * and systemd-socket-activate), else REMOTE_ADDR (set by systemd for Accept=yes units) or
 * TCPREMOTEIP (ucspi-tcp). PGMAIL_PEER_OVERRIDE replaces it (tests use it to play a remote
 * client on loopback). The session id is a random 128-bit sd-id128, in hex.
 */
#ifndef PGMAIL_PEER_H
#define PGMAIL_PEER_H

struct peer {
    char addr[64];    /* printable address, "unknown" when there is none */
    int port;         /* the peer's TCP port, 0 when unknown (milters are told it) */
    int loopback;     /* 127.0.0.0/8 or ::1 (or a pipe: a local operator) */
    char session[33]; /* 32 hex digits */
};

/* peer_init: fill *p from fd 0 and the environment, set TCP_NODELAY on fd 0 when it is a TCP
 * socket (a reply split over two segments otherwise waits for a delayed ACK). */
void peer_init(struct peer *p);

#endif
