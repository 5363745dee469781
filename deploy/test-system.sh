#!/bin/sh
# test-system.sh - `make test-system`: pgmail as users deploy it, tested end to end.
#
# Builds the Debian package (`make deb`, lintian clean) and, for the upgrade check, the
# previous build (PGMAIL_DEB_PREV_REV's tree, default 2ba57c7, with this debian/ and the
# version VERSION~prev); builds the images from the package (deploy/image.sh, under tags of
# this run); starts the database
# container and the pgmail container (systemd as PID 1, the five socket units enabled), and
# runs deploy/system_test.py: real clients from this host over 127.0.0.1 through real
# systemd socket activation (a unit and a cgroup per connection, REMOTE_ADDR, DynamicUser,
# the hardening, LoadCredential, MaxConnectionsPerSource, the trigger limit), the journal's
# structured fields, TLS, and replacing both containers without losing mail; then the
# package on a Debian 12 system with systemd and without pgmail (the image's first stage):
# apt install, configure, migrate, enable, mail; apt purge; the previous build upgraded to
# this one with mail in its database (system_test.py's check_package). Then removes
# every container, volume, secret and image it made (the cached debootstrap base, and image
# layers that existed before, stay). Ends with "N passed, N failed".
#
# Ports: the pgmail container uses the host's network, as in production (systemd must see
# the clients' real addresses for MaxConnectionsPerSource and loopback rules), so its sockets
# bind the host's ports. The test moves them with a drop-in per socket (ListenStream= only)
# to 127.0.0.1 and PGMAIL_TEST_PORT_BASE + 25, 587, 465, 110, 995 (default 20025, 20587,
# 20465, 20110, 20995): a host may run its own MTA on port 25, and a test must not open an
# SMTP server with known passwords on every interface of the host. It stops at once, naming
# the port, if one of them is taken.
#
# Needs root; installs podman, debootstrap, runc, python3, openssl, curl when missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
BASE_PORT=${PGMAIL_TEST_PORT_BASE:-20000}
name=pgmail-test-$$
image=localhost/pgmail:$name
db_image=localhost/pgmail-postgres:$name
system_image=localhost/pgmail-system:$name
# The previous build of the package, for the upgrade check: this commit's tree (main before
# the package existed: migrations 001-008) with today's debian/ and a lower version.
PREV_REV=${PGMAIL_DEB_PREV_REV:-2ba57c7}

early_fail() {
    echo "test-system: FAIL $*"
    echo "0 passed, 1 failed"
    exit 1
}
[ "$(id -u)" -eq 0 ] || early_fail "needs root (rootful podman with systemd inside, debootstrap)"
sh "$top/tests/lib/deps.sh" podman debootstrap runc python3 openssl curl iproute2 >/dev/null ||
    early_fail "could not install podman debootstrap runc python3 openssl curl iproute2"
why=$(sh "$here/can-run.sh") || early_fail "${why#can-run: }"

for p in 25 587 465 110 995; do
    port=$((BASE_PORT + p))
    if [ -n "$(ss -Hltn "sport = :$port")" ]; then
        early_fail "port $port (for $p) is taken on this host: $(ss -Hltnp "sport = :$port" |
            head -n 1 | tr -s ' ') - choose other ports with PGMAIL_TEST_PORT_BASE=N"
    fi
done

W=$(mktemp -d /var/tmp/pgmail-test-system.XXXXXX)
images_before=$W/images-before
podman images -a -q --no-trunc | sort -u >"$images_before"
cleanup_done=
cleanup() {
    [ -n "$cleanup_done" ] && return
    cleanup_done=1
    set +e
    podman rm -f -t 3 "$name-mail" "$name-db" "$name-deb" >/dev/null 2>&1
    podman volume rm -f "$name-data" "$name-run" >/dev/null 2>&1
    podman secret rm "$name-pgpass" >/dev/null 2>&1
    podman rmi -f "$image" "$db_image" "$system_image" >/dev/null 2>&1
    # Image layers this run built and nobody tagged (the build stage, intermediate steps):
    # only those that did not exist before it.
    for _ in 1 2 3; do
        new=$(podman images -a -q --no-trunc --filter dangling=true | sort -u |
            comm -13 "$images_before" -)
        [ -z "$new" ] && break
        # shellcheck disable=SC2086 # a list of image ids
        podman rmi $new >/dev/null 2>&1
    done
    left_behind=$(
        podman ps -a --format '{{.Names}}' | grep -c "^$name-"
        podman volume ls --format '{{.Name}}' | grep -c "^$name-"
        podman secret ls --format '{{.Name}}' | grep -c "^$name-"
        # the base image (localhost/pgmail-base) is a cache that stays, like the tarball
        podman images -a -q --no-trunc | sort -u | comm -13 "$images_before" - |
            grep -v -x -F "$(podman images -q --no-trunc --filter reference=localhost/pgmail-base)" |
            grep -c .
    )
    rm -rf "$W"
}
left_behind="? ? ? ?"
trap cleanup EXIT
trap 'exit 1' INT TERM

