#!/bin/sh
# setup.sh - the last step of deploy/Containerfile: turn the installed pgmail into a
# container that boots systemd, listens on the five pgmail sockets and runs pgmail-relay.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

install -D -m 0755 "$here/container-env" /usr/lib/pgmail/container-env
install -D -m 0755 "$here/pgpass-private" /usr/lib/pgmail/pgpass-private
install -D -m 0755 "$here/pgbouncer-userlist" /usr/lib/pgmail/pgbouncer-userlist
install -m 0644 "$here/pgmail-container-env.service" /etc/systemd/system/

# Every pgmail service also reads the container's settings: first those from `podman run -e`
# (copied by container-env), then a mounted /etc/pgmail/environment, which wins. The units'
# own line is repeated here because a reset ("EnvironmentFile=") is the only way to put a
# file before it. And the program starts through pgpass-private, which gives libpq a copy of
# the pgpass credential that it accepts (see that file); ExecStart= is the unit's own, so the
# drop-in follows the units. The same for the five per-connection handlers and for
# pgmail-relay.service, the long-running sender of the outbound queue (Type=notify: the
# wrapper execs, so the relay keeps the main PID that systemd expects READY=1 from).
for unit in pgmail-smtp@ pgmail-submission@ pgmail-submissions@ pgmail-pop3@ pgmail-pop3s@ \
    pgmail-relay; do
    file=/usr/lib/systemd/system/$unit.service
    [ -f "$file" ] || { echo "setup.sh: $file is not installed (the pgmail package)" >&2; exit 1; }
    exec_start=$(sed -n 's/^ExecStart=//p' "$file")
    case $exec_start in
    /usr/sbin/pgmail-*) ;;
    *) echo "setup.sh: unexpected ExecStart=$exec_start in $file" >&2; exit 1 ;;
    esac
    [ -x "${exec_start%% *}" ] || { echo "setup.sh: ${exec_start%% *} is not installed" >&2; exit 1; }
    d=/etc/systemd/system/$unit.service.d
    install -d -m 0755 "$d"
    # The handlers reach PostgreSQL through PgBouncer (transaction pooling, its Unix socket);
    # the relay straight (its scheduler LISTENs). A PGMAIL_DATABASE given to the container
    # (-e, or /etc/pgmail/environment) wins over this: environment files do.
    pooled=""
    [ "$unit" = pgmail-relay ] || pooled="Environment=\"PGMAIL_DATABASE=host=/run/pgbouncer port=6432\""
    cat >"$d/container.conf" <<UNIT
# The pgmail container image (deploy/container/setup.sh): settings from the container's
# environment (pgmail-container-env.service), then /etc/pgmail/environment, which wins; the
# pgpass credential in a form libpq accepts (/usr/lib/pgmail/pgpass-private).
[Unit]
After=pgmail-container-env.service pgbouncer.service
Wants=pgbouncer.service

[Service]
$pooled
EnvironmentFile=
EnvironmentFile=-/run/pgmail/environment
EnvironmentFile=-/etc/pgmail/environment
ExecStart=
ExecStart=/usr/lib/pgmail/pgpass-private $exec_start
UNIT
done

# PgBouncer (Debian's package and unit) between the handlers and PostgreSQL: our settings
# (pgbouncer.ini: transaction pooling, a Unix socket in /run/pgbouncer, no TCP), the password
# from /etc/pgmail/pgpass at every start (pgbouncer-userlist, as root before the daemon).
install -m 0644 "$here/pgbouncer.ini" /etc/pgbouncer/pgbouncer.ini
install -d -m 0755 /etc/systemd/system/pgbouncer.service.d
cat >/etc/systemd/system/pgbouncer.service.d/pgmail.conf <<'UNIT'
# The pgmail container image (deploy/container/setup.sh): PgBouncer for the handlers.
[Unit]
After=pgmail-container-env.service

[Service]
RuntimeDirectory=pgbouncer
RuntimeDirectoryMode=0755
ExecStartPre=+/usr/lib/pgmail/pgbouncer-userlist
UNIT

# /etc/pgmail holds what the operator mounts: pgmail.conf, environment, pgpass, tls.crt,
# tls.key. The package put pgmail.conf there, every key commented out (a mounted /etc/pgmail
# hides it).
install -d -m 0755 /etc/pgmail

# What a container does not need, or cannot do.
systemctl mask systemd-logind.service getty.target console-getty.service \
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-hwdb-update.service systemd-modules-load.service systemd-remount-fs.service \
    systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true

systemctl enable pgmail-container-env.service pgbouncer.service pgmail-smtp.socket pgmail-submission.socket \
    pgmail-submissions.socket pgmail-pop3.socket pgmail-pop3s.socket pgmail-relay.service \
    pgmail-tls-ticket-keys.timer
systemctl set-default multi-user.target
