"""outbound_e2e: issue 13's whole outbound path with real clients nobody here wrote.

swaks submits over TCP to pgmail-smtpd (behind systemd-socket-activate --inetd, AUTH PLAIN
as in test_smtp_clients.py); pgmail-relay (PGMAIL_LOG=stderr) routes through a private
unbound (tests/lib/dnsserver.py) to two remote MX hosts on one high port (relay_port): the
scripted server of tests/lib/remote_mx.py on 127.0.0.3 (a.test, with STARTTLS) and
Postfix's smtp-sink on 127.0.0.4 (b.test); nullmx.test has a null MX (RFC 7505) and nx.test
does not exist. Local copies and DSNs are read back over POP3 with Python's poplib (from
pgmail-pop3d) and parsed with Python's email package.

Asserted: the bytes that arrive at each remote (the stored message, trace fields as
pgmail-smtpd wrote them), the queue rows (state, last host, address, TLS, retry times), the
relay's journal-style events, DSNs for bounces and delays (once), none for the null sender,
a remote sender's DSN queued and relayed from the null sender, no open relay, and no lost
mail when the relay is killed while the remote holds its reply to the final dot. Every wait
polls the database or the servers with a deadline; nothing is timed.
"""

import email
import email.policy
import email.utils
import os
import poplib
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import test_relay_queue as rq  # noqa: E402  (Relay, until, queue_message)
from dnsserver import DnsServer, free_port  # noqa: E402
from harness import HOST, PASSWORDS, split_stored  # noqa: E402
from pop3lib import pop3_tcp  # noqa: E402
from remote_mx import ScriptedMX, SmtpSink, TestCA, unstuff  # noqa: E402

ALICE, BOB = "alice@example.test", "bob@example.test"
MX_A, MX_B = "127.0.0.3", "127.0.0.4"
ZONES = {
    "a.test": ["MX 10 mx.a.test."],
    "mx.a.test": [f"A {MX_A}"],
    "b.test": ["MX 10 mx.b.test."],
    "mx.b.test": [f"A {MX_B}"],
    "nullmx.test": ["MX 0 ."],
}
# Short client timeouts and retries, so that nothing waits for RFC 5321's minutes.
RELAY_ENV = {"PGMAIL_RELAY_TEST_TIMEOUT_MS": 3000, "PGMAIL_QUEUE_MIN_BACKOFF": 60,
             "PGMAIL_QUEUE_MAX_BACKOFF": 4000, "PGMAIL_DELAY_WARNING_TIME": 0}
WAIT = 30


def until(what, cond, timeout=WAIT):
    return rq.until(what, cond, timeout, 0.05)


def message(subject, extra=""):
    """A message as swaks reads it (--data @file): dot-leading lines, a long line, 8-bit.
    Without a final line end: swaks sends CRLF . CRLF after the data as given."""
    return (f"From: Alice <{ALICE}>\r\nTo: friends\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n"
            f"Hello,\r\n.leading dot\r\n..two dots\r\n{'y' * 900}\r\n{extra}"
            "Gr\u00fc\u00dfe\r\nthe end").encode()


