/*
 * main.c - pgmail-pop3d: one POP3 session (RFC 1939) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; it never
 * listens, accepts or forks. The session itself is in session.c.
 */
#include "pop3d.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr,
                "%s\nusage: pgmail-pop3d  (one POP3 session on stdin/stdout; see "
                "README.md)\n",
                strcmp(argv[1], "--help") == 0 ? "pgmail-pop3d: the pgmail POP3 handler"
                                               : "pgmail-pop3d: no arguments expected");
        return 2;
    }
    return pop3_serve();
}
