#!/bin/sh
# deb.sh [SOURCE [OUTDIR]] - `make deb`: the Debian package pgmail_VERSION_ARCH.deb, built with
# Debian's own tools (debian/, debhelper compat 13, dpkg-buildpackage -us -uc -b) from a
# copy of SOURCE (default: this tree, with its uncommitted changes), written to OUTDIR
# (default: the top of this tree). Then lintian, which must report no error and no warning.
#
# The copy keeps the build out of the tree and dpkg-buildpackage's products (it writes them
# to the parent directory) out of everyone's way. The build dependencies are debian/control's
# Build-Depends; `make deb` installs them (DEB_DEPS in the Makefile) before calling this.
# PGMAIL_DEB_LINTIAN=no skips lintian (deploy/test-system.sh's older build for the upgrade
# test). Prints the path of the package on its last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/..}" && pwd)
out=$(mkdir -p "${2:-$src}" && cd "${2:-$src}" && pwd)
say() { echo "deb: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
[ -f "$src/debian/control" ] || die "$src/debian/control: no debian/ folder there"
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
deb=pgmail_${version}_$arch.deb
t0=$(date +%s)

work=$(mktemp -d /var/tmp/pgmail-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree=$work/pgmail-$version
mkdir "$tree"
# The files git knows or would add (a git work tree), else everything but build products.
if git -C "$src" rev-parse --show-toplevel 2>/dev/null | grep -qx "$src"; then
    # shellcheck disable=SC2016 # "$f" belongs to the inner shell (files deleted but not yet
    # committed are left out)
    git -C "$src" ls-files -z -c -o --exclude-standard |
        (cd "$src" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
        tar -C "$src" --null -T - -cf - | tar -C "$tree" -xf -
else
    tar -C "$src" --exclude=./.git --exclude=./.run --exclude=./build --exclude=./build-san \
        --exclude=./build-fuzz --exclude='*.deb' -cf - . | tar -C "$tree" -xf -
fi

say "dpkg-buildpackage -us -uc -b in $tree"
jobs=$(nproc 2>/dev/null || echo 1)
(cd "$tree" && DEB_BUILD_OPTIONS="noddebs parallel=$jobs" dpkg-buildpackage -us -uc -b) \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "dpkg-buildpackage failed"; }
[ -f "$work/$deb" ] || die "dpkg-buildpackage made no $deb"
mv "$work/$deb" "$out/$deb"
t1=$(date +%s)
say "built $deb in $((t1 - t0)) s"

if [ "${PGMAIL_DEB_LINTIAN:-yes}" != no ]; then
    # --fail-on: errors and warnings fail; info and pedantic tags are shown, not fatal.
    lintian --fail-on error,warning --info "$out/$deb" >&2 || die "lintian found errors or warnings in $deb"
    say "lintian: no errors, no warnings ($(($(date +%s) - t1)) s)"
fi
echo "$out/$deb"
