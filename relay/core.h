/*
 * core.h - the relay's own modules (relay.h has the interfaces between its parts):
 * main.c calls scheduler.c, which runs jobs.c (DSNs, delay warnings, history) and forks
 * agent.c, which records through outcome.c; all of them run their SQL from sql.c.
 */
#ifndef PGMAIL_RELAY_CORE_H
#define PGMAIL_RELAY_CORE_H

#include <signal.h>

#include "config.h"
#include "db.h"
#include "relay.h"

/* A lease owner: "host:pid:n", one per agent (the pid is the scheduler's). */
#define RELAY_OWNER_LEN (LIM_DOMAIN + 48)

/* What main.c's signal handlers set: term (SIGTERM/SIGINT), and one byte written to
 * wake_fd for every signal, so that the scheduler's poll() wakes (the self-pipe trick). */
struct relay_signals {
    volatile sig_atomic_t *term;
    int wake_fd;  /* the read end, non-blocking */
    int wake_wfd; /* the write end (an agent closes both) */
};

/* ---- scheduler.c */

/* relay_scheduler_run: the parent's loop until SIGTERM (see scheduler.c). Returns main's
 * exit status: 0 after a clean stop, 1 when it could not start. */
int relay_scheduler_run(const struct config *cfg, const struct relay_signals *sig);

/* ---- jobs.c: the scheduler's periodic work, each cheap when there is nothing to do */

/* relay_jobs_warn: mark deferred rows older than delay_warning_time (when it is > 0)
 * as owing a delay warning. */
void relay_jobs_warn(struct db *db, const struct config *cfg);

/* relay_jobs_dsn: write owed DSNs (dsn.h), one message per transaction, at most max
 * messages. Returns how many were written, -1 when the database failed (logged). */
int relay_jobs_dsn(struct db *db, const struct config *cfg, int max);

/* relay_jobs_prune: remove finished rows older than LIM_QUEUE_HISTORY_DAYS. */
void relay_jobs_prune(struct db *db);

/* ---- claim.c */

/* relay_claim: lease to owner up to LIM_RELAY_MESSAGES_PER_CONNECTION messages due for
 * dest (NULL: any, the relayhost) as batch b (freed with relay_free_batch). 1 claimed,
 * 0 nothing due, -1 failed (the database, logged by the caller from db; or memory, the
 * rows then released). */
int relay_claim(struct db *db, const struct config *cfg, const char *owner, const char *dest,
                struct relay_batch *b);
void relay_free_batch(struct relay_batch *b);

/* ---- agent.c */

/* What an agent and the scheduler say to each other once it runs: an agent with nothing
 * more due waits idle (its pid written to idle_fd, a pipe shared by all agents), and the
 * scheduler writes one message to its wake_fd: RELAY_WAKE when work is due for the agent's
 * destination, RELAY_MOVE followed by a domain when work is due for another one (no agent
 * of its own: the idle one takes it over, sparing a fork, a database session and a
 * resolver). -1: no idle waits. */
#define RELAY_WAKE    'w'
#define RELAY_MOVE    'm'
#define RELAY_IDLE_MS 1000 /* how long an idle agent keeps its SMTP connection (Postfix: 2 s) */
#define RELAY_KEEP_MS                                                                              \
    60000 /* and how long it waits in all, with its database session                               \
             (Postfix's smtp processes: max_idle, 100 s) */
struct relay_agent_link {
    int wake_fd; /* the read end of this agent's own pipe */
    int idle_fd; /* the write end of the shared one */
};

/* relay_agent_run: in a freshly forked child: deliver batch b (leased to owner) over one
 * connection, then claim and deliver more due work of the same destination itself over
 * the same connections (idle waits in between, see above), record every outcome, release
 * what was not started. conninfo is database's (a transaction-mode pooler is fine:
 * agent.c keeps no session state). stop is set by SIGTERM: the agent stops after the
 * message in progress. Returns the child's exit status (0, or 1 when the database failed:
 * the scheduler then releases the leases). */
int relay_agent_run(const struct config *cfg, const char *conninfo, const char *owner,
                    struct relay_batch *b, volatile sig_atomic_t *stop,
                    const struct relay_agent_link *link);

/* ---- outcome.c */

/* relay_outcome: record the result of every recipient of msg (leased to owner) in one
 * transaction: each queue row's new state with its attempt row, then the messages row is
 * freed when nothing needs it any more; then one journal event per recipient. Rows whose
 * lease was taken over are left alone (logged). 0, or -1 when the database failed (the
 * rows stay leased until the lease runs out, then they are tried again). */
int relay_outcome(struct db *db, const struct config *cfg, const char *owner,
                  const struct relay_msg *msg);

/* relay_free_message: inside the caller's transaction, delete messages row message_id
 * when no mailbox row and no unfinished queue row needs it (locked first, asked in a
 * statement of its own: migrations/006). DB_OK also when it stays or is gone already. */
enum db_status relay_free_message(struct db *db, long long message_id);

/* relay_outcome_all: set every recipient of msg whose result is still undecided (kind 0)
 * to res. */
void relay_outcome_all(struct relay_msg *msg, const struct relay_result *res);

#endif
