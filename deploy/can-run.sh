#!/bin/sh
# can-run.sh - can `make test-system` (and `make image`) run on this machine?
#
# Exits 0 and says so when podman works here, or is missing but can be installed with
# apt-get (deploy/image.sh installs it). Otherwise prints why and exits 1, so that .ci/run can
# skip the system test and say so:
#     if sh deploy/can-run.sh; then make test-system; else echo "test-system: SKIPPED"; fi
# It changes nothing on the machine: no packages are installed, nothing is left behind.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
no() {
    echo "can-run: no: $*"
    exit 1
}

[ "$(uname -s)" = Linux ] || no "not Linux"
[ "$(id -u)" -eq 0 ] || no "needs root (rootful podman with systemd inside, debootstrap)"
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    grep -q '^URIs:' /etc/apt/sources.list.d/debian.sources ||
        no "no URIs: line in /etc/apt/sources.list.d/debian.sources (the mirror for debootstrap)"
elif ! grep -qs '^deb ' /etc/apt/sources.list; then
    no "no Debian mirror configured in apt (debootstrap needs one)"
fi
# systemd in the container gives each handler a user namespace (PrivateUsers=yes).
n=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)
[ "$n" -gt 0 ] || no "user namespaces are disabled (user.max_user_namespaces = $n)"
grep -q cgroup /proc/filesystems || no "no cgroup file system"

missing=
for p in podman debootstrap runc; do
    command -v "$p" >/dev/null 2>&1 && continue
    command -v apt-get >/dev/null 2>&1 || no "$p is missing and there is no apt-get"
    apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]' ||
        no "$p is missing and apt has no candidate for it (apt-get update?)"
    missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "can-run: yes:$missing not installed yet, but installable with apt-get"
    exit 0
fi

out=$(podman info --format '{{.Host.OCIRuntime.Name}} cgroups {{.Host.CgroupsVersion}}' 2>&1) ||
    no "podman info fails: $(printf '%s' "$out" | tail -n 1)"

# A real container, without any image: a root file system holding only true(1) and the
# libraries it needs. This is where a wrong runtime or cgroup setup shows.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
true_bin=/bin/true
mkdir -p "$tmp/rootfs/bin"
cp "$true_bin" "$tmp/rootfs/bin/true"
for lib in $(ldd "$true_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$tmp/rootfs$(dirname "$lib")"
    cp "$lib" "$tmp/rootfs$lib"
done
err=$(podman run --rm --network=none --rootfs "$tmp/rootfs" /bin/true 2>&1) ||
    no "podman cannot run a container here: $(printf '%s' "$err" | tail -n 1)"
echo "can-run: yes: podman $(podman --version | awk '{print $3}') works here ($out)"
exit 0