class World:
    """unbound, the scripted MX and smtp-sink on one port, pgmail-smtpd and pgmail-pop3d
    behind systemd-socket-activate; all registered with ctx (stopped by PID after the
    test, also when it fails). relay() starts pgmail-relay with the world's routes."""

    def __init__(self, ctx, rcpt=None, sink=True):
        self.ctx = ctx
        ca = TestCA(ctx.tmp)
        for attempt in range(5):
            port = free_port(MX_A)
            try:
                self.mx = ScriptedMX(MX_A, port=port, replies={"rcpt": dict(rcpt or {})},
                                     starttls=ca.cert("mx.a.test", MX_A), name="mx.a.test")
                self.mx.start()
            except OSError:
                continue
            ctx._servers.append(self.mx)
            self.sink = None
            if not sink:
                break
            try:
                self.sink = SmtpSink(MX_B, port=port).start()
                ctx._servers.append(self.sink)
                break
            except RuntimeError:
                ctx._servers.remove(self.mx)
                self.mx.stop()
        else:
            raise AssertionError("no port free on both MX addresses")
        self.port = port
        self.dns = DnsServer(ctx.tmp, ZONES)
        ctx._servers.append(self.dns)
        self.dns.start()
        self.smtpd = ctx.tcp()
        self.smtpd.start()
        self.pop3d = pop3_tcp(ctx)
        self.pop3d.start()

    def relay(self, name="relay", **env):
        e = dict(RELAY_ENV, PGMAIL_RELAY_PORT=self.port, PGMAIL_DNS_RESOLVER=self.dns.resolver)
        e.update(env)
        return rq.Relay(self.ctx, e, name)

    def swaks(self, sender, rcpts, data, auth=ALICE, ok=True):
        """swaks submits data (bytes) to pgmail-smtpd; its transcript (str)."""
        path = os.path.join(self.ctx.tmp, "swaks-data")
        with open(path, "wb") as f:
            f.write(data)
        cmd = ["swaks", "--server", "127.0.0.1", "--port", str(self.smtpd.port), "--ehlo",
               "client.example", "--from", sender, "--to", ",".join(rcpts), "--data", "@" + path]
        if auth:
            cmd += ["--auth", "PLAIN", "--auth-user", auth, "--auth-password", PASSWORDS[auth]]
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        if ok:
            assert r.returncode == 0 and "<-  250 2.0.0" in out, out[-2000:]
        return out

    def mx_got(self, rcpt):
        """[(MAIL argument, data unstuffed)] of the transactions that reached the scripted MX
        for rcpt, oldest first (the final dot's reply may still be pending)."""
        return [(m, unstuff(d)) for s in list(self.mx.sessions) for m, rs, d in
                list(s.envelopes) if rcpt in rs]

    def pop3(self, user):
        """Every message in user's mailbox over POP3 (poplib), as bytes with CRLF ends."""
        p = poplib.POP3("127.0.0.1", self.pop3d.port, timeout=20)
        try:
            p.user(user)
            p.pass_(PASSWORDS[user])
            out = [b"\r\n".join(p.retr(i + 1)[1]) + b"\r\n" for i in range(p.stat()[0])]
            p.quit()
        finally:
            p.close()
        return out


def q(ctx, sql):
    return ctx.psql(sql).strip()


def rows(ctx):
    """{recipient: queue row} with the columns the tests look at."""
    cols = ["recipient", "message_id", "sender", "state", "attempts", "coalesce(dsn, '-')",
            "warned", "coalesce(last_code, 0)", "coalesce(last_status, '')",
            "coalesce(last_host, '')", "coalesce(last_address, '')", "coalesce(last_tls, '')",
            "finished_at IS NOT NULL",
            "coalesce(extract(epoch FROM next_attempt - last_attempt), -1)"]
    names = ["rcpt", "message", "sender", "state", "attempts", "dsn", "warned", "code",
             "status", "host", "address", "tls", "finished", "retry_in"]
    out = {}
    for line in q(ctx, f"SELECT {', '.join(cols)} FROM queue ORDER BY id").splitlines():
        r = dict(zip(names, line.split("|")))
        r["message"], r["attempts"], r["code"] = int(r["message"]), int(r["attempts"]), \
            int(r["code"])
        r["retry_in"] = float(r["retry_in"])
        out[r["rcpt"]] = r
    return out


def state_is(ctx, want):
    return lambda: {k: v["state"] for k, v in rows(ctx).items()} == want


def parse_dsn(raw):
    """(message, text, [per-recipient field dicts], headers part) of a DSN read over POP3
    or at a remote, checked for the multipart/report structure."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report", raw[:600]
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == \
        ["text/plain", "message/delivery-status", "text/rfc822-headers"], parts
    groups = [dict(g.items()) for g in parts[1].get_payload()]
    assert groups[0]["Reporting-MTA"] == f"dns; {HOST}", groups[0]
    return msg, parts[0].get_content().replace("\r\n", "\n"), groups[1:], parts[2]


def dsns(w, user):
    """The DSNs in user's mailbox (read over POP3), parsed."""
    return [parse_dsn(raw) for raw in w.pop3(user) if raw.startswith(b"Return-Path: <>\r\n")]


def events(log, event):
    """The relay's log lines of one event, as {field: value} (value unquoted)."""
    out = []
    for line in log.splitlines():
        if f"event={event} " in line:
            out.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)})
    return out


# ---------------------------------------------------------------------------------------
# Tests

