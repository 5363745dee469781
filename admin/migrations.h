/*
 * migrations.h - the schema migrations compiled into pgmailctl (generated from migrations/).
 */
#ifndef PGMAIL_MIGRATIONS_H
#define PGMAIL_MIGRATIONS_H

struct admin_migration {
    const char *name; /* file name, e.g. "001_initial.sql"; its number is the version */
    const char *sql;  /* the whole file */
};

/* In name order, ended by {NULL, NULL}. */
extern const struct admin_migration admin_migrations[];

#endif
