/*
 * scheduler.c - the parent process of pgmail-relay (see core.h and relay.h).
 *
 * One loop (STYLE.md habit 17), every wait with a deadline: poll() on the database
 * socket (NOTIFY pgmail_queue: migrations/006's trigger fires when a row becomes due or
 * owes a DSN) and on the self-pipe (SIGCHLD, SIGTERM), until the next row is due, a
 * delay warning falls due, or the watchdog wants its ping. Each turn: reap agents, serve
 * the destinations the notifications named (migrations/009: an idle agent of the
 * destination is woken to claim it itself, else an idle one of another destination is
 * moved to it, else an agent is forked for the batch: core.h, relay_agent_link; busy
 * agents of it are told to claim once more as they go idle), ask the database which
 * destinations have due work only when something may wait that no notification named (at
 * start, after a timer or a lost connection, or when slots were short), then run the jobs
 * (jobs.c).
 *
 * Concurrency: at most relay_destination_concurrency agents per destination (a domain; with
 * a relayhost everything is one destination) and relay_max_connections in all. Each agent
 * has its own lease owner, "host:pid:n", so that whatever it leaves leased (it died, or
 * SIGTERM stopped it) is released by the scheduler as the agent is reaped; a scheduler
 * killed outright leaves the leases to run out (relay_lease), and another relay, or this
 * one restarted, takes the rows then.
 *
 * Two database settings. The scheduler's own connection is relay_database, else database:
 * LISTEN needs a session, which a transaction-mode pooler does not keep. When it is lost
 * the loop opens it again (and LISTENs again) and goes on; nothing is claimed meanwhile.
 * The agents connect to database, the handlers' setting: their statements keep no session
 * state (agent.c), so behind PgBouncer they share its pool, and without one the relay's
 * worst case is relay_max_connections + 1 backends (tests/units/verify.sh counts them).
 */
#include "core.h"
#include "log.h"
#include "sql.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

/* How long the loop sleeps at most when nothing is due (old history is pruned once an
 * hour), and how long it waits before trying the database again. */
#define IDLE_MS        3600000
#define DB_RETRY_MS    2000
#define DSN_RETRY_MS   60000
#define PRUNE_EVERY_MS 3600000LL
#define DSNS_PER_TURN  20
#define WARN_EVERY_MS  1000
#define CLAIM_FLOOR_MS 200
/* A new agent costs a process, a PostgreSQL backend (tens of ms of CPU) and a resolver: a
 * turn forks at most this many, and the next one comes POKE_MS later, by when agents that
 * finished meanwhile are moved to the rest instead. */
#define FORKS_PER_TURN 2
#define POKE_MS        20 /* after waking an idle agent: the rows it leaves are claimed then */
/* Destinations named by notifications and not yet served; more at once are found by asking
 * (SQL_DUE_DOMAINS) instead. */
#define NOTIFIED_MAX 64
/* How stale the time of the next due row may get while notifications keep the loop
 * turning: a deferral recorded by a busy agent is seen within this. */
#define DUE_RECHECK_MS 100

struct child {
    pid_t pid;
    char dest[LIM_DOMAIN + 1]; /* the domain, "" for the relayhost */
    char owner[RELAY_OWNER_LEN];
    int wake;          /* the write end of its wake pipe (core.h, relay_agent_link) */
    int idle;          /* it waits idle for work of its destination */
    long long told_at; /* when it was last woken or moved (it claims within a few ms) */
    /* A notification named its destination while it was busy: it may have claimed
     * before that row was committed, so it claims once more when it goes idle. */
    int missed;
};

