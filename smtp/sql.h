/*
 * sql.h - the statements of pgmail-smtpd (all of its SQL lives in sql.c), and the one row
 * of COPY that carries a message.
 */
#ifndef PGMAIL_SMTP_SQL_H
#define PGMAIL_SMTP_SQL_H

#include <stddef.h>

enum smtp_sql_id {
    SQL_BEGIN,
    SQL_COMMIT,
    SQL_ROLLBACK,
    SQL_SENDER_OWNED,          /* $1 account id, $2 address (lower) -> a row when it is theirs */
    SQL_RCPT_LOOKUP,           /* $1 address, $2 domain (lower), $3 new id?, $4 sender account, $5
                                  outbound default -> domain, account, quota, used (the lookup),
                                  timeout, message id, notice room, outbound room (see sql.c) */
    SQL_POSTMASTER,            /* $1 our hostname -> the local domain for a bare "postmaster" */
    SQL_NO_STATEMENT_TIMEOUT,  /* -> the setting it replaces (see sql.c) */
    SQL_SET_STATEMENT_TIMEOUT, /* $1 the setting to restore */
    SQL_COPY_MESSAGE,          /* COPY of one messages row and its delivery (store.c) */
    SQL_COPY_HEAD_LAST,        /* the same, with the header section after the body */
    SQL_DELIVER_LATER,         /* $1 message id, $2 accounts[], $3 relay_to[], $4 submitted_by,
                                  $5 deliver_names[]: deliver a row stored without */
    SQL_DELIVER_NOTICE         /* $1 account, $2 session, $3 body (binary) -> message id */
};

/* smtp_sql: the text of a statement. */
const char *smtp_sql(enum smtp_sql_id id);

/* The columns of SQL_COPY_MESSAGE before the body; NULL stands for SQL NULL. The arrays
 * are PostgreSQL array literals (db_text_array for the text ones); a row that
 * SQL_DELIVER_LATER delivers has all four NULL. */
struct smtp_sql_row {
    const char *id, *sender, *session;
    const char *deliver_to;    /* bigint[]: "{1,2}" */
    const char *deliver_names; /* text[]: the address that named each of those accounts */
    const char *relay_to;      /* text[]: the remote recipients, as given */
    const char *submitted_by;  /* the authenticated account's id */
};

/* The row of SQL_COPY_MESSAGE in COPY text format, in three parts: the head (every column
 * before the body, and the start of the body's bytea hex), the body's octets as hex, and
 * the tail (the size, known only at the end, and the row's end).
 * smtp_sql_copy_head: row into out (cap octets). Returns the length, 0 when it does not
 * fit.
 * smtp_sql_copy_body: n octets of p as 2 * n hex digits into out. Returns 2 * n.
 * smtp_sql_copy_tail: into out (cap octets). Returns the length, 0 when it does not fit. */
size_t smtp_sql_copy_head(char *out, size_t cap, const struct smtp_sql_row *row);
size_t smtp_sql_copy_body(char *out, const char *p, size_t n);
size_t smtp_sql_copy_tail(char *out, size_t cap, long long size);
/* smtp_sql_copy_next_bytea: the end of the body's column and the start of the head's (for
 * SQL_COPY_HEAD_LAST), into out. Returns the length, 0 when it does not fit. */
size_t smtp_sql_copy_next_bytea(char *out, size_t cap);

#endif
