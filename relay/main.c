/*
 * main.c - pgmail-relay: delivers the outbound queue to the world (see relay.h).
 *
 * A long-running service in the foreground (units/pgmail-relay.service, Type=notify): no
 * arguments; the configuration is pgmail.conf and PGMAIL_* as for every pgmail program,
 * logs go to the journal (or stderr: PGMAIL_LOG=stderr). SIGTERM and SIGINT stop it
 * cleanly: no new work is claimed, every agent finishes the message it is sending and
 * releases the rest, and the process exits once all agents have (scheduler.c).
 */
#include "core.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static volatile sig_atomic_t term;
static int wake[2] = {-1, -1};

/* on_signal: remember SIGTERM/SIGINT, and wake the scheduler's poll() for any signal. */
static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGTERM || sig == SIGINT)
        term = 1;
    if (wake[1] >= 0 && write(wake[1], "x", 1) < 0) {
        /* the pipe is full: the scheduler is awake already */
    }
    errno = saved;
}

static int usage(int argc, char **argv)
{
    if (argc <= 1)
        return 0;
    if (strcmp(argv[1], "--help") == 0)
        fprintf(stderr, "pgmail-relay: delivers pgmail's outbound queue (SMTP client)\n");
    else
        fprintf(stderr, "pgmail-relay: no arguments expected\n");
    fprintf(stderr, "usage: pgmail-relay  (runs in the foreground; configuration from "
                    "pgmail.conf and PGMAIL_*; see README.md)\n");
    return 2;
}

int main(int argc, char **argv)
{
    int u = usage(argc, argv);
    if (u)
        return u;
    log_init("pgmail-relay", "-", "-");
    struct config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof err) < 0) {
        log_event(LOG_ERR, "config-error", "error=\"%s\"", err);
        return 1;
    }
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_event(LOG_ERR, "relay-start-failed", "error=\"%s\"", strerror(errno));
        return 1;
    }
    /* A remote host that goes away while we write must not kill an agent. */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    struct relay_signals sig = {.term = &term, .wake_fd = wake[0], .wake_wfd = wake[1]};
    int status = relay_scheduler_run(&cfg, &sig);
    close(wake[0]);
    close(wake[1]);
    return status;
}
