#!/bin/sh
# tests/units/boot.sh - runs the units in units/ under a real systemd and talks to them.
#
# verify.sh checks the unit files statically; this checks what only a running systemd shows:
# that the credential reaches the handler (mode 0400, owned by the dynamic user) and
# libpq accepts it, that the unit still starts when /etc/pgmail/pgpass is missing (the
# SetCredential= fallback), that the sandbox leaves the handler no capabilities, a read-only
# /etc and a seccomp filter, and still lets pgmail-smtpd store a message; port 587 demanding
# AUTH; MaxConnectionsPerSource; that a burst of connections does not trip the socket's
# trigger limit; that ended sessions leave no failed units behind (CollectMode=); that
# pgmail-relay.service becomes ready under its sandbox, works the queue and stops cleanly;
# that pgmail-tls-ticket-keys.timer makes /run/pgmail/tls-ticket-keys (0600 in a 0700
# directory), that it reaches the handler as a 0400 credential of its user, and that a TLS
# session of one connection resumes on the next (openssl s_client -sess_out / -sess_in), also
# after a rotation, and after two falls back to a full handshake.
#
# How: systemd 252 is started as PID 1 of new pid, mount, network, UTS, IPC and cgroup
# namespaces (for machines where PID 1 is not systemd, like CI VMs). Inside, /run, /tmp and
# /var/tmp are fresh tmpfs, /etc and /usr/sbin are overlays (pgmail.conf, environment, pgpass
# and the built programs are added in a scratch directory), /etc/systemd/system holds units/
# plus a probe unit, and /usr/lib/systemd/system holds only journald and stub targets, so
# nothing else of the host boots. PostgreSQL is a private cluster (tests/lib/pg.sh) that
# requires a password from role pgmail. The cgroup is a new child of the cgroup2 root, removed
# at the end; so is everything else (a directory /var/lib/pgmail-units-boot.*).
# Not testable here: MemoryMax= and TasksMax= when the memory and pids controllers are on
# cgroup v1 (hybrid hierarchy), as on the Firecracker VMs.
#
# Needs root, unshare/nsenter, overlayfs, a cgroup2 mount, python3, PostgreSQL (make deps) and
# a built smtp/pgmail-smtpd; prints "boot: SKIP <why>" and exits 0 otherwise. Do not run it on
# a host booted with systemd: it would add a cgroup to the host manager's tree; use a VM.
# Usage: sh tests/units/boot.sh    prints "boot: OK <check>" per check; exit 1 on failure.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
skip() {
    echo "boot: SKIP $*"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (namespaces, mounts, a cgroup)"
[ -x "$repo/smtp/pgmail-smtpd" ] || skip "smtp/pgmail-smtpd is not built (make)"
for c in unshare nsenter python3 psql pgrep; do
    command -v "$c" >/dev/null 2>&1 || skip "$c not found"
done
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd"
grep -qw overlay /proc/filesystems || skip "no overlayfs"
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$cg2" ] || skip "no cgroup2 mount"
if [ "$(cat /proc/1/comm)" = systemd ]; then
    skip "PID 1 is systemd: run this in a VM or container without it"
fi
hostunits=/lib/systemd/system

W=$(mktemp -d /var/lib/pgmail-units-boot.XXXXXX)
chmod 0755 "$W"
cg=$cg2/$(basename "$W")
unshare_pid=
pid1=
cleanup() {
    set +e
    if [ -n "$pid1" ]; then kill -KILL "$pid1" 2>/dev/null; fi
    if [ -n "$unshare_pid" ]; then wait "$unshare_pid" 2>/dev/null; fi
    i=0
    while [ -d "$cg" ] && [ $i -lt 50 ]; do
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
        [ -d "$cg" ] && sleep 0.1
        i=$((i + 1))
    done
    sh "$repo/tests/lib/pg.sh" stop "$W/pg" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

failed=0
ok() { echo "boot: OK $*"; }
bad() {
    echo "boot: FAIL $*"
    failed=1
}
# check DESCRIPTION OUTPUT PATTERN: the output has a line matching the extended regex.
check() {
    if printf '%s\n' "$2" | grep -q -E "$3"; then
        ok "$1"
    else
        bad "$1 (expected /$3/)"
        printf '%s\n' "$2" | sed 's/^/    /'
    fi
}

# --- PostgreSQL: role pgmail must give a password, which only the credential holds.
secret=unit-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
sh "$repo/tests/lib/pg.sh" start "$W/pg"
export PGHOST="$W/pg"
psql -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
    -c "CREATE ROLE pgmail LOGIN PASSWORD '$secret'" -c "CREATE DATABASE pgmail OWNER pgmail"
for m in "$repo"/migrations/*.sql; do
    psql -q -v ON_ERROR_STOP=1 -U pgmail -d pgmail -f "$m" >/dev/null
done
psql -q -v ON_ERROR_STOP=1 -U pgmail -d pgmail \
    -c "INSERT INTO domains (name) VALUES ('example.test')" \
    -c "INSERT INTO accounts (domain_id, address, password_hash)
        SELECT id, 'bob@example.test', '!' FROM domains"
sed -i '1i local pgmail pgmail scram-sha-256' "$W/pg/data/pg_hba.conf"
psql -q -U postgres -d postgres -c 'SELECT pg_reload_conf()' >/dev/null

# --- The tree systemd boots from.
mkdir -p "$W/usrunits" "$W/etcunits" "$W/etc-up/pgmail" "$W/etc-work" "$W/sbin-up" \
    "$W/sbin-work" "$W/empty"
for t in sysinit basic sockets shutdown local-fs swap network timers paths slices; do
    printf '[Unit]\nDescription=stub %s\n' "$t" >"$W/usrunits/$t.target"
done
for u in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
    systemd-journald-audit.socket; do
    cp "$hostunits/$u" "$W/usrunits/"
done
cp "$repo"/units/*.socket "$repo"/units/*.service "$repo"/units/*.timer "$W/etcunits/"
cp "$repo/admin/pgmailctl" "$W/sbin-up/"
want="pgmail-smtp.socket pgmail-submission.socket pgmail-probe.socket"
cp "$repo/smtp/pgmail-smtpd" "$W/sbin-up/"
if [ -x "$repo/pop3/pgmail-pop3d" ]; then
    cp "$repo/pop3/pgmail-pop3d" "$W/sbin-up/"
    want="$want pgmail-pop3.socket"
fi
# The probe: pgmail-smtp@.service with a shell script in place of the handler, on port 2000.
sed "s|^ExecStart=.*|ExecStart=/bin/sh $W/probe.sh|" "$repo/units/pgmail-smtp@.service" \
    >"$W/etcunits/pgmail-probe@.service"
sed 's|^ListenStream=25$|ListenStream=2000|' "$repo/units/pgmail-smtp.socket" \
    >"$W/etcunits/pgmail-probe.socket"
# The control: pgmail-smtp.socket with systemd's default trigger limit, on port 2525.
grep -v '^TriggerLimit' "$repo/units/pgmail-smtp.socket" | sed 's|^ListenStream=25$|ListenStream=2525|' \
    >"$W/etcunits/pgmail-control.socket"
cp "$repo/units/pgmail-smtp@.service" "$W/etcunits/pgmail-control@.service"
want="$want pgmail-control.socket"
# The relay, when built: a service of its own (Type=notify), no socket.
if [ -x "$repo/relay/pgmail-relay" ]; then
    cp "$repo/relay/pgmail-relay" "$W/sbin-up/"
    want="$want pgmail-relay.service"
fi
printf '[Unit]\nDescription=pgmail units test\nWants=systemd-journald.service %s\n' "$want" \
    >"$W/etcunits/pgmail-test.target"
cat >"$W/probe.sh" <<'EOF'
cred=$CREDENTIALS_DIRECTORY/pgpass
echo "uid=$(id -u)"
echo "cred=$(stat -c '%a %u' "$cred" 2>&1)"
echo "cred_first_line=$(head -n 1 "$cred" 2>&1 | cut -c1-11)"
echo "pgpassfile_is_cred=$([ "$PGPASSFILE" = "$cred" ] && echo yes || echo no)"
echo "etc_pgpass_readable=$(cat /etc/pgmail/pgpass >/dev/null 2>&1 && echo yes || echo no)"
echo "etc_writable=$(touch /etc/pgmail/x 2>/dev/null && echo yes || echo no)"
echo "require_auth=$PGMAIL_REQUIRE_AUTH"
echo "tk_cred=$(stat -c '%a %u %s' "$CREDENTIALS_DIRECTORY/tls-ticket-keys" 2>&1)"
echo "tk_first_line=$(head -c 9 "$CREDENTIALS_DIRECTORY/tls-ticket-keys" | tr -c ' -~' '?')"
echo "tk_env_is_cred=$([ "$PGMAIL_TLS_TICKET_KEYS" = "$CREDENTIALS_DIRECTORY/tls-ticket-keys" ] && echo yes || echo no)"
echo "uid_map_lines=$(wc -l </proc/self/uid_map)"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d ' \t' | tr : =
EOF
chmod 0644 "$W/probe.sh"
printf 'hostname = mx.example.test\n' >"$W/etc-up/pgmail/pgmail.conf"
chmod 0644 "$W/etc-up/pgmail/pgmail.conf"
printf 'PGMAIL_DATABASE=host=%s dbname=pgmail user=pgmail\n' "$W/pg" \
    >"$W/etc-up/pgmail/environment"
printf '*:*:pgmail:pgmail:%s\n' "$secret" >"$W/etc-up/pgmail/pgpass"
chmod 0600 "$W/etc-up/pgmail/environment" "$W/etc-up/pgmail/pgpass"
# A certificate for STARTTLS (TLS session resumption below), when openssl is there.
tls=no
if command -v openssl >/dev/null 2>&1 && [ -x "$repo/admin/pgmailctl" ] &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=mx.example.test -keyout "$W/etc-up/pgmail/tls.key" \
        -out "$W/etc-up/pgmail/tls.crt" >/dev/null 2>&1; then
    chmod 0600 "$W/etc-up/pgmail/tls.key" "$W/etc-up/pgmail/tls.crt"
    tls=yes
fi

cat >"$W/inner.sh" <<EOF
set -eu
mount -t proc proc /proc
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t overlay overlay -o lowerdir=/etc,upperdir=$W/etc-up,workdir=$W/etc-work /etc
mount -t overlay overlay -o lowerdir=/usr/sbin,upperdir=$W/sbin-up,workdir=$W/sbin-work /usr/sbin
mount --bind $W/etcunits /etc/systemd/system
mount --bind $W/usrunits /usr/lib/systemd/system
mount --bind $W/empty /usr/lib/systemd/system-generators
# On a booted host / is a shared mount; systemd sets that up only outside containers, and
# its credential setup (a helper in its own mount namespace) depends on it.
mount --make-rshared /
hostname pgmail-units-test
export container=pgmail-units-test
exec /lib/systemd/systemd --system --unit=pgmail-test.target --log-target=journal \
    </dev/null >$W/systemd.log 2>&1
EOF

# --- Boot.
mkdir "$cg"
sh -c 'echo $$ >"$1/cgroup.procs" &&
       exec unshare --mount --pid --fork --uts --ipc --net --cgroup --propagation private \
           sh "$2" 2>"$3"' sh "$cg" "$W/inner.sh" "$W/unshare.log" &
unshare_pid=$!
i=0
while [ -z "$pid1" ] && [ $i -lt 50 ]; do
    pid1=$(pgrep -P "$unshare_pid" || true)
    [ -n "$pid1" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$pid1" ] || { bad "systemd did not start"; exit 1; }
in_ns() { nsenter -t "$pid1" -m -p -u -i -n -- "$@"; }
client() { nsenter -t "$pid1" -n -- python3 "$here/client.py" "$@" 2>&1 || true; }
i=0
until in_ns systemctl is-active --quiet pgmail-smtp.socket 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        bad "pgmail-smtp.socket did not become active"
        in_ns systemctl --no-pager status 'pgmail-*' 2>&1 | sed 's/^/    /' || true
        cat "$W/systemd.log" 2>/dev/null | sed 's/^/    /'
        exit 1
    fi
    sleep 0.1
done
echo "boot: $(in_ns systemctl --version | head -n 1) running as PID 1 of a namespace"
for s in $want; do
    if in_ns systemctl is-active --quiet "$s"; then ok "$s listening"; else bad "$s not active"; fi
done

# --- The sandbox as the handler sees it.
out=$(client read 2000)
uid=$(printf '%s\n' "$out" | sed -n 's/^uid=//p')
check "handler runs as a dynamic user" "$out" '^uid=[1-9][0-9]*$'
check "credential is 0400 and owned by the handler's user" "$out" "^cred=400 $uid\$"
check "credential holds /etc/pgmail/pgpass" "$out" '^cred_first_line=\*:\*:pgmail:$'
check "PGPASSFILE names the credential" "$out" '^pgpassfile_is_cred=yes$'
check "/etc/pgmail/pgpass itself is unreadable" "$out" '^etc_pgpass_readable=no$'
check "/etc is read-only" "$out" '^etc_writable=no$'
check "no capabilities" "$out" '^CapEff=0+$'
check "empty bounding set" "$out" '^CapBnd=0+$'
check "no_new_privs" "$out" '^NoNewPrivs=1$'
check "seccomp filter" "$out" '^Seccomp=2$'
check "private user namespace" "$out" '^uid_map_lines=2$'

# --- Port 25 stores a message; the database password came by the credential.
out=$(client talk 25 'EHLO client.example' 'MAIL FROM:<alice@remote.example>' \
    'RCPT TO:<bob@example.test>' 'DATA' 'Subject: units test\n\nhello\n.' 'QUIT')
check "port 25: greeting from pgmail.conf's hostname" "$out" '^S: 220 mx\.example\.test '
check "port 25: message stored" "$out" '^S: 250 2\.0\.0 '
n=$(psql -tA -U postgres -d pgmail -c "SELECT count(*) FROM messages WHERE sender = 'alice@remote.example'")
check "port 25: message in the database" "messages=$n" '^messages=1$'

# --- Port 587 requires AUTH before MAIL.
out=$(client talk 587 'EHLO client.example' 'MAIL FROM:<bob@example.test>' 'QUIT')
check "port 587: MAIL without AUTH is refused" "$out" '^S: 530 5\.7\.0'

# --- With a password for bob (sha512crypt, when openssl is there): AUTH on 587, and POP3.
if command -v openssl >/dev/null 2>&1; then
    hash=$(openssl passwd -6 bob-password)
    psql -q -U postgres -d pgmail \
        -c "UPDATE accounts SET password_hash = '$hash' WHERE address = 'bob@example.test'"
    plain=$(printf '\0bob@example.test\0bob-password' | base64 | tr -d '\n')
    out=$(client talk 587 'EHLO client.example' "AUTH PLAIN $plain" 'MAIL FROM:<bob@example.test>' \
        'RCPT TO:<bob@example.test>' 'DATA' 'Subject: submitted\n\nhi\n.' 'QUIT')
    check "port 587: AUTH PLAIN accepted" "$out" '^S: 235 '
    check "port 587: message stored after AUTH" "$out" '^S: 250 2\.0\.0 '
    if [ -x "$repo/pop3/pgmail-pop3d" ]; then
        out=$(client pop3 110 'USER bob@example.test' 'PASS bob-password' 'STAT' 'RETR 1' 'QUIT')
        check "port 110: POP3 login" "$out" '^S: \+OK.*(logged|maildrop|[0-9]+ message)'
        check "port 110: two messages in the maildrop" "$out" '^S: \+OK 2 [0-9]+$'
        check "port 110: RETR streams the first message" "$out" '^S: hello$'
    fi
elif [ -x "$repo/pop3/pgmail-pop3d" ]; then
    out=$(client talk 110 'QUIT')
    check "port 110: POP3 greeting" "$out" '^S: \+OK'
fi

# --- MaxConnectionsPerSource=8.
out=$(client hold 25 12)
check "port 25: 8 of 12 connections from one address are served" "$out" '^greeted=8$'

# --- pgmail-relay: ready (READY=1 comes after its LISTEN, so the credential, the sandbox
# and the database all worked), forks an agent that records an attempt (no network here:
# the destination cannot be reached, so it is deferred or bounced), stops cleanly.
if [ -x "$repo/relay/pgmail-relay" ]; then
    i=0
    until in_ns systemctl is-active --quiet pgmail-relay.service || [ $i -gt 150 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    out=$(in_ns systemctl show -p ActiveState -p Type -p NotifyAccess pgmail-relay.service)
    check "relay: active after READY=1 (Type=notify)" "$out" '^ActiveState=active$'
    psql -q -U postgres -d pgmail -c "WITH m AS (INSERT INTO messages (sender, size,
        session_id, body) VALUES ('bob@example.test', 4, 'boot', 'hi' || E'\\r\\n'::bytea)
        RETURNING id) INSERT INTO queue (message_id, sender, recipient, domain)
        SELECT id, 'bob@example.test', 'someone@nowhere.invalid', 'nowhere.invalid' FROM m"
    i=0
    n=0
    while [ "$n" != 1 ] && [ $i -lt 300 ]; do
        sleep 0.2
        n=$(psql -tA -U postgres -d pgmail -c "SELECT attempts FROM queue
            WHERE recipient = 'someone@nowhere.invalid' AND lease_until IS NULL")
        i=$((i + 1))
    done
    check "relay: an agent forked, tried and recorded the attempt" "attempts=$n" '^attempts=1$'
    in_ns systemctl stop pgmail-relay.service
    out=$(in_ns systemctl show -p ActiveState -p Result pgmail-relay.service)
    check "relay: SIGTERM stops it cleanly" "$out" '^Result=success$'
fi

# --- TLS session resumption across handler processes (ticket keys from the timer).
# resumes SESS OUT|IN: one STARTTLS session on port 25 that saves or offers SESS; prints
# s_client's "New, ..." or "Reused, ..." line and the 221.
resumes() {
    printf 'EHLO client.example\nQUIT\n' |
        nsenter -t "$pid1" -n -- timeout 20 openssl s_client -connect 127.0.0.1:25 \
            -starttls smtp -ign_eof -crlf "-sess_$2" "$1" 2>&1 |
        grep -E '^(New|Reused), |^221 ' || true
}
if [ "$tls" = yes ]; then
    out=$(client read 2000)
    check "ticket keys: without the file, the credential is the SetCredential= default" \
        "$out" '^tk_first_line=# no /run$'
    in_ns systemctl start pgmail-tls-ticket-keys.timer
    i=0
    until in_ns test -s /run/pgmail/tls-ticket-keys || [ $i -gt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    out=$(in_ns stat -c '%a %u %s %n' /run/pgmail /run/pgmail/tls-ticket-keys 2>&1)
    check "ticket keys: the timer made the file at once, 0600 root, one key" "$out" \
        '^600 0 80 /run/pgmail/tls-ticket-keys$'
    check "ticket keys: in a directory 0700 root" "$out" '^700 0 [0-9]* /run/pgmail$'
    out=$(client read 2000)
    uid=$(printf '%s\n' "$out" | sed -n 's/^uid=//p')
    check "ticket keys: a 0400 credential of the handler's user" "$out" "^tk_cred=400 $uid 80\$"
    check "ticket keys: PGMAIL_TLS_TICKET_KEYS names the credential" "$out" '^tk_env_is_cred=yes$'
    rm -f "$W/sess"
    out=$(resumes "$W/sess" out)
    check "ticket keys: first STARTTLS session is new" "$out" '^New, TLSv1\.3, '
    out=$(resumes "$W/sess" in)
    check "ticket keys: the next connection (a new process) resumes it" "$out" '^Reused, TLSv1\.3, '
    in_ns systemctl start pgmail-tls-ticket-keys.service || true
    out=$(in_ns systemctl show -p Result pgmail-tls-ticket-keys.service)
    check "ticket keys: rotation service succeeds" "$out" '^Result=success$'
    out=$(resumes "$W/sess" in)
    check "ticket keys: after one rotation the previous key still resumes" "$out" '^Reused, '
    in_ns systemctl start pgmail-tls-ticket-keys.service || true
    out=$(resumes "$W/sess" in)
    check "ticket keys: after two, a full handshake" "$out" '^New, TLSv1\.3, '
    check "ticket keys: ... and the session goes on" "$out" '^221 '
    out=$(in_ns journalctl --no-pager -o cat -t pgmail-smtpd 2>/dev/null | grep -c 'tls-tickets-off' || true)
    echo "boot: NOTE tls-tickets-off lines in the journal (before the timer ran): $out"
fi

# --- No /etc/pgmail/pgpass: the unit still starts, the database refuses, the reply is 4xx.
in_ns rm /etc/pgmail/pgpass
out=$(client read 2000)
check "no pgpass: the unit starts with the SetCredential= default" "$out" \
    '^cred_first_line=# no pgpass$'
out=$(client talk 25 'EHLO client.example' 'MAIL FROM:<alice@remote.example>' \
    'RCPT TO:<bob@example.test>' 'QUIT')
check "no pgpass: a temporary failure, not a bounce" "$out" '^S: 4[0-9][0-9] 4\.'

# --- A burst of starts does not trip the trigger limit (default: 200 per 2 s fails the socket).
# Every connection counts, also those refused for MaxConnections. First the control, a socket
# that keeps the default limit. Whether the burst trips it depends on how fast PID 1 gets
# through the backlog while it also starts 40 sessions: on a 2-core VM it usually does
# (201 events: 40 accepted, 161 refused), sometimes not. So it is reported, not checked.
wait_idle() {
    i=0
    while { in_ns systemctl list-jobs --no-legend | grep -q 'pgmail-' ||
        in_ns systemctl list-units --no-legend --state=active,activating,deactivating \
            'pgmail-*@*' | grep -q .; } && [ $i -lt 300 ]; do
        sleep 0.2
        i=$((i + 1))
    done
}
wait_idle
client burst 2525 600 >/dev/null
sleep 2
out=$(in_ns systemctl show -p Result -p NAccepted -p NRefused pgmail-control.socket |
    tr '\n' ' ')
echo "boot: NOTE control socket with the default trigger limit after the burst: $out"
wait_idle
out=$(client burst 25 600)
check "burst: 600 connections from 600 addresses" "$out" '^connect_errors=0$'
sleep 2
wait_idle
out=$(in_ns systemctl show -p ActiveState -p Result -p NAccepted -p NRefused pgmail-smtp.socket)
check "burst: pgmail-smtp.socket still listening" "$out" '^ActiveState=active$'
left=$(in_ns systemctl list-units --all --no-legend 'pgmail-*@*')
check "ended sessions leave no units behind (CollectMode=)" "left=$(printf '%s' "$left" | grep -c .)
$left" '^left=0$'

if [ "$failed" -ne 0 ]; then
    echo "boot: FAILED"
    exit 1
fi
echo "boot: all checks OK"