struct sched {
    const struct config *cfg;
    const struct relay_signals *sig;
    struct db db;      /* relay_database, else database: the scheduler's, which LISTENs */
    PGconn *listening; /* the connection (and backend) LISTEN ran on */
    int listen_pid;
    int db_down; /* logged once per outage */
    struct child *kids;
    size_t nkids, maxkids;
    int idle_pipe[2]; /* agents write their pid when they wait idle; -1: no idle waits */
    int poked;        /* this turn woke an idle agent */
    int throttled;    /* this turn stopped at FORKS_PER_TURN */
    /* What the notifications said (migrations/009: a due row's domain, '' for a DSN owed).
     * backlog: due work may wait that no notification named (at start, after a lost
     * connection, a timer, a destination that found no free slot): ask the database. */
    char notified[NOTIFIED_MAX][LIM_DOMAIN + 1];
    size_t nnotified;
    int backlog, dsn_due;
    long long due_at, due_checked; /* next_due's answer, and when it was asked */
    int rechecking;                /* next_due answered from due_at: a wait to ask again */
    unsigned long serial;
    char host[64];
    long long dsn_retry_at, pruned_at, warned_at, watchdog_at, renewed_at;
    long long watchdog_ms; /* 0: no watchdog */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void watchdog(struct sched *s)
{
    if (s->watchdog_ms && now_ms() >= s->watchdog_at) {
        sd_notify(0, "WATCHDOG=1");
        s->watchdog_at = now_ms() + s->watchdog_ms;
    }
}

/* db_trouble: log a database failure once per outage. */
static void db_trouble(struct sched *s, const char *what)
{
    if (!s->db_down)
        log_event(LOG_ERR, "relay-db-failed", "during=%s sqlstate=%s error=\"%s\"", what,
                  s->db.sqlstate, s->db.error);
    s->db_down = 1;
}

/* listen: make sure this connection LISTENs (a new connection or backend does not). */
static int listen_ok(struct sched *s)
{
    PGconn *c = s->db.conn;
    if (c && PQstatus(c) == CONNECTION_OK && c == s->listening && PQbackendPID(c) == s->listen_pid)
        return 0;
    if (db_failed(db_exec(&s->db, relay_sql(SQL_LISTEN), 0, NULL, NULL, NULL, NULL))) {
        db_trouble(s, "listen");
        db_close(&s->db);
        return -1;
    }
    s->listening = s->db.conn;
    s->listen_pid = PQbackendPID(s->db.conn);
    s->backlog = s->dsn_due = 1; /* notifications sent before the LISTEN were not heard */
    if (s->db_down)
        log_event(LOG_NOTICE, "relay-db-back", "backend=%d", s->listen_pid);
    s->db_down = 0;
    return 0;
}

/* note: what one notification names: a destination with a due row (kept for serve, once;
 * with a relayhost every one is ""), or a DSN owed (""). */
static void note(struct sched *s, const char *payload)
{
    if (!payload[0]) {
        s->dsn_due = 1;
        return;
    }
    const char *dest = s->cfg->relayhost[0] ? "" : payload;
    for (size_t i = 0; i < s->nnotified; i++)
        if (strcmp(s->notified[i], dest) == 0)
            return;
    if (s->nnotified == NOTIFIED_MAX || strlen(dest) > LIM_DOMAIN) {
        s->backlog = 1;
        return;
    }
    snprintf(s->notified[s->nnotified++], LIM_DOMAIN + 1, "%s", dest);
}

/* drain: take every notification in; -1 when the connection broke. *got: how many. */
static int drain(struct sched *s, int *got)
{
    *got = 0;
    if (!s->db.conn || !PQconsumeInput(s->db.conn) || PQstatus(s->db.conn) != CONNECTION_OK) {
        snprintf(s->db.error, sizeof s->db.error, "%s",
                 s->db.conn ? PQerrorMessage(s->db.conn) : "no connection");
        s->db.error[strcspn(s->db.error, "\r\n")] = '\0';
        snprintf(s->db.sqlstate, sizeof s->db.sqlstate, "08006");
        db_trouble(s, "wait");
        db_close(&s->db);
        return -1;
    }
    PGnotify *n;
    while ((n = PQnotifies(s->db.conn)) != NULL) {
        note(s, n->extra);
        PQfreemem(n);
        (*got)++;
    }
    return 0;
}

/* count: agents of dest; busy_count: those of them not waiting idle (NULL: of any
 * destination). An idle agent is a free slot: it is woken for its destination's work, or
 * moved to another's. */
static long count(const struct sched *s, const char *dest)
{
    long n = 0;
    for (size_t i = 0; i < s->nkids; i++)
        n += strcmp(s->kids[i].dest, dest) == 0;
    return n;
}

static long busy_count(const struct sched *s, const char *dest)
{
    long n = 0;
    for (size_t i = 0; i < s->nkids; i++)
        n += !s->kids[i].idle && (!dest || strcmp(s->kids[i].dest, dest) == 0);
    return n;
}

/* full: the destinations at their concurrency limit, as a PostgreSQL array literal (in
 * out, n octets; each element quoted; one that does not fit is left out, it is then only
 * asked for in vain). */
/* array_add: append d to the text[] literal being built in out (which starts "{"; room for
 * 2 * strlen(d) + 4 more octets checked by the caller), quoted and escaped. */
static size_t array_add(char *out, size_t len, const char *d)
{
    if (len > 1)
        out[len++] = ',';
    out[len++] = '"';
    for (; *d; d++) {
        if (*d == '"' || *d == '\\')
            out[len++] = '\\';
        out[len++] = *d;
    }
    out[len++] = '"';
    return len;
}

static void full(const struct sched *s, char *out, size_t n)
{
    size_t len = (size_t)snprintf(out, n, "{");
    for (size_t i = 0; i < s->nkids; i++) {
        const char *d = s->kids[i].dest;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(s->kids[j].dest, d) == 0;
        if (seen || !*d || busy_count(s, d) < s->cfg->relay_destination_concurrency ||
            len + 2 * strlen(d) + 4 > n)
            continue;
        len = array_add(out, len, d);
    }
    snprintf(out + len, n - len, "}");
}

/* all_full: nothing more can be started (in all, or the relayhost's share; or SIGTERM
 * came, even in the middle of a round of claims). */
static int all_full(const struct sched *s)
{
    return *s->sig->term || busy_count(s, NULL) >= s->cfg->relay_max_connections ||
           (s->cfg->relayhost[0] && busy_count(s, "") >= s->cfg->relay_destination_concurrency);
}

/* forget_parent_db: in the child, let go of the scheduler's connection without touching
 * the server: PQfinish would send Terminate over the socket the parent still uses (and
 * end its session), and merely dropping the pointer would leak it. /dev/null is put in
 * the socket's place first, so what PQfinish writes goes nowhere; then it frees. */
static void forget_parent_db(struct db *db)
{
    if (db->conn) {
        int fd = PQsocket(db->conn), nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0 && nul >= 0 && dup2(nul, fd) >= 0)
            PQfinish(db->conn);
        /* else: the socket cannot be replaced; keep the connection unused (a leak of
         * the child only, never a Terminate on the parent's session) */
        if (nul >= 0)
            close(nul);
    }
    db->conn = NULL;
    db->in_tx = 0;
}

