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
#   2. The block between the "shared block" markers is byte-identical in every session
#      service (NAME@.service; pgmail-relay.service is no session and has its own lines).
#   3. The sum of MaxConnections over all sockets, plus pgmail-relay's worst case
#      (relay_max_connections as shipped, LIM_DEFAULT_RELAY_CONNECTIONS in
#      shared/mail_limits.h, agents + 1 scheduler), fits PostgreSQL's connection budget:
#      max_connections (PG_MAX_CONNECTIONS, default 125: what pgmail asks of PostgreSQL,
#      whose own default is 100) minus 3 superuser-reserved minus PG_RESERVE (default 10)
#      for pgmailctl, psql, backups and monitoring.
#   4. No unit puts a database password in the environment.
#   5. The budget table and the memory worst case written in every socket's header comment
#      give the real MaxConnections of every socket, the relay's worst case, their sum, what
#      is left of 125 - 3 and MemoryMax of each socket's service; pgmail-relay.service's
#      comment gives the same worst case.
#   6. Credentials: every LoadCredential= has a SetCredential= default for the same ID (else a
#      missing file fails every start), and every session service gets tls.crt and tls.key
#      with PGMAIL_TLS_CERT=%d/tls.crt PGMAIL_TLS_KEY=%d/tls.key.
#   7. Every socket starts its own template NAME@.service (Accept=yes), and each service
#      sets PGMAIL_TLS_IMPLICIT (and the SMTP ones PGMAIL_REQUIRE_AUTH) explicitly, to what
#      its port needs: implicit TLS on 465 and 995 only, AUTH required on 587 and 465 only.
#   8. pgmail-relay.service (the one long-running service): Type=notify with a watchdog,
#      restarted on failure, a dynamic user without capabilities, the relayhost password as
#      a credential, and `systemd-analyze security` exposure 2.0 or better.
#   9. TLS session-ticket keys: every session service loads the file that
#      pgmail-tls-ticket-keys.service writes, and its timer's period (hourly) is the
#      tickets' lifetime (LIM_TLS_TICKET_LIFETIME = 3600 in shared/mail_limits.h).
# It also reports `systemd-analyze security --offline=true` exposure scores (0 best, 10
# worst), failing only for pgmail-relay.service above 2.0; skipped when this systemd has no
# --offline (before 250).
#
# Usage: sh tests/units/verify.sh     prints "verify: OK <unit>" per unit; exit 1 on failure.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
units=$repo/units
# pgmail's documented max_connections (the sockets' comments; deploy/postgres-entrypoint.sh
# sets it); PG_MAX_CONNECTIONS checks the budget against another server's setting.
pg_doc=125
pg_max=${PG_MAX_CONNECTIONS:-$pg_doc}
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

set -- "$units"/*.socket "$units"/*.service "$units"/*.timer
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
for f in "$units"/*@.service; do
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
[ -z "$ref" ] || [ "$same" -eq 0 ] || echo "verify: OK shared block identical in all session services"

# 3. Connection budget. The relay's worst case: one backend per agent (relay_max_connections
# as shipped) and one for the scheduler; 0 when there is no relay unit.
relay_conns=0
if [ -f "$units/pgmail-relay.service" ]; then
    lim=$(sed -n 's/^#define LIM_DEFAULT_RELAY_CONNECTIONS[[:space:]]*\([0-9]*\).*/\1/p' \
        "$repo/shared/mail_limits.h")
    if [ -z "$lim" ]; then
        fail "no LIM_DEFAULT_RELAY_CONNECTIONS in shared/mail_limits.h"
        lim=0
    fi
    relay_conns=$((lim + 1))
