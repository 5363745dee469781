/*
 * store.c - stream a message into PostgreSQL while DATA is still arriving.
 *
 * At DATA one messages row is started with COPY FROM STDIN (text format, the row's layout
 * in sql.c): the body travels as hex bytea, piece by piece as it is read, through libpq's
 * small output buffer, and the size column comes last, once it is known. So a message of any size
 * costs the handler a constant amount of memory. The row names its accounts (deliver_to), and its
 * insert trigger delivers it (migrations/003): so when nothing else has to be stored with
 * it, the COPY is the whole transaction, and its end is the commit. A notice of unknown
 * recipients (deliver.c), or a server
 * statement_timeout that must be off for the COPY, need more statements: then an explicit
 * transaction is opened first and smtp_deliver commits it (with a statement_timeout the
 * row is stored without accounts and delivered by a statement after the COPY, under the
 * operator's timeout again: SQL_DELIVER_LATER). Either way nothing is visible to
 * anyone until the commit: a message that fails (size, loop, disconnect, quota, database)
 * is rolled back whole. The CHECK (size = octet_length(body)) of the schema verifies that
 * the stream arrived complete.
 */
#include "smtpd.h"
#include "log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* array_literal: the transaction's accounts (distinct already: accounts.c) as a PostgreSQL
 * array literal "{1,2}" in a malloc'd string, NULL when out of memory. */
static char *array_literal(const struct smtp_tx *tx)
{
    char *out = malloc(tx->naccounts * 21 + 3); /* 20 digits and a sign or comma each */
    if (!out)
        return NULL;
    size_t len = 0;
    out[len++] = '{';
    for (size_t i = 0; i < tx->naccounts; i++)
        len += (size_t)sprintf(out + len, "%s%lld", i ? "," : "", tx->accounts[i]);
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

/* release: the account list is needed until the delivery statement has run. */
static void release(struct smtp_store *st)
{
    free(st->accounts);
    st->accounts = NULL;
}

enum db_status smtp_store_begin(struct smtp_session *s, struct smtp_store *st)
{
    memset(st, 0, sizeof *st);
    if (!s->tx.message_id[0])
        return DB_TEMP; /* no lookup drew one: cannot happen with an account to deliver to */
    st->accounts = array_literal(&s->tx);
    st->count = s->tx.naccounts;
    if (!st->accounts)
        return DB_TEMP;
    PGresult *res = NULL;
    /* The server's statement_timeout (as the lookup reported it) must be off for the COPY:
     * two round trips per message that the default configuration does without. */
    int timeout = strcmp(s->db_timeout, "0") != 0;
    st->txn = timeout || s->tx.nbounces > 0;
    enum db_status r =
        st->txn ? db_exec(&s->db, smtp_sql(SQL_BEGIN), 0, NULL, NULL, NULL, NULL) : DB_OK;
    if (r == DB_OK && timeout) {
        r = db_exec(&s->db, smtp_sql(SQL_NO_STATEMENT_TIMEOUT), 0, NULL, NULL, NULL, &res);
        if (r == DB_OK) {
            snprintf(st->saved_timeout, sizeof st->saved_timeout, "%s", PQgetvalue(res, 0, 0));
            st->timeout_off = 1;
        }
        PQclear(res);
    }
    if (r == DB_OK)
        r = db_copy_begin(&s->db, smtp_sql(SQL_COPY_MESSAGE));
    if (r != DB_OK) {
        smtp_store_abort(s, st);
        return r == DB_NOTFOUND ? DB_TEMP : r;
    }
    st->open = 1;
    /* Without accounts (NULL) when SQL_DELIVER_LATER delivers the row. The head holds
     * two paths, the session id and the account list. */
    size_t cap = 2 * LIM_PATH + 128 + strlen(st->accounts);
    char *head = malloc(cap);
    size_t n = head ? smtp_sql_copy_head(head, cap, s->tx.message_id, s->tx.sender, s->peer.session,
                                         st->timeout_off ? NULL : st->accounts)
                    : 0;
    r = n ? db_copy_put(&s->db, head, n) : DB_TEMP;
    free(head);
    return r;
}

enum db_status smtp_store_put(struct smtp_session *s, struct smtp_store *st, const char *p,
                              size_t n)
{
    char out[8192];
    while (n > 0) {
        size_t take = n < sizeof out / 2 ? n : sizeof out / 2;
        if (db_copy_put(&s->db, out, smtp_sql_copy_body(out, p, take)) != DB_OK)
            return DB_TEMP;
        st->bytes += (long long)take;
        p += take;
        n -= take;
    }
    return DB_OK;
}

enum db_status smtp_store_end(struct smtp_session *s, struct smtp_store *st)
{
    char tail[32];
    size_t n = smtp_sql_copy_tail(tail, sizeof tail, st->bytes);
    enum db_status r = n ? db_copy_put(&s->db, tail, n) : DB_TEMP;
    st->open = 0;
    enum db_status e = db_copy_end(&s->db, r == DB_OK ? NULL : "incomplete message");
    if (r == DB_OK && e == DB_OK && st->timeout_off) {
        /* The operator's statement_timeout guards the delivery and the rest again. */
        const char *vals[2] = {st->saved_timeout, NULL};
        e = db_exec(&s->db, smtp_sql(SQL_SET_STATEMENT_TIMEOUT), 1, vals, NULL, NULL, NULL);
        if (e == DB_OK) {
            vals[0] = s->tx.message_id;
            vals[1] = st->accounts;
            e = db_exec(&s->db, smtp_sql(SQL_DELIVER_LATER), 2, vals, NULL, NULL, NULL);
        }
    }
    release(st);
    if (r != DB_OK)
        return r;
    return e == DB_NOTFOUND ? DB_TEMP : e;
}

void smtp_store_abort(struct smtp_session *s, struct smtp_store *st)
{
    if (st->open)
        db_copy_end(&s->db, "message not accepted");
    st->open = 0;
    release(st);
    /* Without an explicit transaction the failed COPY has already rolled itself back. */
    if (db_in_transaction(&s->db))
        db_rollback(&s->db, smtp_sql(SQL_ROLLBACK));
}
