#!/bin/sh
# postgres-entrypoint.sh - PID 1 of the pgmail-postgres image (deploy/Containerfile.postgres).
#
# 1. The first time (an empty $PGDATA): initdb, with UTF-8 and the C.UTF-8 locale, local
#    peer authentication for "postgres" and SCRAM passwords for role pgmail on the Unix
#    socket; nothing over TCP. Then role pgmail and database pgmail, owned by it (the schema
#    is made by `pgmailctl migrate` from the pgmail container, as that role).
# 2. Every start: the password of role pgmail is set from /etc/pgmail/pgpass (or the file
#    named by PGMAIL_PGPASS), a libpq password file as the pgmail container gets it: the
#    password is the fifth field of its first line that is not a comment. Changing the secret
#    and restarting both containers changes the password.
# 3. exec postgres as user postgres, listening only on /run/postgresql/.s.PGSQL.5432, with
#    max_connections 125 (pgmail's connection budget: units/pgmail-smtp.socket).
# The data directory's major version must be the one installed (Debian 12: 15); an upgrade
# of the major version is a dump and restore (deploy/README.md).
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
pgpass=${PGMAIL_PGPASS:-/etc/pgmail/pgpass}
# shellcheck disable=SC2012 # version directories: digits only
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
major=$(basename "$(dirname "$bin")")
say() { echo "pgmail-postgres: $*" >&2; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

install -d -o postgres -g postgres -m 2775 /run/postgresql
install -d -o postgres -g postgres -m 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    say "initialising a PostgreSQL $major cluster in $PGDATA"
    as_pg "$bin/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=reject >/dev/null
    cat >"$PGDATA/pg_hba.conf" <<'HBA'
# pgmail-postgres: the Unix socket only. Administration as postgres from inside this
# container (podman exec -u postgres ... psql); pgmail (handlers and pgmailctl) with the
# password from the pgpass credential.
local   all      postgres                 peer
local   pgmail   pgmail                   scram-sha-256
HBA
else
    have=$(cat "$PGDATA/PG_VERSION")
    if [ "$have" != "$major" ]; then
        say "$PGDATA holds a PostgreSQL $have cluster, this image has PostgreSQL $major:"
        say "dump it with the old image and restore it into a new volume (deploy/README.md)"
        exit 1
    fi
fi

# The password: fields 1-4 of a pgpass line may contain "\:", so take what follows the
# fourth unescaped colon, then undo the escapes.
password=
if [ -r "$pgpass" ]; then
    password=$(grep -v '^[[:space:]]*#' "$pgpass" | grep -m 1 . |
        sed -e 's/\\\\/\x01/g' -e 's/\\:/\x02/g' -e 's/^\([^:]*:\)\{4\}//' \
            -e 's/\x02/:/g' -e 's/\x01/\\/g') || true
fi
[ -n "$password" ] ||
    say "no password in $pgpass: role pgmail cannot log in until one is given (deploy/README.md)"

# A private socket directory while setting up, so that no client connects meanwhile.
setup=$(mktemp -d)
chown postgres "$setup"
as_pg "$bin/pg_ctl" -D "$PGDATA" -w -t 60 -l "$setup/log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$setup'" start >/dev/null ||
    { cat "$setup/log" >&2; exit 1; }
# psql's \getenv keeps the password out of every command line.
export PGMAIL_DB_PASSWORD="$password"
as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$setup" -U postgres -d postgres <<'SQL'
\getenv pw PGMAIL_DB_PASSWORD
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgmail') AS need_role \gset
\if :need_role
CREATE ROLE pgmail LOGIN;
\endif
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pgmail') AS need_db \gset
\if :need_db
CREATE DATABASE pgmail OWNER pgmail;
\endif
SELECT :'pw' <> '' AS have_pw \gset
\if :have_pw
ALTER ROLE pgmail PASSWORD :'pw';
\else
ALTER ROLE pgmail PASSWORD NULL;
\endif
SQL
as_pg "$bin/pg_ctl" -D "$PGDATA" -w -m fast stop >/dev/null
rm -rf "$setup"
unset password PGMAIL_DB_PASSWORD

say "PostgreSQL $major on /run/postgresql"
# max_connections 125: pgmail's connection budget (units/pgmail-smtp.socket): the sockets'
# 80 sessions and the relay's 21 backends, with room for pgmailctl and backups.
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    "$bin/postgres" -D "$PGDATA" -c listen_addresses= -c unix_socket_directories=/run/postgresql \
    -c max_connections=125