static volatile sig_atomic_t agent_stop;

static void on_agent_term(int sig)
{
    (void)sig;
    agent_stop = 1;
}

/* agent: the child's life after fork; never returns. */
static void agent(struct sched *s, struct relay_batch *b, const char *owner, pid_t parent,
                  int wake_fd)
{
    struct sigaction sa = {.sa_handler = on_agent_term, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGCHLD, SIG_DFL);
    /* A scheduler that dies (even by SIGKILL) stops its agents after their message. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        agent_stop = 1;
    close(s->sig->wake_fd);
    close(s->sig->wake_wfd);
    if (s->idle_pipe[0] >= 0)
        close(s->idle_pipe[0]);
    for (size_t i = 0; i < s->nkids; i++)
        close(s->kids[i].wake);
    struct relay_agent_link link = {.wake_fd = s->idle_pipe[1] >= 0 ? wake_fd : -1,
                                    .idle_fd = s->idle_pipe[1]};
    /* The agent's events carry its lease owner as the session, its destination as peer. */
    log_init("pgmail-relay", owner, b->domain[0] ? b->domain : "relayhost");
    forget_parent_db(&s->db);
    free(s->kids);
    s->kids = NULL;
    int status = relay_agent_run(s->cfg, s->cfg->database, owner, b, &agent_stop, &link);
    relay_free_batch(b);
    exit(status);
}

