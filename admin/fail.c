/*
 * fail.c - the one-line failure report of pgmailctl (see fail.h).
 */
#include "fail.h"

#include <stdarg.h>
#include <stdio.h>

int admin_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pgmailctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return ADMIN_EXIT_FAIL;
}
