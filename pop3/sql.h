/*
 * sql.h - the statements of pgmail-pop3d (all of its SQL lives in sql.c).
 */
#ifndef PGMAIL_POP3_SQL_H
#define PGMAIL_POP3_SQL_H

enum pop3_sql_id {
    SQL_BEGIN,
    SQL_COMMIT,
    SQL_ROLLBACK,
    SQL_OPEN,          /* $1 account -> locked ('t': this session now holds the mailbox),
                          message count, octets, highest mailbox id; no row: account gone */
    SQL_LIST,          /* $1 account, $2 after id, $3 up to id, $4 rows -> id, size */
    SQL_CHUNK,         /* $1 mailbox id, $2 account, $3 offset (1-based), $4 length -> bytes */
    SQL_DELETE,        /* $1 account, $2 mailbox ids[] -> message ids of removed rows */
    SQL_LOCK_MESSAGES, /* $1 message ids[] -> locks them (see sql.c) */
    SQL_DELETE_ORPHANS /* $1 message ids[] -> removes those no mailbox row points at */
};

/* pop3_sql: the text of a statement. */
const char *pop3_sql(enum pop3_sql_id id);

#endif