/* claim: lease up to LIM_RELAY_MESSAGES_PER_CONNECTION messages for dest (NULL: any, the
 * relayhost) and fork an agent for them. 1 started, 0 nothing to claim, -1 failed. */
static int claim(struct sched *s, const char *dest)
{
    struct child k = {.wake = -1};
    snprintf(k.dest, sizeof k.dest, "%s", dest ? dest : "");
    snprintf(k.owner, sizeof k.owner, "%s:%ld:%lu", s->host, (long)getpid(), ++s->serial);
    struct relay_batch b;
    int got = relay_claim(&s->db, s->cfg, k.owner, dest, &b);
    if (got <= 0) {
        if (got < 0)
            db_trouble(s, "claim");
        return got;
    }
    int w[2] = {-1, -1};
    if (pipe2(w, O_CLOEXEC) < 0)
        w[0] = w[1] = -1; /* the agent then does not wait idle */
    size_t nmsgs = b.nmsgs;
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        if (w[1] >= 0)
            close(w[1]);
        agent(s, &b, k.owner, parent, w[0]);
    }
    relay_free_batch(&b);
    if (w[0] >= 0)
        close(w[0]);
    if (pid < 0) {
        log_event(LOG_ERR, "relay-fork-failed", "destination=%s error=\"%s\"", k.dest,
                  strerror(errno));
        if (w[1] >= 0)
            close(w[1]);
        const char *rv[] = {k.owner};
        db_exec(&s->db, relay_sql(SQL_RELEASE), 1, rv, NULL, NULL, NULL);
        return -1;
    }
    k.pid = pid;
    k.wake = w[1];
    s->kids[s->nkids++] = k;
    log_event(LOG_INFO, "relay-agent", "pid=%ld destination=%s owner=%s messages=%zu", (long)pid,
              k.dest[0] ? k.dest : "relayhost", k.owner, nmsgs);
    return 1;
}

/* tell: write cmd (RELAY_WAKE) to idle agent i; it is busy from now on (an
 * agent that ended meanwhile reads nothing: it is reaped, and its work claimed anew). */
static void tell(struct sched *s, size_t i, char cmd)
{
    if (write(s->kids[i].wake, &cmd, 1) < 0 && errno != EPIPE && errno != EAGAIN)
        log_event(LOG_WARNING, "relay-wake-failed", "pid=%ld error=\"%s\"", (long)s->kids[i].pid,
                  strerror(errno));
    s->kids[i].idle = 0;
    s->kids[i].told_at = now_ms();
}

/* wake_idle: work is due for dest ("" for the relayhost): wake its idle agents, which
 * claim it themselves over the connections they kept; without one, move an idle agent of
 * another destination to it (when dest has room). 1 when an agent was told. */
static int wake_idle(struct sched *s, const char *dest)
{
    int woke = 0;
    /* An agent told within POKE_MS has not claimed yet: its rows still look due. */
    for (size_t i = 0; i < s->nkids; i++)
        if (strcmp(s->kids[i].dest, dest) == 0 && now_ms() - s->kids[i].told_at < POKE_MS)
            return s->poked = 1;
    for (size_t i = 0; i < s->nkids; i++)
        if (s->kids[i].idle && strcmp(s->kids[i].dest, dest) == 0) {
            tell(s, i, RELAY_WAKE);
            woke = 1;
        }
    for (size_t i = 0; !woke && i < s->nkids; i++)
        if (s->kids[i].idle && count(s, dest) < s->cfg->relay_destination_concurrency) {
            char cmd[LIM_DOMAIN + 2];
            int n = snprintf(cmd, sizeof cmd, "%c%s", RELAY_MOVE, dest);
            s->kids[i].idle = 0;
            s->kids[i].missed = 0;
            s->kids[i].told_at = now_ms();
            if (write(s->kids[i].wake, cmd, (size_t)n) != n)
                continue; /* it ended meanwhile: reaped soon */
            snprintf(s->kids[i].dest, sizeof s->kids[i].dest, "%s", dest);
            log_event(LOG_INFO, "relay-agent-moved", "pid=%ld destination=%s owner=%s",
                      (long)s->kids[i].pid, dest, s->kids[i].owner);
            woke = 1;
        }
    s->poked |= woke;
    return woke;
}

