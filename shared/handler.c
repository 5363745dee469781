/*
 * handler.c - start-up and command reading shared by pgmail-smtpd and pgmail-pop3d
 * (see handler.h).
 */
#include "handler.h"
#include "auth.h"
#include "log.h"
#include "tls.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

int handler_args(int argc, char **argv, const char *program, const char *protocol, const char *see)
{
    if (argc <= 1)
        return 0;
    if (strcmp(argv[1], "--help") == 0)
        fprintf(stderr, "%s: the pgmail %s handler\n", program, protocol);
    else
        fprintf(stderr, "%s: no arguments expected\n", program);
    fprintf(stderr, "usage: %s  (one %s session on stdin/stdout; see %s)\n", program, protocol,
            see);
    return 2;
}

int handler_start(const char *program, struct config *cfg, struct peer *peer, struct io *io,
                  struct db *db, const char *config_reply)
{
    /* A peer that goes away while we write must not kill us before we log it. */
    signal(SIGPIPE, SIG_IGN);
    peer_init(peer);
    log_init(program, peer->session, peer->addr);
    io_init(io, 0, 1);
    char err[512];
    if (config_load(cfg, err, sizeof err) < 0) {
        log_event(LOG_ERR, "config-error", "error=\"%s\"", err);
        io_puts(io, config_reply);
        io_flush(io);
        return -1;
    }
    db_init(db, cfg->database, program);
    auth_init(cfg, peer->addr);
    log_event(LOG_INFO, "connect", "loopback=%s", peer->loopback ? "yes" : "no");
    return 0;
}

int handler_tls(const struct config *cfg, struct io *io, int timeout_ms, int *ready)
{
    io_set_timeout(io, timeout_ms);
    *ready = tls_init(cfg) > 0;
    if (cfg->tls_implicit && (!*ready || tls_start(io, io->timeout_ms) < 0)) {
        /* A scanner that never finishes a handshake is no failure of ours: exit 0. */
        log_event(LOG_NOTICE, "disconnect", "reason=%s", *ready ? "tls-failed" : "no-tls");
        return -1;
    }
    return 0;
}

enum handler_read handler_read_command(struct io *io, char *line, size_t cap)
{
    size_t n;
    enum io_status st = io_getline(io, line, cap, &n);
    if (st == IO_TOOLONG) {
        /* Postfix's rule: skip the rest of the line and answer once, in sync. */
        st = io_skipline(io);
        if (st == IO_LINE)
            return HR_TOOLONG;
    }
    if (st == IO_TIMEOUT)
        return HR_TIMEOUT;
    if (st != IO_LINE)
        return HR_END;
    if (memchr(line, '\0', n))
        return HR_NUL;
    line[strcspn(line, "\r\n")] = '\0';
    return HR_COMMAND;
}
