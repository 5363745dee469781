#!/bin/sh
# demo.sh - what `make run` runs: a local pgmail on loopback, for trying it out.
#
# A PostgreSQL cluster under .run/demo-pg (kept between runs, so demo mail stays), the
# schema migrated, domain example.test with users alice and bob, and the SMTP handler on
# 127.0.0.1:2525 and the POP3 handler on 127.0.0.1:2110, spawned per connection by
# systemd-socket-activate, as systemd would; pgmail-relay runs in the background and
# delivers the outbound queue (it is stopped with SIGTERM at the end, as systemd would).
# Ctrl-C stops everything it started; `rm -rf .run` forgets the demo data.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
run=$top/.run
pgdir=$run/demo-pg
SMTP_PORT=${SMTP_PORT:-2525}
POP3_PORT=${POP3_PORT:-2110}

sh tests/lib/pg.sh start "$pgdir"
eval "$(sh tests/lib/pg.sh env "$pgdir")"
export PGHOST PGUSER
export PGDATABASE=pgmail
export PGMAIL_CONFIG=/dev/null          # the demo never reads /etc/pgmail
export PGMAIL_HOSTNAME=mx.example.test
export PGMAIL_LOG=stderr
# A self-signed certificate for the demo's STARTTLS/STLS (clients need -k / no verify).
if [ ! -f "$run/demo-tls.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$PGMAIL_HOSTNAME" \
        -keyout "$run/demo-tls.key" -out "$run/demo-tls.crt" 2>/dev/null
fi
export PGMAIL_TLS_CERT="$run/demo-tls.crt" PGMAIL_TLS_KEY="$run/demo-tls.key"
pids=""
relay_pid=
cleanup() {
    trap - INT TERM EXIT
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    # the relay finishes a message in progress before it exits: let it, then stop PostgreSQL
    [ -z "$relay_pid" ] || wait "$relay_pid" 2>/dev/null || true
    sh tests/lib/pg.sh stop "$pgdir" || true
    echo "demo stopped (data kept in $pgdir; rm -rf .run to forget it)"
}
trap cleanup INT TERM EXIT

psql -XAtqc "SELECT 1 FROM pg_database WHERE datname = 'pgmail'" -d postgres | grep -q 1 ||
    psql -Xqc "CREATE DATABASE pgmail" -d postgres
admin/pgmailctl migrate
admin/pgmailctl domain list | grep -qx 'example.test' || admin/pgmailctl domain add example.test
for u in alice bob; do
    admin/pgmailctl user list example.test | grep -q "^$u@example.test" ||
        echo "$u-password" | PGMAIL_PASSWORD_SCHEME=sha512crypt admin/pgmailctl user add "$u@example.test"
done

pass="-E PGHOST -E PGUSER -E PGDATABASE -E PGMAIL_CONFIG -E PGMAIL_HOSTNAME -E PGMAIL_LOG"
pass="$pass -E PGMAIL_TLS_CERT -E PGMAIL_TLS_KEY"
# shellcheck disable=SC2086 # $pass is a list of options
systemd-socket-activate --inetd -a -l "127.0.0.1:$SMTP_PORT" $pass "$top/smtp/pgmail-smtpd" \
    2>>"$run/smtpd.log" &
pids="$pids $!"
# shellcheck disable=SC2086
systemd-socket-activate --inetd -a -l "127.0.0.1:$POP3_PORT" $pass "$top/pop3/pgmail-pop3d" \
    2>>"$run/pop3d.log" &
pids="$pids $!"
"$top/relay/pgmail-relay" 2>>"$run/relay.log" &
relay_pid=$!
pids="$pids $relay_pid"

cat <<MSG

pgmail is running.  SMTP: 127.0.0.1:$SMTP_PORT   POP3: 127.0.0.1:$POP3_PORT
(logs: .run/smtpd.log, .run/pop3d.log, .run/relay.log: pgmail-relay sends the queue)
Users: alice@example.test / alice-password, bob@example.test / bob-password

Send a mail with curl:
  printf 'Subject: hello\r\n\r\nHi Alice!\r\n' | curl -s smtp://127.0.0.1:$SMTP_PORT \\
      --mail-from bob@example.test --mail-rcpt alice@example.test -T -
or with swaks, logged in as bob:
  swaks -s 127.0.0.1 -p $SMTP_PORT -f bob@example.test -t alice@example.test \\
      -a PLAIN -au bob@example.test -ap bob-password

Over TLS (a self-signed certificate, so -k / no verification):
  swaks -s 127.0.0.1 -p $SMTP_PORT --tls -f bob@example.test -t alice@example.test \
      -a PLAIN -au bob@example.test -ap bob-password
  curl -sk --ssl-reqd -u alice@example.test:alice-password pop3://127.0.0.1:$POP3_PORT/

Look at it in PostgreSQL:
  psql -h $PGHOST -U postgres pgmail -c \\
      "SELECT m.id, a.address, m.size, m.received_at FROM mailbox m JOIN accounts a ON a.id = m.account_id"
  psql -h $PGHOST -U postgres pgmail -Atc "SELECT convert_from(body, 'UTF8') FROM messages ORDER BY id DESC LIMIT 1"

Read alice's mailbox over POP3 with curl (list, then message 1):
  curl -s -u alice@example.test:alice-password pop3://127.0.0.1:$POP3_PORT/
  curl -s -u alice@example.test:alice-password pop3://127.0.0.1:$POP3_PORT/1
or with Python's poplib:
  python3 -c 'import poplib; p = poplib.POP3("127.0.0.1", $POP3_PORT); p.user("alice@example.test");
p.pass_("alice-password"); print(p.stat()); print(b"\n".join(p.retr(1)[1]).decode()); p.quit()'

Press Ctrl-C to stop.
MSG
wait