t0=$(date +%s)
passed=0
failed=0
build_ok=1
# The package (make deb: dpkg-buildpackage, then lintian, which must find no error and no
# warning), and the previous build from PREV_REV's tree.
echo "test-system: building the Debian packages (make deb, and $PREV_REV's tree as the previous build)"
deb=$(make -C "$top" --no-print-directory deb 2>"$W/deb.log" | tail -n 1) || true
if [ -f "$deb" ]; then
    echo "PASS make deb: $(basename "$deb") in $(($(date +%s) - t0)) s, lintian: no errors, no warnings"
    passed=$((passed + 1))
else
    sed 's/^/  /' "$W/deb.log"
    echo "FAIL make deb (dpkg-buildpackage or lintian, see above)"
    failed=$((failed + 1))
    build_ok=0
fi
t=$(date +%s)
mkdir -p "$W/prev-src" "$W/prev"
deb_prev=
if git -C "$top" archive "$PREV_REV" | tar -C "$W/prev-src" -xf - &&
    cp -r "$top/debian" "$W/prev-src/" &&
    sed -i '1s/(\([^)]*\))/(\1~prev)/' "$W/prev-src/debian/changelog" &&
    deb_prev=$(PGMAIL_DEB_LINTIAN=no sh "$here/deb.sh" "$W/prev-src" "$W/prev" 2>"$W/deb-prev.log" |
        tail -n 1) && [ -f "$deb_prev" ]; then
    echo "PASS the previous build: $(basename "$deb_prev") from $PREV_REV in $(($(date +%s) - t)) s"
    passed=$((passed + 1))
else
    sed 's/^/  /' "$W/deb-prev.log" 2>/dev/null
    echo "FAIL the previous build of the package from $PREV_REV"
    failed=$((failed + 1))
    build_ok=0
fi

echo "test-system: building the images (deploy/image.sh)"
t1=$(date +%s)
if [ "$build_ok" -eq 1 ]; then
    PGMAIL_IMAGE=$image PGMAIL_DB_IMAGE=$db_image PGMAIL_SYSTEM_IMAGE=$system_image \
        PGMAIL_DEB=$deb sh "$here/image.sh" | sed 's/^/  /' || build_ok=0
fi
[ -n "$(podman images -q "$image")" ] && [ -n "$(podman images -q "$db_image")" ] &&
    [ -n "$(podman images -q "$system_image")" ] || build_ok=0
if [ "$build_ok" -eq 1 ]; then
    size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
    echo "PASS images built in $(($(date +%s) - t1)) s: pgmail $(size "$image"), postgres $(size "$db_image")"
    passed=$((passed + 1))
    python3 "$here/system_test.py" --work "$W" --name "$name" --image "$image" \
        --db-image "$db_image" --port-base "$BASE_PORT" --system-image "$system_image" \
        --deb "$deb" --deb-prev "$deb_prev" || true
    if [ -f "$W/result" ]; then
        read -r p f <"$W/result"
        passed=$((passed + p))
        failed=$((failed + f))
    else
        echo "FAIL system_test.py ended without a result"
        failed=$((failed + 1))
    fi
else
    echo "FAIL image build (see above)"
    failed=$((failed + 1))
fi

cleanup
# shellcheck disable=SC2086 # four counts
set -- $left_behind
if [ "$#" -eq 4 ] && [ "$1$2$3$4" = 0000 ]; then
    echo "PASS cleanup: no container, volume, secret or image of this run is left"
    passed=$((passed + 1))
else
    echo "FAIL cleanup: left behind: ${1:-?} containers, ${2:-?} volumes, ${3:-?} secrets, ${4:-?} images"
    failed=$((failed + 1))
fi
echo "test-system: $(($(date +%s) - t0)) s in all"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
