/*
 * fail.h - pgmailctl's exit codes and its one way of reporting a failure, at the bottom of the
 * admin files' tree (admin.h draws it): every other admin file may call this one, it calls
 * none of them.
 */
#ifndef PGMAIL_ADMIN_FAIL_H
#define PGMAIL_ADMIN_FAIL_H

enum admin_exit {
    ADMIN_EXIT_OK = 0,    /* done */
    ADMIN_EXIT_FAIL = 1,  /* the command failed (or found problems); stderr says why */
    ADMIN_EXIT_USAGE = 2, /* bad usage or bad configuration */
};

/* admin_fail: print "pgmailctl: " and the formatted text as one line on stderr.
 * Returns ADMIN_EXIT_FAIL, so that callers can write `return admin_fail(...)`. */
int admin_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