def test_submit_local_and_two_remotes(ctx):
    w = World(ctx)
    r = w.relay()
    data = message("to the world")
    w.swaks(ALICE, [BOB, "rita@a.test", "sam@b.test"], data)
    until("both remotes delivered", state_is(ctx, {"rita@a.test": "delivered",
                                                   "sam@b.test": "delivered"}))
    # The local copy, over POP3: the stored message with pgmail-smtpd's trace fields.
    local = w.pop3(BOB)
    assert len(local) == 1, local
    stored = local[0]
    rp, received, original = split_stored(stored)
    assert rp == f"Return-Path: <{ALICE}>".encode(), rp
    assert received.startswith(b"Received: from client.example (127.0.0.1)\r\n"
                               b"\tby mx.example.test (pgmail) with ESMTPA id "), received
    assert original == data + b"\r\n", (original[-200:], data[-200:])
    # What arrived at each remote is that message, byte for byte (dot-unstuffed), without
    # its Return-Path line (RFC 5321 4.4: the final delivery adds its own) and with the
    # Received: field pgmail-smtpd wrote.
    relayed = received + original
    got = w.mx_got("rita@a.test")
    assert len(got) == 1 and got[0][0].startswith(f"FROM:<{ALICE}>"), got
    assert got[0][1] == relayed, (got[0][1][:300], relayed[:300])
    assert w.mx.sessions[-1].tls and w.mx.sessions[-1].tls.startswith("TLSv1"), "no STARTTLS"
    sunk = w.sink.messages()
    assert len(sunk) == 1, sunk
    mail, rcpts, body = sunk[0]
    assert mail.startswith(f"<{ALICE}>") and rcpts == ["<sam@b.test>"], sunk
    assert body == relayed.replace(b"\r\n", b"\n"), body[:300]
    # The queue rows: where and how each went.
    rs = rows(ctx)
    mid = rs["rita@a.test"]["message"]
    a, b = rs["rita@a.test"], rs["sam@b.test"]
    assert (a["attempts"], a["code"], a["host"], a["address"], a["finished"]) == \
        (1, 250, "mx.a.test", MX_A, "t"), a
    assert a["tls"].startswith("TLSv1."), a
    assert (b["attempts"], b["code"], b["host"], b["address"], b["tls"], b["finished"]) == \
        (1, 250, "mx.b.test", MX_B, "", "t"), b  # smtp-sink offers no STARTTLS
    # The journal-style events.
    ev = {e["rcpt"]: e for e in events(r.log(), "relay-delivered")}
    assert set(ev) == {"rita@a.test", "sam@b.test"}, r.log()[-2000:]
    assert ev["rita@a.test"]["queue"] == str(mid) and ev["rita@a.test"]["mx"] == "mx.a.test"
    assert ev["rita@a.test"]["address"] == MX_A and ev["rita@a.test"]["tls"].startswith("TLSv1")
    assert ev["sam@b.test"]["queue"] == str(mid) and ev["sam@b.test"]["mx"] == "mx.b.test"
    # bob's copy keeps the message; nothing else is stored.
    assert ctx.message_count() == 1 and ctx.mailbox_count() == 1


