/*
 * find.h - the lookups that several pgmailctl commands share: a domain or an account by its
 * name (optionally locking its row), and a listing scoped to one domain. They live here, below
 * the command files, so that no command file calls another (admin.h draws the tree).
 */
#ifndef PGMAIL_ADMIN_FIND_H
#define PGMAIL_ADMIN_FIND_H

#include <stddef.h>

#include "check.h"
#include "db.h"
#include "sql.h"

/* admin_domain_find: the id (decimal) of local domain name, which must be valid and
 * lower-case. With lock, the domain row is locked FOR UPDATE (inside a transaction), which
 * serialises every change to the domain's accounts and aliases. Returns ADMIN_EXIT_OK, or
 * ADMIN_EXIT_FAIL after reporting "unknown domain ..." or the database error. */
int admin_domain_find(struct db *db, const char *name, int lock, char *id, size_t idlen);

/* admin_account_find: the id (decimal) of the account with address a (locked FOR UPDATE with
 * lock, inside a transaction). Returns ADMIN_EXIT_OK, or ADMIN_EXIT_FAIL after reporting
 * "unknown user ..." or the database error. */
int admin_account_find(struct db *db, const struct admin_address *a, int lock, char *id,
                       size_t idlen);

/* admin_domain_scoped_list: run listing stmt ($1 = a domain id, or NULL for every domain)
 * for the domain named by argv[0], or for all domains when argc is 0. Returns an ADMIN_EXIT
 * code; an invalid or unknown domain is reported. */
int admin_domain_scoped_list(struct db *db, enum admin_stmt stmt, int argc, char **argv);

#endif