/* read_idle: take in the pids of agents that went idle; one that missed a notification
 * for its destination is woken at once to claim it. */
static void read_idle(struct sched *s)
{
    pid_t pid;
    while (s->idle_pipe[0] >= 0 && read(s->idle_pipe[0], &pid, sizeof pid) == sizeof pid)
        for (size_t i = 0; i < s->nkids; i++)
            if (s->kids[i].pid == pid) {
                s->kids[i].idle = 1;
                if (s->kids[i].missed) {
                    s->kids[i].missed = 0;
                    tell(s, i, RELAY_WAKE);
                }
            }
}

/* missed: the busy agents of dest are told, when they go idle, that work came meanwhile. */
static void missed(struct sched *s, const char *dest)
{
    for (size_t i = 0; i < s->nkids; i++)
        if (!s->kids[i].idle && strcmp(s->kids[i].dest, dest) == 0)
            s->kids[i].missed = 1;
}

/* serve: the destinations the notifications named: an idle agent is woken (or moved) to
 * claim the work itself, else a new agent is started when the destination has room (its
 * busy agents take their destination's next work themselves when they finish). What finds
 * no free slot is left to claim_all, which asks the database. -1 when it failed. */
static int serve(struct sched *s, int *started)
{
    int rc = 0;
    for (size_t i = 0; i < s->nnotified && rc == 0; i++) {
        const char *d = s->notified[i];
        read_idle(s);
        if (*s->sig->term)
            continue;
        missed(s, d); /* before wake_idle: an agent told a moment ago may have claimed */
        if (wake_idle(s, d) || count(s, d) >= s->cfg->relay_destination_concurrency)
            continue;
        if (all_full(s) || (long)s->nkids >= s->cfg->relay_max_connections ||
            *started >= FORKS_PER_TURN) {
            s->backlog = 1;
            s->throttled |= *started >= FORKS_PER_TURN;
            continue;
        }
        int k = claim(s, d[0] ? d : NULL);
        if (k < 0)
            rc = -1;
        else
            *started += k;
    }
    s->nnotified = 0;
    s->backlog |= rc < 0; /* what was not served is asked for once the database is back */
    return rc;
}

/* claim_all: start agents while destinations have due work and slots are free. *started
 * counts them. -1 when the database failed. */
static int claim_all(struct sched *s, int *started)
{
    if (s->cfg->relayhost[0]) {
        missed(s, "");
        if (wake_idle(s, ""))
            return 0; /* what the woken agent leaves is claimed next turn (POKE_MS) */
        while (!all_full(s)) {
            int k = claim(s, NULL);
            if (k <= 0) {
                s->backlog = k < 0;
                return k;
            }
            (*started)++;
        }
        return 0;
    }
    /* Idle agents count as free slots here: they are woken for their own destination, or
     * moved to another. */
    long busy;
    for (int progress = 1; progress && !*s->sig->term &&
                           (busy = busy_count(s, NULL)) < s->cfg->relay_max_connections;) {
        char fullv[4096], room[16];
        full(s, fullv, sizeof fullv);
        snprintf(room, sizeof room, "%ld", s->cfg->relay_max_connections - busy);
        const char *vals[] = {fullv, room};
        PGresult *r = NULL;
        enum db_status st = db_exec(&s->db, relay_sql(SQL_DUE_DOMAINS), 2, vals, NULL, NULL, &r);
        if (st == DB_NOTFOUND) {
            s->backlog = 0;
            return 0;
        }
        if (st != DB_OK) {
            db_trouble(s, "due-domains");
            return -1;
        }
        progress = 0;
        for (int i = 0; i < PQntuples(r) && !*s->sig->term; i++) {
            const char *d = PQgetvalue(r, i, 0);
            read_idle(s); /* an agent that went idle meanwhile is moved, not a new one forked */
            missed(s, d);
            if (wake_idle(s, d) || count(s, d) >= s->cfg->relay_destination_concurrency)
                continue;
            if ((long)s->nkids >= s->cfg->relay_max_connections)
                continue;
            if (*started >= FORKS_PER_TURN) {
                s->throttled = 1;
                break;
            }
            int k = claim(s, d);
            if (k < 0) {
                PQclear(r);
                return -1;
            }
            progress += k;
            *started += k;
        }
        PQclear(r);
        if (s->throttled)
            break;
    }
    /* Asked until everything due has an agent: while slots are short, every turn asks
     * again (one that finds no free slot costs nothing). */
    s->backlog =
        s->throttled || *s->sig->term || busy_count(s, NULL) >= s->cfg->relay_max_connections;
    return 0;
}

