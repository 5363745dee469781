#!/bin/sh
# tests/units/verify.sh - static checks of the systemd units in units/.
#
# Works where PID 1 is not systemd and nothing is installed: the units are checked exactly as
# shipped, inside a throw-away root (systemd-analyze --root=) that holds
#   etc/systemd/system/       a copy of units/
#   usr/lib/systemd/system/   a copy of this host's units (sysinit.target, sockets.target, ...
#                             that every unit depends on)
#   usr/sbin/<program>        each ExecStart= program: the one built in the repo (e.g.
#                             smtp/pgmail-smtpd), or /bin/true as a stand-in when it is not
#                             built yet (said so in the output); verify only checks that it is
#                             an executable file.
# Checks, each failure printed with its reason:
#   1. `systemd-analyze verify` on every unit: its exit status, AND no output line naming a
#      pgmail unit (verify exits 0 on many warnings, e.g. an unknown key; those fail here).
#      Templates are verified as an instance ("@i"); a socket with Accept=yes is verified
#      together with its service template.
#   2. The block between the "shared block" markers is byte-identical in every service.
#   3. The sum of MaxConnections over all sockets fits PostgreSQL's connection budget:
#      max_connections (PG_MAX_CONNECTIONS, default 100) minus 3 superuser-reserved minus
#      PG_RESERVE (default 10) for pgmailctl, psql, backups and monitoring.
#   4. No unit puts a database password in the environment.
# It also reports `systemd-analyze security --offline=true` exposure scores (0 best, 10
# worst), without failing on them; skipped when this systemd has no --offline (before 250).
#
# Usage: sh tests/units/verify.sh     prints "verify: OK <unit>" per unit; exit 1 on failure.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
units=$repo/units
pg_max=${PG_MAX_CONNECTIONS:-100}
pg_reserve=${PG_RESERVE:-10}
export SYSTEMD_COLORS=0 SYSTEMD_PAGER= SYSTEMD_LOG_COLOR=0 LC_ALL=C

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify: FAIL systemd-analyze not found (Debian package: systemd)" >&2
    exit 1
fi
hostunits=
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -f "$d/sysinit.target" ]; then hostunits=$d; break; fi
done
if [ -z "$hostunits" ]; then
    echo "verify: FAIL no systemd unit directory with sysinit.target on this host" >&2
    exit 1
fi

set -- "$units"/*.socket "$units"/*.service
if [ ! -e "$1" ]; then
    echo "verify: FAIL no units in $units" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgmail-units.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
root=$tmp/root
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/sbin"
cp -a "$hostunits" "$root/usr/lib/systemd/system"
cp "$@" "$root/etc/systemd/system/"

failed=0
fail() {
    echo "verify: FAIL $*"
    failed=1
}

echo "systemd: $(systemd-analyze --version | head -n 1)"

# Stand-ins for the programs. Only absolute ExecStart= paths are expected; a unit with any
# other form fails in verify below, which is the point.
for exe in $(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$@" | sort -u); do
    name=$(basename "$exe")
    built=
    for d in "$repo"/*/; do
        if [ -f "$d$name" ] && [ -x "$d$name" ]; then built=$d$name; break; fi
    done
    mkdir -p "$root$(dirname "$exe")"
    if [ -n "$built" ]; then
        cp "$built" "$root$exe"
        echo "program: $exe <- ${built#"$repo"/}"
    else
        cp /bin/true "$root$exe"
        echo "program: $exe <- /bin/true (stand-in: $name is not built in the repo)"
    fi
done

# 1. systemd-analyze verify, unit by unit.
for f in "$@"; do
    u=$(basename "$f")
    out=$tmp/verify.out
    rc=0
    (cd "$root" && systemd-analyze verify --man=no --recursive-errors=no --root="$root" "$u") \
        >"$out" 2>&1 || rc=$?
    # Lines about our units name them (pgmail-...) or their files; anything else is about the
    # host's units and is shown without failing.
    bad=$(grep -i 'pgmail' "$out" | sort -u || true)
    other=$(grep -v -i 'pgmail' "$out" | sort -u || true)
    if [ "$rc" -ne 0 ] || [ -n "$bad" ]; then
        fail "$u (systemd-analyze verify exit status $rc)"
        [ -z "$bad" ] || printf '%s\n' "$bad" | sed "s|$root||; s/^/    /"
        [ -z "$other" ] || printf '%s\n' "$other" | sed "s|$root||; s/^/    /"
    else
        [ -z "$other" ] || printf '%s\n' "$other" | sed "s|$root||; s/^/    note: /"
        echo "verify: OK $u"
    fi
done

# 2. The shared hardening block is the same in every service.
ref=
same=1
for f in "$units"/*.service; do
    blk=$tmp/$(basename "$f").block
    sed -n '/^# --- shared block begin/,/^# --- shared block end/p' "$f" >"$blk"
    if [ ! -s "$blk" ]; then
        fail "$(basename "$f"): no '# --- shared block begin/end' markers"
        same=0
        continue
    fi
    if [ -z "$ref" ]; then
        ref=$blk
    elif ! cmp -s "$ref" "$blk"; then
        fail "$(basename "$f"): shared block differs from $(basename "$ref" .block)"
        same=0
        diff "$ref" "$blk" | sed 's/^/    /' || true
    fi
done
[ -z "$ref" ] || [ "$same" -eq 0 ] || echo "verify: OK shared block identical in all services"

# 3. Connection budget.
sum=0
for f in "$units"/*.socket; do
    n=$(sed -n 's/^MaxConnections=\([0-9]*\)$/\1/p' "$f" | tail -n 1)
    if [ -z "$n" ]; then
        fail "$(basename "$f"): no MaxConnections= (systemd's default is 64)"
        n=64
    fi
    sum=$((sum + n))
done
budget=$((pg_max - 3 - pg_reserve))
if [ "$sum" -gt "$budget" ]; then
    fail "connection budget: MaxConnections sum $sum > $budget" \
        "(max_connections $pg_max - 3 reserved - $pg_reserve for admin)"
else
    echo "verify: OK connection budget: MaxConnections sum $sum <= $budget" \
        "(max_connections $pg_max - 3 reserved - $pg_reserve for admin)"
fi

# 4. No password in the environment (it comes by LoadCredential=, see pgmail-smtp@.service).
if grep -n -i -E '^(Environment|SetCredential)=.*(PGPASSWORD|password=)' "$@" >"$tmp/pw"; then
    fail "a unit puts a database password in the environment or a SetCredential="
    sed 's/^/    /' "$tmp/pw"
fi

# Exposure scores, reported only.
for f in "$units"/*.service; do
    u=$(basename "$f")
    if out=$(cd "$root" && systemd-analyze security --offline=true --root="$root" --man=no \
        "$u" 2>&1); then :; fi
    line=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
    if [ -n "$line" ]; then
        echo "security: $u ${line#*: }"
    else
        echo "security: $u skipped (systemd-analyze security --offline=true not available:" \
            "$(printf '%s\n' "$out" | head -n 1))"
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "verify: FAILED"
    exit 1
fi
echo "verify: all units OK"