fi
sum=0
for f in "$units"/*.socket; do
    n=$(sed -n 's/^MaxConnections=\([0-9]*\)$/\1/p' "$f" | tail -n 1)
    if [ -z "$n" ]; then
        fail "$(basename "$f"): no MaxConnections= (systemd's default is 64)"
        n=64
    fi
    sum=$((sum + n))
done
sockets=$sum
sum=$((sum + relay_conns))
budget=$((pg_max - 3 - pg_reserve))
if [ "$sum" -gt "$budget" ]; then
    fail "connection budget: MaxConnections sum $sockets + relay $relay_conns = $sum > $budget" \
        "(max_connections $pg_max - 3 reserved - $pg_reserve for admin)"
else
    echo "verify: OK connection budget: MaxConnections sum $sockets + relay $relay_conns" \
        "= $sum <= $budget (max_connections $pg_max - 3 reserved - $pg_reserve for admin)"
fi

# 4. No password in the environment (it comes by LoadCredential=, see pgmail-smtp@.service).
if grep -n -i -E '^(Environment|SetCredential)=.*(PGPASSWORD|password=)' "$@" >"$tmp/pw"; then
    fail "a unit puts a database password in the environment or a SetCredential="
    sed 's/^/    /' "$tmp/pw"
fi

# 5. The numbers in the sockets' header comments (what an administrator reads before changing
# MaxConnections) are the real ones.
actual=$tmp/budget.actual
mem=$tmp/budget.mem
: >"$actual"
: >"$mem"
mib=0
for f in "$units"/*.socket; do
    name=$(basename "$f")
    n=$(sed -n 's/^MaxConnections=\([0-9]*\)$/\1/p' "$f" | tail -n 1)
    svc=$units/${name%.socket}@.service
    m=
    [ ! -f "$svc" ] || m=$(sed -n 's/^MemoryMax=\([0-9]*\)M$/\1/p' "$svc" | tail -n 1)
    echo "$name ${n:-64}" >>"$actual"
    if [ -n "$m" ]; then
        echo "${n:-64} x ${m}M" >>"$mem"
        mib=$((mib + ${n:-64} * m))
    else
        fail "$name: no MemoryMax=<n>M in $(basename "$svc")"
    fi
done
[ "$relay_conns" -eq 0 ] || echo "pgmail-relay.service $relay_conns" >>"$actual"
sort -o "$actual" "$actual"
sort -o "$mem" "$mem"
# 8704 MiB -> "8.5G": one decimal, rounded.
gib="$(((mib * 10 + 512) / 1024 / 10)).$(((mib * 10 + 512) / 1024 % 10))G"
left=$((pg_doc - 3 - sum))
numbers_ok=1
for f in "$units"/*.socket; do
    name=$(basename "$f")
    sed -n 's/^#[[:space:]]*\(pgmail-[a-z0-9-]*\.\(socket\|service\)\)[[:space:]]*\([0-9][0-9]*\)$/\1 \3/p' \
        "$f" | sort >"$tmp/budget.table"
    if ! cmp -s "$actual" "$tmp/budget.table"; then
        fail "$name: the connection budget table in its comment differs from the sockets" \
            "(< actual MaxConnections, > the comment)"
        diff "$actual" "$tmp/budget.table" | grep '^[<>]' | sed 's/^/    /' || true
        numbers_ok=0
    fi
    if ! grep -q -E "^#[[:space:]]+sum[[:space:]]+${sum}[[:space:]]+-> ${left} left" "$f"; then
        fail "$name: the budget comment does not say 'sum $sum -> $left left'"
        numbers_ok=0
    fi
    if ! grep -q "max_connections = $pg_doc" "$f" || ! grep -q "$pg_doc - 3 = $((pg_doc - 3)) usable" "$f"; then
        fail "$name: the budget comment does not say 'max_connections = $pg_doc'" \
            "and '$pg_doc - 3 = $((pg_doc - 3)) usable'"
        numbers_ok=0
    fi
    grep '^#' "$f" | grep -o '[0-9][0-9]* x [0-9][0-9]*M' | sort >"$tmp/budget.memtable"
    if ! cmp -s "$mem" "$tmp/budget.memtable" || ! grep -q "= $gib)" "$f"; then
        fail "$name: the memory worst case in its comment is not" \
            "$(tr '\n' '+' <"$mem" | sed 's/+$//; s/+/ + /g') = $gib"
        numbers_ok=0
    fi
done
if [ "$relay_conns" -gt 0 ] &&
    ! grep -q "relay_max_connections + 1 ($relay_conns by default)" "$units/pgmail-relay.service"; then
    fail "pgmail-relay.service: its comment does not say" \
        "'relay_max_connections + 1 ($relay_conns by default)'"
    numbers_ok=0
fi
[ "$numbers_ok" -eq 0 ] || echo "verify: OK budget comments match the units" \
    "(sum $sum, memory worst case $gib)"

# 6. Credentials.
creds_ok=1
for f in "$units"/*.service; do
    u=$(basename "$f")
    for id in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$f"); do
        if ! grep -q "^SetCredential=$id:" "$f"; then
            fail "$u: LoadCredential=$id without a SetCredential=$id: default" \
                "(a missing file would fail every start)"
            creds_ok=0
        fi
    done
    case $u in *@.service) ;; *) continue ;; esac
    for want in 'LoadCredential=tls.crt:/etc/pgmail/tls.crt' \
        'LoadCredential=tls.key:/etc/pgmail/tls.key' \
        'Environment=PGMAIL_TLS_CERT=%d/tls.crt PGMAIL_TLS_KEY=%d/tls.key'; do
        if ! grep -q -x -F "$want" "$f"; then
            fail "$u: no line $want"
            creds_ok=0
        fi
    done
done
[ "$creds_ok" -eq 0 ] || echo "verify: OK credentials (each with a default; TLS in every session service)"

# 7. Each port's policy. env_of FILE NAME: the value a unit's Environment= lines give NAME
# (the last one wins), empty when none does.
env_of() {
    sed -n 's/^Environment=//p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | tail -n 1
}
policy_ok=1
for f in "$units"/*.socket; do
    name=$(basename "$f")
    svc=$units/${name%.socket}@.service
    port=$(sed -n 's/^ListenStream=\([0-9]*\)$/\1/p' "$f" | tail -n 1)
    # The metrics endpoint listens on loopback addresses only, never on a mail port.
    [ "$name" != pgmail-metrics.socket ] ||
        port=metrics:$(sed -n 's/^ListenStream=\(127\.0\.0\.1\|\[::1\]\):\([0-9]*\)$/\2/p' "$f" | sort -u)
    if ! grep -q -x 'Accept=yes' "$f" || [ ! -f "$svc" ]; then
        fail "$name: expected Accept=yes and a template $(basename "$svc")"
        policy_ok=0
        continue
    fi
    case $port in
    25) want_tls=no want_auth=no ;;
    587) want_tls=no want_auth=yes ;;
    465) want_tls=yes want_auth=yes ;;
    110) want_tls=no want_auth= ;;
    995) want_tls=yes want_auth= ;;
    metrics:9087) want_tls=no want_auth= ;;
    *)
        fail "$name: port '$port' is none of 25 587 465 110 995: add its policy here"
        policy_ok=0
        continue
        ;;
    esac
    got_tls=$(env_of "$svc" PGMAIL_TLS_IMPLICIT)
    got_auth=$(env_of "$svc" PGMAIL_REQUIRE_AUTH)
    if [ "$got_tls" != "$want_tls" ] || [ "$got_auth" != "$want_auth" ]; then
        fail "$(basename "$svc") (port $port): PGMAIL_TLS_IMPLICIT='$got_tls'" \
            "PGMAIL_REQUIRE_AUTH='$got_auth', expected '$want_tls' and '$want_auth'"
        policy_ok=0
    fi
done
[ "$policy_ok" -eq 0 ] || echo "verify: OK ports: implicit TLS on 465 and 995 only," \
    "AUTH required on 587 and 465 only"

# 8. The relay's service.
relay=$units/pgmail-relay.service
if [ -f "$relay" ]; then
    relay_ok=1
    for want in 'Type=notify' 'NotifyAccess=main' 'Restart=on-failure' 'DynamicUser=yes' \
        'CapabilityBoundingSet=' 'AmbientCapabilities=' 'NoNewPrivileges=yes' \
        'ExecStart=/usr/sbin/pgmail-relay' \
        'LoadCredential=relayhost-password:/etc/pgmail/relayhost-password' \
        'Environment=PGMAIL_RELAYHOST_PASSWORD_FILE=%d/relayhost-password'; do
        if ! grep -q -x -F "$want" "$relay"; then
            fail "pgmail-relay.service: no line $want"
            relay_ok=0
        fi
    done
    if ! grep -q -E '^WatchdogSec=[1-9]' "$relay"; then
        fail "pgmail-relay.service: no WatchdogSec="
        relay_ok=0
    fi
    [ "$relay_ok" -eq 0 ] || echo "verify: OK pgmail-relay.service (notify, watchdog, restart," \
        "no capabilities, relayhost password as a credential)"
fi

# 9. Ticket keys: written where the handlers' credential reads them, rotated as often as a
# ticket lives.
tk_svc=$units/pgmail-tls-ticket-keys.service
tk_timer=$units/pgmail-tls-ticket-keys.timer
if [ -f "$tk_svc" ]; then
    tk_ok=1
    tk_path=$(sed -n 's#^ExecStart=/usr/sbin/pgmailctl tls rotate-ticket-keys \(/.*\)$#\1#p' "$tk_svc")
    if [ -z "$tk_path" ]; then
        fail "pgmail-tls-ticket-keys.service: no ExecStart=/usr/sbin/pgmailctl tls rotate-ticket-keys FILE"
        tk_ok=0
    fi
    for f in "$units"/*@.service; do
        for want in "LoadCredential=tls-ticket-keys:$tk_path" \
            'Environment=PGMAIL_TLS_TICKET_KEYS=%d/tls-ticket-keys'; do
            if ! grep -q -x -F "$want" "$f"; then
                fail "$(basename "$f"): no line $want"
                tk_ok=0
            fi
        done
    done
    life=$(sed -n 's/^#define LIM_TLS_TICKET_LIFETIME[[:space:]]*\([0-9]*\).*/\1/p' \
        "$repo/shared/mail_limits.h")
    if [ "$life" != 3600 ] || ! grep -q -x 'OnCalendar=hourly' "$tk_timer" 2>/dev/null; then
        fail "pgmail-tls-ticket-keys.timer: OnCalendar=hourly and LIM_TLS_TICKET_LIFETIME" \
            "3600 must agree (found '$life')"
        tk_ok=0
    fi
    [ "$tk_ok" -eq 0 ] || echo "verify: OK TLS ticket keys ($tk_path, hourly, lifetime ${life}s)"
fi

# Exposure scores, reported (and for the relay, required to be 2.0 or better).
for f in "$units"/*.service; do
    u=$(basename "$f")
    if out=$(cd "$root" && systemd-analyze security --offline=true --root="$root" --man=no \
        "$u" 2>&1); then :; fi
    line=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
    if [ -n "$line" ]; then
        echo "security: $u ${line#*: }"
        score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9]*\.[0-9]*\).*/\1/p')
        if [ "$u" = pgmail-relay.service ] &&
            ! awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 2.0) }'; then
            fail "pgmail-relay.service: exposure '$score' is above 2.0"
        fi
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