/* reap: collect finished agents; release what each left leased (nothing, after a normal
 * end: the agent released it itself; after a crash, its unstarted and unfinished rows). */
static void reap(struct sched *s)
{
    int wst;
    pid_t pid;
    while ((pid = waitpid(-1, &wst, WNOHANG)) > 0) {
        size_t i = 0;
        while (i < s->nkids && s->kids[i].pid != pid)
            i++;
        if (i == s->nkids)
            continue;
        struct child k = s->kids[i];
        s->kids[i] = s->kids[--s->nkids];
        if (k.wake >= 0)
            close(k.wake);
        if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0)
            log_event(LOG_WARNING, "relay-agent-died", "pid=%ld owner=%s %s=%d", (long)pid, k.owner,
                      WIFEXITED(wst) ? "status" : "signal",
                      WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst));
        const char *vals[] = {k.owner};
        if (db_failed(db_exec(&s->db, relay_sql(SQL_RELEASE), 1, vals, NULL, NULL, NULL)))
            db_trouble(s, "release"); /* the leases run out instead */
    }
}

/* renew_ms: how often the leases of running agents are renewed: a third of relay_lease. */
static long long renew_ms(const struct sched *s)
{
    return s->cfg->relay_lease * 1000 / 3 > 0 ? s->cfg->relay_lease * 1000 / 3 : 1;
}

/* renew: extend the leases of every running agent. An agent renews its own as it sends,
 * but not while it waits for a reply (the final dot's may take LIM_CLIENT_TIMEOUT_DOT,
 * longer than relay_lease): the scheduler does it for them, so another relay never takes
 * a recipient whose attempt is still running. A scheduler killed outright renews nothing
 * more; its agents end after their message (PR_SET_PDEATHSIG) and the leases run out: a
 * reply awaited past that may be attempted twice, never lost. */
static void renew(struct sched *s)
{
    if (s->nkids == 0 || now_ms() - s->renewed_at < renew_ms(s))
        return;
    size_t cap = s->nkids * (2 * RELAY_OWNER_LEN + 4) + 3, len = 1;
    char *owners = malloc(cap), secs[24];
    if (!owners)
        return; /* the agents' own renewals and the next turn */
    owners[0] = '{';
    for (size_t i = 0; i < s->nkids; i++)
        len = array_add(owners, len, s->kids[i].owner);
    snprintf(owners + len, cap - len, "}");
    snprintf(secs, sizeof secs, "%ld", s->cfg->relay_lease);
    const char *vals[] = {owners, secs};
    if (db_failed(db_exec(&s->db, relay_sql(SQL_RENEW_AGENTS), 2, vals, NULL, NULL, NULL)))
        db_trouble(s, "renew");
    else
        s->renewed_at = now_ms();
    free(owners);
}

/* jobs: delay warnings (at most once per WARN_EVERY_MS: the loop turns at every agent's
 * end), DSNs (after a failure not again for DSN_RETRY_MS: a missing pgmail_store_dsn must
 * not spin the loop), history. */
