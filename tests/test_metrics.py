"""metrics: pgmail-metrics (metrics/) against the real PostgreSQL: requests piped into stdin
and over TCP behind systemd-socket-activate, as pgmail-metrics.socket runs it; the values
compared with what the test did (mail sent with smtplib through pgmail-smtpd, read and
deleted with poplib through pgmail-pop3d, failed logins, queue rows as pgmail-relay leaves
them); counters that stay up after deletions and after every backend is gone; Debian's
Prometheus started privately, scraping the socket-activated handler, queried through its
HTTP API; promtool check metrics on the output; the HTTP error cases.
"""

import json
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import harness
import pop3lib
from harness import PASSWORDS

ALICE, BOB = "alice@example.test", "bob@example.test"
SENDER = "sender@remote.example"
GET = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"


def metrics_bin(ctx):
    prefix = os.path.join(ctx.root, "build-san") if ctx.san else ctx.root
    return os.path.join(prefix, "metrics", "pgmail-metrics")


def request(ctx, data, env=None, timeout=30):
    """pgmail-metrics with data on stdin; (status, headers dict, body bytes, Result)."""
    r = harness.pipe_run(ctx, [metrics_bin(ctx)], data, ctx.env(env), timeout=timeout,
                         what="pgmail-metrics")
    return parse_response(r.out) + (r,)


def parse_response(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {raw[:300]!r}"
    lines = head.decode("ascii").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.1 (\d{3}) [A-Za-z ]+", lines[0])
    assert m, f"status line {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        k, v = line.split(": ", 1)
        headers[k.lower()] = v
    assert headers.get("connection") == "close", headers
    assert int(headers["content-length"]) == len(body), (headers, len(body))
    return int(m.group(1)), headers, body


def samples(body):
    """The exposition text as {(name, ((label, value), ...)): float}."""
    out = {}
    for line in body.decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)(?:\{([a-z_]+)="((?:[^"\\]|\\.)*)"\})? (\S+)', line)
        assert m, f"sample line {line!r}"
        labels = ((m.group(2), m.group(3)),) if m.group(2) else ()
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def scrape(ctx, env=None):
    status, headers, body, _ = request(ctx, GET, env)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return samples(body)


def val(s, name, label=None, value=None):
    return s.get((name, ((label, value),) if label else ()), 0.0)


def smtp_send(ctx, rcpts, text):
    with ctx.tcp() as srv, smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example",
                                        timeout=60) as s:
        assert s.sendmail(SENDER, rcpts, harness.crlf(text)) == {}


def test_metrics_count_mail_and_stay_up_after_deletion_and_restart(ctx):
    s0 = scrape(ctx)
    assert val(s0, "pgmail_database_up") == 1
    for name in ("pgmail_messages_received_total", "pgmail_deliveries_total",
                 "pgmail_login_failures_total", "pgmail_queue_recipients"):
        assert f"# TYPE {name} ".encode() in request(ctx, GET)[2]
    smtp_send(ctx, [ALICE, BOB], "Subject: one\n\nfor both\n")
    smtp_send(ctx, [ALICE], "Subject: two\n\nfor alice\n")
    stored = {m.id: m.size for m in ctx.messages()}
    s1 = scrape(ctx)
    dom = ("domain", "example.test")
    got = val(s1, "pgmail_messages_received_total", *dom) - val(s0, "pgmail_messages_received_total", *dom)
    assert got == 3, f"received went up by {got}, 3 mailbox deliveries were made"
    octets = sum(stored.values()) + min(stored.values())  # the first one twice
    got = val(s1, "pgmail_received_bytes_total", *dom) - val(s0, "pgmail_received_bytes_total", *dom)
    assert got == octets, (got, octets)
    assert val(s1, "pgmail_mailbox_messages", *dom) == 3
    assert val(s1, "pgmail_mailboxes", *dom) == 3  # alice, bob, carol
    assert val(s1, "pgmail_mailboxes", "domain", "other.test") == 0
    assert not any(ALICE in str(k) for k in s1), "an address without metrics_per_user"

    # POP3: alice deletes both of hers.
    with pop3lib.pop3_tcp(ctx) as srv:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        p.user(ALICE)
        p.pass_(PASSWORDS[ALICE])
        assert p.stat()[0] == 2
        p.dele(1)
        p.dele(2)
        p.quit()
    s2 = scrape(ctx)
    assert val(s2, "pgmail_mailbox_messages", *dom) == 1
    for k, v in s1.items():
        if k[0].endswith("_total"):
            assert s2.get(k, 0) >= v, f"{k} went down after DELE: {v} -> {s2.get(k)}"
    assert val(s2, "pgmail_messages_received_total", *dom) == val(s1, "pgmail_messages_received_total", *dom)

    # Restarts: PostgreSQL itself (a scrape meanwhile says the database is down, and still
    # answers 200), then every other backend ends (its shard rows stay); mail is pruned.
    lib = os.path.join(ctx.root, "tests", "lib", "pg.sh")
    subprocess.run(["sh", lib, "stop", ctx.pgdir], check=True, timeout=120)
    try:
        assert scrape(ctx) == {("pgmail_database_up", ()): 0.0}
    finally:
        subprocess.run(["sh", lib, "start", ctx.pgdir], check=True, timeout=120)
    ctx.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
             " WHERE datname = 'pgmail_test' AND pid <> pg_backend_pid()")
    ctx.reset_mail()
    s3 = scrape(ctx)
    for k, v in s2.items():
        if k[0].endswith("_total"):
            assert s3.get(k, 0) == v, f"{k}: {v} -> {s3.get(k)} after the restart"


