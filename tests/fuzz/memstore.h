/*
 * memstore.h - the fuzzers' in-memory PostgreSQL (see memstore.c).
 */
#ifndef PGMAIL_MEMSTORE_H
#define PGMAIL_MEMSTORE_H

/* memstore_reset: a new session; the fail-th statement will fail (0: none, 1: the
 * database cannot be reached). */
void memstore_reset(int fail);

#endif