static void jobs(struct sched *s)
{
    if (now_ms() - s->warned_at >= WARN_EVERY_MS) {
        relay_jobs_warn(&s->db, s->cfg);
        s->warned_at = now_ms();
    }
    /* DSNs only when one may be owed: a notification said so (also for the warnings just
     * marked), or the last turn stopped at DSNS_PER_TURN, or one failed (after a while). */
    if (s->dsn_due && now_ms() >= s->dsn_retry_at) {
        int n = relay_jobs_dsn(&s->db, s->cfg, DSNS_PER_TURN);
        if (n < 0)
            s->dsn_retry_at = now_ms() + DSN_RETRY_MS;
        else
            s->dsn_due = n >= DSNS_PER_TURN;
    }
    if (now_ms() - s->pruned_at >= PRUNE_EVERY_MS) {
        relay_jobs_prune(&s->db);
        s->pruned_at = now_ms();
    }
}

/* next_due: milliseconds until the next row a free slot could take, or a delay warning,
 * falls due (IDLE_MS when none). */
static int next_due(struct sched *s, int asked)
{
    long long now = now_ms();
    /* A turn that claimed nothing new answers from the last question (notifications keep
     * the loop turning fast), but waits no longer than DUE_RECHECK_MS past it: outcomes
     * recorded meanwhile (a deferral's retry, a delay warning) are seen then. */
    s->rechecking = !asked && now < s->due_at && now - s->due_checked < DUE_RECHECK_MS;
    if (s->rechecking) {
        long long left = s->due_at < s->due_checked + DUE_RECHECK_MS
                             ? s->due_at - now
                             : s->due_checked + DUE_RECHECK_MS - now;
        return (int)(left > 0 ? left : 0);
    }
    char fullv[4096], warn[24];
    full(s, fullv, sizeof fullv);
    snprintf(warn, sizeof warn, "%ld", s->cfg->delay_warning_time);
    const char *vals[] = {fullv, all_full(s) ? "true" : "false", warn};
    PGresult *r = NULL;
    enum db_status st = db_exec(&s->db, relay_sql(SQL_NEXT_DUE), 3, vals, NULL, NULL, &r);
    if (st != DB_OK) {
        db_trouble(s, "next-due");
        return DB_RETRY_MS;
    }
    int ms = IDLE_MS;
    if (!PQgetisnull(r, 0, 0)) {
        double secs = strtod(PQgetvalue(r, 0, 0), NULL);
        ms = secs <= 0 ? 0 : secs * 1000 >= IDLE_MS ? IDLE_MS : (int)(secs * 1000) + 1;
    }
    PQclear(r);
    s->due_checked = now;
    s->due_at = now + ms;
    s->backlog |= ms == 0; /* due now, yet not claimed: claim_all asks (locked: again soon) */
    return ms;
}

/* wait: until a notification, a signal, or ms pass (never past the watchdog's ping). 1
 * when the time ran out. */
static int wait_for(struct sched *s, int ms)
{
    if (s->watchdog_ms) {
        long long left = s->watchdog_at - now_ms();
        if (left < ms)
            ms = left < 0 ? 0 : (int)left;
    }
    if (s->nkids > 0) {
        long long left = s->renewed_at + renew_ms(s) - now_ms();
        if (left < ms)
            ms = left < 0 ? 0 : (int)left;
    }
    /* An agent that turns idle (its pid on idle_pipe) has recorded its outcomes, which move
     * what is due next (a deferral's retry, a delay warning): like a notification or a
     * signal it ends the wait, and the turn asks again, as it did when agents exited. */
    struct pollfd p[3] = {{.fd = s->sig->wake_fd, .events = POLLIN},
                          {.fd = s->db.conn ? PQsocket(s->db.conn) : -1, .events = POLLIN},
                          {.fd = s->idle_pipe[0], .events = POLLIN}};
    int n = poll(p, 3, ms);
    if (n > 0 && (p[2].revents & POLLIN))
        read_idle(s);
    if (n > 0 && (p[0].revents & POLLIN)) {
        char buf[64];
        while (read(s->sig->wake_fd, buf, sizeof buf) > 0)
            ;
    }
    return n == 0;
}

