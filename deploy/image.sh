#!/bin/sh
# image.sh - `make image`: the pgmail container images, from Debian packages only.
#
#   localhost/pgmail:latest           systemd as PID 1, pgmail installed from its Debian
#                                     package (`make deb`, built here unless PGMAIL_DEB names one),
#                                     the five socket units and pgmail-relay.service
#                                     enabled (deploy/Containerfile)
#   localhost/pgmail-postgres:latest  Debian's PostgreSQL for it (deploy/Containerfile.postgres)
#
# No registry is used. The base image is a Debian minbase made with debootstrap from the
# mirror this host's apt uses (read from /etc/apt/sources.list.d/debian.sources at run time),
# imported with `podman import` as localhost/pgmail-base:SUITE. The root file system is kept
# as a tarball in $PGMAIL_IMAGE_CACHE (default /var/tmp/pgmail-image-cache) for
# $PGMAIL_BASE_MAX_AGE days (default 7; 0 rebuilds it), so that a rebuild takes seconds, not
# minutes, while security updates still come in weekly; a machine without the cache builds
# it from scratch. pgmail is not compiled inside the image: it installs the Debian package
# built from this working tree, the same install path as on a host.
#
# Installs podman, debootstrap and runc with apt-get when they are missing; needs root.
# Settings (environment): PGMAIL_IMAGE, PGMAIL_DB_IMAGE (names to build), PGMAIL_SUITE
# (bookworm), PGMAIL_MIRROR (instead of the host's), PGMAIL_IMAGE_CACHE,
# PGMAIL_BASE_MAX_AGE, PGMAIL_IMAGE_LAYERS (no: keep no intermediate images; for tests),
# PGMAIL_DEB (a package already built), PGMAIL_SYSTEM_IMAGE (also tag the stage without
# pgmail under this name).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
IMAGE=${PGMAIL_IMAGE:-localhost/pgmail:latest}
DB_IMAGE=${PGMAIL_DB_IMAGE:-localhost/pgmail-postgres:latest}
SUITE=${PGMAIL_SUITE:-bookworm}
CACHE=${PGMAIL_IMAGE_CACHE:-/var/tmp/pgmail-image-cache}
MAX_AGE=${PGMAIL_BASE_MAX_AGE:-7}
LAYERS=${PGMAIL_IMAGE_LAYERS:-yes}
BASE=localhost/pgmail-base:$SUITE
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

say() { echo "image: $*"; }
die() {
    echo "image: ERROR: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and podman with systemd inside)"
t0=$(date +%s)

# --- Tools.
missing=
for p in podman debootstrap runc; do
    command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    sh "$top/tests/lib/deps.sh" podman debootstrap runc ||
        die "could not install$missing with apt-get"
fi

# --- The mirror, as this host's apt has it: never a host name written into the repository.
mirror=${PGMAIL_MIRROR:-}
sources=/etc/apt/sources.list.d/debian.sources
if [ -z "$mirror" ] && [ -r "$sources" ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' "$sources")
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++)
        if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror in $sources or /etc/apt/sources.list (set PGMAIL_MIRROR)"

# --- The base root file system (cached) and the base image.
mkdir -p "$CACHE"
chmod 0700 "$CACHE"
tarball=$CACHE/base-$SUITE.tar
if [ -f "$tarball" ] && [ "$MAX_AGE" -gt 0 ] &&
    [ -z "$(find "$tarball" -mtime +"$((MAX_AGE - 1))" 2>/dev/null)" ]; then
    say "base: cached $tarball ($(date -r "$tarball" '+%F %R'))"
else
    say "base: debootstrap --variant=minbase $SUITE from $mirror (a minute or two)"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    # apt inside the image uses the same sources as this host (updates and security too,
    # where the host has them), and installs no recommends, docs, man pages or translations
    # (copyright files stay).
    if [ -r "$sources" ] && [ -z "${PGMAIL_MIRROR:-}" ]; then
        sed "s/\bbookworm\b/$SUITE/" "$sources" >"$rootfs/etc/apt/sources.list.d/debian.sources"
        rm -f "$rootfs/etc/apt/sources.list"
    fi
    cat >"$rootfs/etc/apt/apt.conf.d/90pgmail" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90pgmail" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/usr/share/doc/*/changelog* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    : >"$rootfs/etc/machine-id"     # systemd makes a fresh one at each container start
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
fi
stamp=$(stat -c %Y "$tarball")
if [ "$(podman image inspect --format '{{index .Labels "org.pgmail.base"}}' "$BASE" 2>/dev/null)" \
    != "$stamp" ]; then
    say "base: podman import as $BASE"
    podman import --change "LABEL org.pgmail.base=$stamp" --change 'CMD ["/bin/bash"]' \
        "$tarball" "$BASE" >/dev/null 2>&1 || die "podman import of $tarball failed"
fi

# --- The package: the one install path (deploy/deb.sh, `make deb`), or PGMAIL_DEB.
deb=${PGMAIL_DEB:-}
if [ -z "$deb" ]; then
    say "building the Debian package (make deb)"
    deb=$(make -C "$top" --no-print-directory deb | tail -n 1) || die "make deb failed"
fi
[ -f "$deb" ] || die "no Debian package at '$deb'"
say "package: $(basename "$deb")"

# --- The build context: the package and the container's own files; no source.
ctx=$(mktemp -d /var/tmp/pgmail-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$deb" "$ctx/pgmail.deb"
cp -r "$here/container" "$here/postgres-entrypoint.sh" "$ctx/"

layers=true
[ "$LAYERS" = no ] && layers=false
build() { # build NAME CONTAINERFILE [PODMAN-BUILD-OPTION...]
    name=$1 file=$2
    shift 2
    log=$CACHE/build-$(basename "$file").log
    say "building $name"
    podman build --layers="$layers" --network=host --build-arg "BASE=$BASE" \
        --label "org.pgmail.revision=$rev" "$@" -f "$file" -t "$name" "$ctx" >"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "podman build of $1 failed (log: $log)"; }
}
rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$rev" != unknown ] && [ -n "$(git -C "$top" status --porcelain -- Makefile debian shared smtp \
    pop3 admin relay metrics migrations units deploy 2>/dev/null)" ]; then
    rev=$rev-dirty
fi
build "$IMAGE" "$here/Containerfile"
build "$DB_IMAGE" "$here/Containerfile.postgres"
# The Containerfile's first stage alone (from the layer cache): a Debian 12 system without
# pgmail, for test-system's install, upgrade and purge of the package.
[ -n "${PGMAIL_SYSTEM_IMAGE:-}" ] && build "$PGMAIL_SYSTEM_IMAGE" "$here/Containerfile" --target system

t1=$(date +%s)
size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
say "done in $((t1 - t0)) s (revision $rev):"
say "  $IMAGE  $(size "$IMAGE")"
say "  $DB_IMAGE  $(size "$DB_IMAGE")"
say "run them: deploy/README.md; move them to a host without a registry:"
say "  podman save -m $IMAGE $DB_IMAGE | gzip >pgmail-images.tar.gz"
