/*
 * sql.h - the statements of pgmail-smtpd (all of its SQL lives in sql.c).
 */
#ifndef PGMAIL_SMTP_SQL_H
#define PGMAIL_SMTP_SQL_H

enum smtp_sql_id {
    SQL_BEGIN,
    SQL_COMMIT,
    SQL_ROLLBACK,
    SQL_SENDER_OWNED, /* $1 account id, $2 address (lower) -> a row when it is theirs */
    SQL_RCPT_LOOKUP,  /* $1 address, $2 domain (lower), $3 new id? -> domain, account, quota,
                         timeout, message id */
    SQL_POSTMASTER,   /* $1 our hostname -> the local domain for a bare "postmaster" */
    SQL_NO_STATEMENT_TIMEOUT,  /* -> the setting it replaces (see sql.c) */
    SQL_SET_STATEMENT_TIMEOUT, /* $1 the setting to restore */
    SQL_COPY_MESSAGE,          /* COPY of one messages row and its delivery (store.c) */
    SQL_DELIVER_LATER,         /* $1 message id, $2 accounts[]: deliver a row stored without */
    SQL_DELIVER_BOUNCE         /* $1 account, $2 size, $3 session, $4 body -> message id */
};

/* smtp_sql: the text of a statement. */
const char *smtp_sql(enum smtp_sql_id id);

#endif
