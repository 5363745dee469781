/*
 * store.c - stream a message into PostgreSQL while DATA is still arriving.
 *
 * At DATA one messages row is started with COPY FROM STDIN (text format, the row's layout
 * in sql.c): the body travels as hex bytea, piece by piece as it is read, through libpq's
 * small output buffer, and the size column comes last, once it is known. So a message of
 * any size costs the handler a constant amount of memory. The row names its accounts
 * (deliver_to) and its remote recipients (relay_to), and its insert trigger delivers it
 * and queues it (migrations/007): so when nothing else has to be stored with it, the COPY
 * is the whole transaction, and its end is the commit. A notice of unknown recipients
 * (deliver.c), or a server statement_timeout that must be off for the COPY, need more
 * statements: then an explicit transaction is opened first and smtp_deliver commits it
 * (with a statement_timeout the row is stored without recipients and delivered by a
 * statement after the COPY, under the operator's timeout again: SQL_DELIVER_LATER).
 * Either way nothing is visible to anyone until the commit: a message that fails (size,
 * loop, disconnect, no recipient could take it, database)
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
 * array literal "{1,2}" in a malloc'd string; NULL when there are none or out of memory. */
static char *array_literal(const struct smtp_tx *tx)
{
    if (tx->naccounts == 0)
        return NULL;
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

/* text_array: a text[] literal (db_text_array) of the addresses of the transaction's recipients:
 * with names, the one that named each account (in the order of accounts); else the remote
 * ones. A malloc'd string; NULL when there are none or out of memory. */
static char *text_array(const struct smtp_tx *tx, int names)
{
    size_t n = names ? tx->naccounts : tx->nremote, k = 0;
    const char **elems = n ? malloc(n * sizeof *elems) : NULL;
    if (!elems)
        return NULL;
    if (names)
        for (; k < n; k++)
            elems[k] = tx->rcpts[tx->named_by[k]].addr;
    else
        for (size_t i = 0; i < tx->nrcpts; i++)
            if (tx->rcpts[i].remote)
                elems[k++] = tx->rcpts[i].addr;
    size_t cap = k * (2 * LIM_PATH + 3) + 3;
    char *out = malloc(cap);
    if (out && db_text_array(out, cap, elems, k) == 0) {
        free(out);
        out = NULL;
    }
    free(elems);
    return out;
}

/* release: the recipient lists are needed until the delivery statement has run. */
static void release(struct smtp_store *st)
{
    free(st->accounts);
    free(st->names);
    free(st->relay);
    st->accounts = st->names = st->relay = NULL;
}

enum db_status smtp_store_begin(struct smtp_session *s, struct smtp_store *st, int head_last)
{
    memset(st, 0, sizeof *st);
    if (!s->tx.message_id[0])
        return DB_TEMP; /* no lookup drew one: cannot happen with a recipient to store for */
    st->accounts = array_literal(&s->tx);
    st->names = text_array(&s->tx, 1);
    st->relay = text_array(&s->tx, 0);
    st->count = s->tx.naccounts;
    if ((s->tx.naccounts && (!st->accounts || !st->names)) || (s->tx.nremote && !st->relay)) {
        release(st);
        return DB_TEMP;
    }
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
        r = db_copy_begin(&s->db, smtp_sql(head_last ? SQL_COPY_HEAD_LAST : SQL_COPY_MESSAGE));
    if (r != DB_OK) {
        smtp_store_abort(s, st);
        return r == DB_NOTFOUND ? DB_TEMP : r;
    }
    st->open = 1;
    /* Without recipients (all NULL) when SQL_DELIVER_LATER delivers the row. The head
     * holds a path, the session id and the lists, each escaped at most twice over. */
    int later = st->timeout_off;
    struct smtp_sql_row row = {
        .id = s->tx.message_id,
        .sender = s->tx.sender,
        .session = s->peer.session,
        .deliver_to = later ? NULL : st->accounts,
        .deliver_names = later ? NULL : st->names,
        .relay_to = later ? NULL : st->relay,
        .submitted_by = later || !s->auth_id[0] ? NULL : s->auth_id,
    };
    size_t cap = 2 * LIM_PATH + 256 + (st->accounts ? strlen(st->accounts) : 0) +
                 2 * (st->names ? strlen(st->names) : 0) + 2 * (st->relay ? strlen(st->relay) : 0);
    char *head = malloc(cap);
    size_t n = head ? smtp_sql_copy_head(head, cap, &row) : 0;
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

enum db_status smtp_store_head_start(struct smtp_session *s, struct smtp_store *st)
{
    (void)st;
    char sep[8];
    size_t n = smtp_sql_copy_next_bytea(sep, sizeof sep);
    return n ? db_copy_put(&s->db, sep, n) : DB_TEMP;
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
        const char *vals[1] = {st->saved_timeout};
        e = db_exec(&s->db, smtp_sql(SQL_SET_STATEMENT_TIMEOUT), 1, vals, NULL, NULL, NULL);
        if (e == DB_OK) {
            const char *later[5] = {s->tx.message_id, st->accounts, st->relay,
                                    s->auth_id[0] ? s->auth_id : NULL, st->names};
            e = db_exec(&s->db, smtp_sql(SQL_DELIVER_LATER), 5, later, NULL, NULL, NULL);
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
