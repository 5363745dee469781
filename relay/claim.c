/*
 * claim.c - leasing due rows as a batch (see core.h): the scheduler claims a destination's
 * first batch, an agent claims its next ones itself.
 *
 * The claim commits with synchronous_commit off (sql.c): it is the one write on the way
 * from a NOTIFY to the first SMTP command, and a claim lost in a crash only leaves its
 * rows due again, as a crash's leases are anyway once they run out (the outcome, which is
 * durable, is written under the same owner). The setting is local to the claim's
 * transaction; outcomes keep the server's durable default.
 */
#include "core.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Columns of SQL_CLAIM. */
enum { C_ID, C_MESSAGE, C_RCPT, C_SENDER, C_SIZE, C_AGE, C_BODY, C_START };

/* Bodies up to this size come with the claim: one statement less per message on the way
 * to the remote (bigger ones are read in chunks as they are sent, agent.c). */
#define RELAY_PREFETCH 32768

void relay_free_batch(struct relay_batch *b)
{
    for (size_t i = 0; b->msgs && i < b->nmsgs; i++) {
        free(b->msgs[i].rcpts);
        if (b->msgs[i].body)
            PQfreemem(b->msgs[i].body);
    }
    free(b->msgs);
    b->msgs = NULL;
    b->nmsgs = 0;
}

/* make_batch: the claimed rows r as a batch (rows come ordered by message). */
static int make_batch(PGresult *r, struct relay_batch *b)
{
    int n = PQntuples(r);
    b->msgs = calloc((size_t)n, sizeof *b->msgs);
    if (!b->msgs)
        return -1;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && strcmp(PQgetvalue(r, j, C_MESSAGE), PQgetvalue(r, i, C_MESSAGE)) == 0)
            j++;
        struct relay_msg *m = &b->msgs[b->nmsgs++];
        m->message_id = relay_sql_num(r, i, C_MESSAGE);
        snprintf(m->sender, sizeof m->sender, "%s", PQgetvalue(r, i, C_SENDER));
        m->size = relay_sql_num(r, i, C_SIZE);
        m->start = relay_sql_num(r, i, C_START);
        if (m->size >= 0)
            m->size -= m->start;
        m->age = relay_sql_num(r, i, C_AGE);
        if (!PQgetisnull(r, i, C_BODY)) {
            m->body =
                PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, C_BODY), &m->body_len);
            if (!m->body)
                return -1;
        }
        m->rcpts = calloc((size_t)(j - i), sizeof *m->rcpts);
        if (!m->rcpts)
            return -1;
        for (; i < j; i++) {
            struct relay_rcpt *rc = &m->rcpts[m->nrcpts++];
            rc->queue_id = relay_sql_num(r, i, C_ID);
            snprintf(rc->addr, sizeof rc->addr, "%s", PQgetvalue(r, i, C_RCPT));
        }
    }
    return 0;
}

int relay_claim(struct db *db, const struct config *cfg, const char *owner, const char *dest,
                struct relay_batch *b)
{
    memset(b, 0, sizeof *b);
    snprintf(b->domain, sizeof b->domain, "%s", dest ? dest : "");
    char lease[24], max[16], prefetch[16];
    snprintf(lease, sizeof lease, "%ld", cfg->relay_lease);
    snprintf(max, sizeof max, "%d", LIM_RELAY_MESSAGES_PER_CONNECTION);
    snprintf(prefetch, sizeof prefetch, "%d", RELAY_PREFETCH);
    const char *vals[] = {owner, lease, dest, max, prefetch};
    PGresult *r = NULL;
    enum db_status st = db_exec(db, relay_sql(SQL_CLAIM), 5, vals, NULL, NULL, &r);
    if (st != DB_OK && st != DB_NOTFOUND)
        return -1;
    if (st == DB_NOTFOUND)
        return 0;
    int ok = make_batch(r, b);
    PQclear(r);
    if (ok < 0) {
        relay_free_batch(b);
        const char *rv[] = {owner};
        db_exec(db, relay_sql(SQL_RELEASE), 1, rv, NULL, NULL, NULL);
        return -1;
    }
    return 1;
}
