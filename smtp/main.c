/*
 * main.c - pgmail-smtpd: one SMTP session (RFC 5321) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; it never
 * listens, accepts or forks. The session itself is in session.c.
 */
#include "smtpd.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr,
                "%s\nusage: pgmail-smtpd  (one SMTP session on stdin/stdout; see "
                "pgmail-smtpd(8) and README.md)\n",
                strcmp(argv[1], "--help") == 0 ? "pgmail-smtpd: the pgmail SMTP handler"
                                               : "pgmail-smtpd: no arguments expected");
        return 2;
    }
    return smtp_serve();
}