/* stop: SIGTERM: no more claims; every agent finishes its message and releases the
 * rest; wait for them all (the unit's TimeoutStopSec covers a final dot's wait). */
static void stop(struct sched *s)
{
    sd_notify(0, "STOPPING=1");
    log_event(LOG_NOTICE, "relay-stopping", "agents=%zu", s->nkids);
    for (size_t i = 0; i < s->nkids; i++)
        kill(s->kids[i].pid, SIGTERM);
    while (s->nkids > 0) {
        reap(s);
        if (s->nkids > 0)
            wait_for(s, 1000);
        watchdog(s);
    }
}

int relay_scheduler_run(const struct config *cfg, const struct relay_signals *sig)
{
    struct sched s = {.cfg = cfg, .sig = sig};
    db_init(&s.db, cfg->relay_database[0] ? cfg->relay_database : cfg->database, "pgmail-relay");
    s.maxkids = (size_t)cfg->relay_max_connections;
    if (pipe2(s.idle_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        s.idle_pipe[0] = s.idle_pipe[1] = -1; /* agents end when their work is done */
    s.kids = calloc(s.maxkids, sizeof *s.kids);
    if (!s.kids) {
        log_event(LOG_ERR, "relay-start-failed", "reason=out-of-memory");
        return 1;
    }
    if (gethostname(s.host, sizeof s.host) < 0)
        snprintf(s.host, sizeof s.host, "localhost");
    s.host[sizeof s.host - 1] = '\0';
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        s.watchdog_ms = (long long)(usec / 2000) > 0 ? (long long)(usec / 2000) : 1;
    s.pruned_at = now_ms() - PRUNE_EVERY_MS;
    s.warned_at = now_ms() - WARN_EVERY_MS;
    int ready = 0;
    log_event(LOG_INFO, "relay-start",
              "max_connections=%ld destination_concurrency=%ld "
              "relayhost=%s",
              cfg->relay_max_connections, cfg->relay_destination_concurrency,
              cfg->relayhost[0] ? cfg->relayhost : "-");
    while (!*sig->term) {
        reap(&s);
        watchdog(&s);
        if (listen_ok(&s) < 0) {
            wait_for(&s, DB_RETRY_MS);
            continue;
        }
        if (!ready) {
            sd_notify(0, "READY=1");
            ready = 1;
            log_event(LOG_INFO, "relay-ready", "listen=pgmail_queue");
        }
        int got, started = 0, asked = 0;
        s.poked = s.throttled = 0;
        read_idle(&s);
        if (drain(&s, &got) < 0)
            continue;
        /* Claims first: they are on the way from a submission's 250 to the remote. asked:
         * this turn asked the database which destinations have due work. */
        int failed = serve(&s, &started) < 0;
        asked = !failed && s.backlog;
        if (failed || (asked && claim_all(&s, &started) < 0)) {
            wait_for(&s, DB_RETRY_MS);
            continue;
        }
        renew(&s);
        jobs(&s);
        int ms = next_due(&s, asked);
        if (listen_ok(&s) < 0 || drain(&s, &got) < 0)
            continue;
        if (got > 0)
            continue; /* notifications libpq read during the statements above */
        if (ms == 0 && !asked)
            continue; /* due now and not yet asked for: claim_all asks (backlog) at once */
        if (ms == 0 && s.throttled)
            ms = POKE_MS;
        else if (ms == 0 && started == 0)
            ms = s.poked ? POKE_MS : CLAIM_FLOOR_MS; /* due rows locked by another relay's
                                                       claim (or the woken agent's): soon again */
        if (wait_for(&s, ms) && !s.rechecking)
            s.backlog = 1; /* a retry, a lease, a warning fell due: no notification says so */
    }
    stop(&s);
    db_close(&s.db);
    for (int i = 0; i < 2; i++)
        if (s.idle_pipe[i] >= 0)
            close(s.idle_pipe[i]);
    free(s.kids);
    log_event(LOG_NOTICE, "relay-stopped", "reason=signal");
    return 0;
}
