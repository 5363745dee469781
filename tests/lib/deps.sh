#!/bin/sh
# deps.sh PACKAGE... - install the Debian packages that are missing, with apt-get.
# Quiet when everything is there already; needs root (or sudo) otherwise.
# The lists are the Makefile's (DEPS, DEB_DEPS); the milter tests' packages (rspamd opendkim
# opendkim-tools opendmarc python3-dkim) are in DEPS. Their Debian services start on
# installation (the tests run private instances on free ports beside them).
set -eu
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps it lean; the postgresql package must not start a system
# cluster for us either way: pgmail's demo and tests run their own under the repository.
$SUDO apt-get install -y -qq --no-install-recommends $missing
