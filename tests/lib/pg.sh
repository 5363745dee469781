#!/bin/sh
# pg.sh start DIR | stop DIR | env DIR
#
# A private PostgreSQL cluster under DIR (data in DIR/data, socket in DIR), listening on a
# Unix socket only, so that it can never clash with a system cluster or another run.
#   start  initdb (once) and start; prints nothing but errors
#   stop   fast shutdown; leaves DIR for inspection (rm -rf it to clean up)
#   env    prints PGHOST=... PGDATABASE=... for `eval`
# initdb refuses to run as root: as root the cluster belongs to the "postgres" system user
# (made by Debian's postgresql package), which needs to reach DIR.
set -eu
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "pg.sh: no PostgreSQL server found (make deps installs it)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        # every directory above DIR must be searchable by postgres
        d=$dir
        while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bindir/initdb" -D "$dir/data" -A trust -E UTF8 --locale=C.UTF-8 \
            -U postgres >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=200 -c fsync=on" \
        start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    ;;
stop)
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
env)
    echo "PGHOST=$dir PGUSER=postgres PGDATABASE=postgres"
    ;;
*)
    echo "usage: pg.sh start|stop|env DIR" >&2
    exit 2
    ;;
esac
