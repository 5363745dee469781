/*
 * main.c - pgmail-pop3d: one POP3 session (RFC 1939) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; it never
 * listens, accepts or forks. The session itself is in session.c.
 */
#include "pop3d.h"
#include "handler.h"

int main(int argc, char **argv)
{
    int usage = handler_args(argc, argv, "pgmail-pop3d", "POP3", "README.md");
    return usage ? usage : pop3_serve();
}