def test_remote_550_gives_a_dsn(ctx):
    w = World(ctx, rcpt={"nobody@a.test": "550 5.1.1 <nobody@a.test>: no such user here"})
    w.relay()
    w.swaks(ALICE, ["nobody@a.test", "sam@b.test"], message("doomed in part"))
    until("the outcomes", state_is(ctx, {"nobody@a.test": "bounced",
                                         "sam@b.test": "delivered"}))
    until("the DSN", lambda: ctx.mailbox_count(ALICE) == 1)
    raw = w.pop3(ALICE)
    assert len(raw) == 1 and raw[0].startswith(b"Return-Path: <>\r\n"), raw[:1]
    msg, text, groups, headers = parse_dsn(raw[0])
    assert msg["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{HOST}", msg["From"]
    assert "Your email to nobody@a.test was not delivered." in text, text
    assert ("The remote server mx.a.test said: 550 5.1.1 <nobody@a.test>: no such user"
            " here") in text, text
    assert len(groups) == 1, groups
    g = groups[0]
    assert g["Final-Recipient"] == "rfc822; nobody@a.test", g
    assert (g["Action"], g["Status"], g["Remote-MTA"]) == ("failed", "5.1.1", "dns; mx.a.test"), g
    assert g["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@a.test>: no such user here", g
    hdrs = headers.get_payload(decode=True)
    assert b"\r\nSubject: doomed in part\r\n" in hdrs and b"the end" not in hdrs, hdrs
    # The DSN is stored from the null sender; the other recipient got the message.
    dsn_rows = [m for m in ctx.messages() if m.recipients == [ALICE]]
    assert len(dsn_rows) == 1 and dsn_rows[0].sender == "", dsn_rows
    assert len(w.sink.messages()) == 1
    assert w.mx_got("nobody@a.test") == []
    until("the DSN marked written", lambda: rows(ctx)["nobody@a.test"]["dsn"] == "-")


def test_451_then_flush_delivers_once(ctx):
    w = World(ctx, rcpt={"later@a.test": "451 4.2.0 greylisted, try later"}, sink=False)
    r = w.relay()
    w.swaks(ALICE, ["later@a.test"], message("greylisted"))
    until("the deferral", state_is(ctx, {"later@a.test": "deferred"}))
    d = rows(ctx)["later@a.test"]
    assert (d["attempts"], d["code"], d["status"], d["finished"]) == (1, 451, "4.2.0", "f"), d
    # A young message waits queue_min_backoff (60 s here), +-10 %.
    assert 60 * 0.9 - 0.01 <= d["retry_in"] <= 60 * 1.1 + 0.01, d
    ev = events(r.log(), "relay-deferred")
    assert (ev[0]["rcpt"], ev[0]["code"], ev[0]["reply"]) == \
        ("later@a.test", "451", "4.2.0 greylisted, try later"), ev
    # The remote reply once, after its code (the relay used to store "451 " in the text too).
    listed = ctx.ctl("queue", "list").out.decode().rstrip("\n").split("\t")
    assert listed[3:5] == ["later@a.test", "deferred"], listed
    assert listed[7] == "451 4.2.0 greylisted, try later", listed
    w.mx.replies["rcpt"].pop("later@a.test")
    ctx.ctl("queue", "flush", str(d["message"]))
    until("delivery after the flush", state_is(ctx, {"later@a.test": "delivered"}))
    got = w.mx_got("later@a.test")
    assert len(got) == 1, got
    d = rows(ctx)["later@a.test"]
    assert d["attempts"] == 2 and d["code"] == 250, d
    shown = ctx.ctl("queue", "show", str(d["message"])).out.decode().splitlines()
    assert shown[-2].endswith(" deferred: 451 4.2.0 greylisted, try later from mx.a.test"
                              f" [{MX_A}], {d['tls']}"), shown
    assert shown[-1].endswith(f" delivered: 250 2.0.0 queued from mx.a.test [{MX_A}],"
                              f" {d['tls']}"), shown
    assert ctx.message_count() == 0  # delivered: the message is no longer needed


def test_delay_warning_once(ctx):
    w = World(ctx, rcpt={"slow@a.test": "451 4.3.0 not now"}, sink=False)
    w.relay(PGMAIL_DELAY_WARNING_TIME=1)
    w.swaks(ALICE, ["slow@a.test"], message("slow one"))
    until("the warning written", lambda: rows(ctx).get("slow@a.test", {}).get("warned") == "t"
          and rows(ctx)["slow@a.test"]["dsn"] == "-")
    got = dsns(w, ALICE)
    assert len(got) == 1, got
    msg, text, groups, headers = got[0]
    assert "has not been delivered yet" in text and "slow@a.test" in text, text
    g = groups[0]
    assert (g["Final-Recipient"], g["Action"], g["Status"]) == \
        ("rfc822; slow@a.test", "delayed", "4.3.0"), g
    assert g["Diagnostic-Code"] == "smtp; 451 4.3.0 not now", g
    # Retried until queue_lifetime (5 days) after arrival.
    until_ = email.utils.parsedate_to_datetime(g["Will-Retry-Until"]).timestamp()
    arrived = float(q(ctx, "SELECT extract(epoch FROM date_trunc('second', arrived_at))"
                           " FROM queue"))
    assert abs(until_ - (arrived + 5 * 86400)) <= 1, (g, arrived)
    # The jobs run again (warnings at most once a second): still one warning.
    time.sleep(2.5)
    assert ctx.mailbox_count(ALICE) == 1
    assert rows(ctx)["slow@a.test"]["state"] == "deferred"


def test_null_mx_and_nxdomain_bounce_at_once(ctx):
    w = World(ctx, sink=False)
    r = w.relay()
    # First from the null sender: bounced, and no DSN to anyone.
    w.swaks("<>", ["quiet@nx.test"], message("from nobody"))
    until("the null sender's bounce", state_is(ctx, {"quiet@nx.test": "bounced"}))
    assert rows(ctx)["quiet@nx.test"]["dsn"] == "-"
    w.swaks(ALICE, ["x@nullmx.test", "y@nx.test"], message("nowhere"))
    until("the bounces", lambda: {k: v["state"] for k, v in rows(ctx).items()} == {
        "quiet@nx.test": "bounced", "x@nullmx.test": "bounced", "y@nx.test": "bounced"})
    rs = rows(ctx)
    assert (rs["x@nullmx.test"]["status"], rs["y@nx.test"]["status"]) == ("5.1.10", "5.1.2"), rs
    assert rs["x@nullmx.test"]["attempts"] == 1 and rs["y@nx.test"]["attempts"] == 1, rs
    until("the DSNs written", lambda: all(v["dsn"] == "-" for v in rows(ctx).values()))
    got = {g["Final-Recipient"]: g for _, _, gs, _ in dsns(w, ALICE) for g in gs}
    assert set(got) == {"rfc822; x@nullmx.test", "rfc822; y@nx.test"}, got
    assert got["rfc822; x@nullmx.test"]["Status"] == "5.1.10", got
    assert got["rfc822; y@nx.test"]["Status"] == "5.1.2", got
    assert all(g["Action"] == "failed" for g in got.values()), got
    # Only alice's DSNs are stored: nothing queued for, or stored about, the null sender.
    assert q(ctx, "SELECT count(*) FROM queue WHERE sender = '' AND recipient <> "
                  "'quiet@nx.test'") == "0"
    assert {m.sender for m in ctx.messages()} == {""}
    assert all(m.recipients == [ALICE] for m in ctx.messages())
    assert len(events(r.log(), "relay-bounced")) == 3
    assert w.mx.sessions == []


def test_unauthenticated_relay_refused(ctx):
    w = World(ctx, sink=False)
    out = w.swaks("someone@remote.example", ["x@a.test"], message("relay?"), auth=None,
                  ok=False)
    assert "<** 554 5.7.1" in out, out[-1500:]
    assert "<-  250 2.0.0" not in out, out[-1500:]
    assert q(ctx, "SELECT count(*) FROM queue") == "0" and ctx.message_count() == 0
    assert "reason=relay auth=no" in w.smtpd.log()


def test_sigkill_while_the_remote_holds_the_dot(ctx):
    w = World(ctx, sink=False)
    w.mx.replies["dot"] = "stall"
    r1 = w.relay("relay1", PGMAIL_RELAY_LEASE=2, PGMAIL_RELAY_TEST_TIMEOUT_MS=20000)
    w.swaks(ALICE, ["kept@a.test"], message("kill me"))
    until("the final dot at the remote", lambda: w.mx_got("kept@a.test"))
    r1.kill()
    w.mx.replies.pop("dot")
    assert rows(ctx)["kept@a.test"]["state"] == "queued"
    w.relay("relay2", PGMAIL_RELAY_LEASE=2)
    until("delivery after the restart", state_is(ctx, {"kept@a.test": "delivered"}))
    got = w.mx_got("kept@a.test")
    assert len(got) >= 2, got  # the held one, then the one answered 250
    assert all(g == got[0] for g in got), "a copy arrived damaged"
    d = rows(ctx)["kept@a.test"]
    assert d["finished"] == "t" and d["code"] == 250, d


def test_remote_senders_dsn_is_relayed(ctx):
    w = World(ctx, sink=False)
    w.relay()
    body = message("from afar").replace(b"From: Alice <alice@example.test>",
                                        b"From: Carl <carl@a.test>")
    mid = rq.queue_message(ctx, "carl@a.test", ["x@nullmx.test"], body)
    until("the DSN delivered", lambda: rows(ctx).get("carl@a.test", {}).get("state")
          == "delivered")
    rs = rows(ctx)
    assert rs["x@nullmx.test"]["state"] == "bounced" and rs["x@nullmx.test"]["dsn"] == "-", rs
    assert rs["carl@a.test"]["sender"] == "" and rs["carl@a.test"]["message"] != mid, rs
    got = w.mx_got("carl@a.test")
    assert len(got) == 1 and got[0][0].startswith("FROM:<>"), got
    raw = got[0][1]
    assert not raw.startswith(b"Return-Path:"), raw[:200]  # sent as composed
    msg, text, groups, headers = parse_dsn(raw)
    assert msg["To"].addresses[0].addr_spec == "carl@a.test", msg["To"]
    assert "Your email to x@nullmx.test was not delivered." in text, text
    assert [(g["Final-Recipient"], g["Action"], g["Status"]) for g in groups] == \
        [("rfc822; x@nullmx.test", "failed", "5.1.10")], groups
    assert b"Subject: from afar" in headers.get_payload(decode=True)
    until("both messages freed", lambda: ctx.message_count() == 0)
