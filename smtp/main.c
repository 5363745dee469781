/*
 * main.c - pgmail-smtpd: one SMTP session (RFC 5321) on fd 0/1, then exit.
 *
 * Started per connection by systemd (Accept=yes) or any inetd-style spawner; it never
 * listens, accepts or forks. The session itself is in session.c.
 */
#include "smtpd.h"
#include "handler.h"

int main(int argc, char **argv)
{
    int usage = handler_args(argc, argv, "pgmail-smtpd", "SMTP", "pgmail-smtpd(8) and README.md");
    return usage ? usage : smtp_serve();
}