def test_metrics_queue_deliveries_and_failed_logins(ctx):
    s0 = scrape(ctx)
    mid = int(ctx.psql("INSERT INTO messages (sender, session_id, body, size) VALUES"
                       " ('alice@example.test', 's', 'x', 1) RETURNING id").strip())
    ctx.psql(f"INSERT INTO queue (message_id, sender, recipient, domain, state, arrived_at)"
             f" VALUES ({mid}, 'alice@example.test', 'a@remote.example', 'remote.example',"
             f" 'deferred', now() - interval '2 hours'),"
             f" ({mid}, 'alice@example.test', 'b@remote.example', 'remote.example', 'queued', now())")
    # What pgmail-relay's SQL_RESULT writes for one delivered and one deferred attempt.
    ctx.psql("INSERT INTO queue_attempts (queue_id, outcome)"
             " SELECT id, CASE state WHEN 'queued' THEN 'delivered' ELSE 'deferred' END FROM queue")
    s1 = scrape(ctx)
    assert val(s1, "pgmail_queue_recipients", "state", "deferred") == 1
    assert val(s1, "pgmail_queue_recipients", "state", "queued") == 1
    assert val(s1, "pgmail_queue_recipients", "state", "held") == 0
    assert 7200 <= val(s1, "pgmail_queue_oldest_deferred_age_seconds") < 7300
    for outcome in ("delivered", "deferred"):
        d = (val(s1, "pgmail_deliveries_total", "outcome", outcome)
             - val(s0, "pgmail_deliveries_total", "outcome", outcome))
        assert d == 1, (outcome, d)
    d = (val(s1, "pgmail_messages_delivered_total", "domain", "example.test")
         - val(s0, "pgmail_messages_delivered_total", "domain", "example.test"))
    assert d == 1, d
    ctx.psql("DELETE FROM queue")  # pruning
    s2 = scrape(ctx)
    assert val(s2, "pgmail_queue_oldest_deferred_age_seconds") == 0
    assert val(s2, "pgmail_deliveries_total", "outcome", "delivered") == val(s1, "pgmail_deliveries_total", "outcome", "delivered")

    # Failed logins, one per attempt, by program.
    with pop3lib.pop3_tcp(ctx) as srv:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        p.user(ALICE)
        try:
            p.pass_("wrong")
            raise AssertionError("a wrong password was accepted")
        except poplib.error_proto:
            pass
        p.quit()
    with ctx.tcp() as srv, harness.Client(srv.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        for _ in range(2):
            r = c.cmd("AUTH PLAIN " + harness.plain_blob(BOB, "wrong"))
            assert r.startswith("535"), r
        c.cmd("QUIT")
    s3 = scrape(ctx)
    for service, n in (("pgmail-pop3d", 1), ("pgmail-smtpd", 2)):
        d = (val(s3, "pgmail_login_failures_total", "service", service)
             - val(s2, "pgmail_login_failures_total", "service", service))
        assert d == n, (service, d, n)


def test_metrics_per_user_only_when_enabled_and_escaped(ctx):
    ctx.psql("INSERT INTO domains (name) VALUES ('q.test');"
             " INSERT INTO accounts (domain_id, address, password_hash)"
             " SELECT id, 'a\"b\\c@q.test', '*' FROM domains WHERE name = 'q.test'")
    try:
        body = request(ctx, GET)[2]
        assert b"address=" not in body and b"user_mailbox" not in body
        body = request(ctx, GET, {"PGMAIL_METRICS_PER_USER": "yes"})[2]
        assert b'pgmail_user_mailbox_messages{address="alice@example.test"} 0' in body, body
        assert b'pgmail_user_mailbox_bytes{address="a\\"b\\\\c@q.test"} 0' in body, body
        assert b'pgmail_mailboxes{domain="q.test"} 1' in body
    finally:
        ctx.psql("DELETE FROM accounts WHERE address LIKE '%@q.test';"
                 " DELETE FROM domains WHERE name = 'q.test'")


def test_metrics_database_down_is_a_value(ctx):
    status, _, body, r = request(ctx, GET, {"PGHOST": "/nonexistent"})
    assert status == 200 and r.rc == 0
    assert samples(body) == {("pgmail_database_up", ()): 0.0}, body


def test_metrics_http_errors(ctx):
    def status(data, env=None):
        st, headers, body, r = request(ctx, data, env)
        return st, headers, body

    assert status(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert status(b"GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert status(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    assert status(b"GET /metrics HTTP/1.0\n\n")[0] == 200  # bare LF, no Host in 1.0
    st, headers, _ = status(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert st == 405 and headers["allow"] == "GET, HEAD"
    assert status(b"DELETE /other HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert status(b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 501
    assert status(b"get /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 501  # case-sensitive
    # HEAD: the headers of the GET, its Content-Length included (RFC 9110 9.3.2), no body.
    raw = harness.pipe_run(ctx, [metrics_bin(ctx)], b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                           ctx.env()).out
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n"), raw
    assert int(re.search(rb"Content-Length: (\d+)", raw).group(1)) > 1000, raw
    for bad in (b"GET /metrics HTTP/1.1\r\n\r\n",                      # no Host
                b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two
                b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n",
                b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",            # space before colon
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obs-fold
                b"GET /metrics HTTP/1.1\r\nHost: x\x01\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n",                 # cut short
                b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # line too long
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 3000 + b"\r\n" * 1
                + b"Y: " + b"y" * 3000 + b"\r\nZ: " + b"y" * 3000 + b"\r\n\r\n",  # head > 8 KiB
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 65 + b"\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"):
        assert status(bad)[0] == 400, bad[:80]
    # Nothing at all: no answer.
    assert harness.pipe_run(ctx, [metrics_bin(ctx)], b"", ctx.env()).out == b""


def test_metrics_read_timeout_over_tcp(ctx):
    srv = harness.TcpServer(ctx, {"PGMAIL_METRICS_TIMEOUT": "1"}, metrics_bin(ctx))
    ctx._servers.append(srv)
    with srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as c:
            t0 = time.monotonic()
            c.sendall(b"GET /metrics HTTP/1.1\r\n")
            time.sleep(0.3)
            c.sendall(b"Host: x\r\n")  # a trickle does not restart the clock
            raw = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                raw += d
            took = time.monotonic() - t0
        assert parse_response(raw)[0] == 408, raw
        assert 0.9 <= took < 3, took
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as c:
            c.sendall(GET)
            raw = b"".join(iter(lambda: c.recv(65536), b""))
        assert parse_response(raw)[0] == 200


def test_metrics_promtool_and_prometheus_scrape(ctx):
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and prometheus, "Debian package prometheus is not installed (make deps)"
    body = request(ctx, GET, {"PGMAIL_METRICS_PER_USER": "yes"})[2]
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r

    srv = harness.TcpServer(ctx, {}, metrics_bin(ctx))
    ctx._servers.append(srv)
    with srv:
        d = tempfile.mkdtemp(prefix="prometheus-", dir=ctx.tmp)
        web = harness.free_port()
        with open(os.path.join(d, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: pgmail\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{srv.port}']\n")
        log = open(os.path.join(d, "log"), "wb")
        p = subprocess.Popen([prometheus, f"--config.file={d}/prometheus.yml",
                              f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{web}"],
                             stdout=log, stderr=log, start_new_session=True)
        try:
            def query(expr):
                url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode(
                    {"query": expr})
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        data = json.load(resp)
                except OSError:
                    return None
                res = data["data"]["result"]
                return float(res[0]["value"][1]) if res else None

            def wait_for(expr, want, timeout=40):
                deadline = time.monotonic() + timeout
                got = None
                while time.monotonic() < deadline:
                    got = query(expr)
                    if got == want:
                        return
                    time.sleep(0.3)
                raise AssertionError(f"Prometheus: {expr} = {got}, expected {want}")

            dom = 'pgmail_messages_received_total{domain="example.test",job="pgmail"}'
            wait_for('up{job="pgmail"}', 1.0)
            wait_for('pgmail_database_up{job="pgmail"}', 1.0)
            base = query(dom) or 0.0
            smtp_send(ctx, [ALICE, BOB], "Subject: scraped\n\nhello prometheus\n")
            wait_for(dom, base + 2)
            wait_for('pgmail_mailbox_messages{domain="example.test"}', 2.0)
            ctx.reset_mail()
            wait_for('pgmail_mailbox_messages{domain="example.test"}', 0.0)
            # A counter that went down would show as a reset.
            wait_for(f"resets({dom}[1m])", 0.0)
            assert query(dom) == base + 2
        finally:
            harness.end_group(p)
            log.close()
