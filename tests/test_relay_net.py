"""relay_net: the network side of pgmail-relay (relay/dns.c, relay/client.c and the TLS
client of shared/tls.c) against real peers: a local unbound (tests/lib/dnsserver.py), the
scripted SMTP server and Postfix's smtp-sink (tests/lib/remote_mx.py), all on loopback.

The parts run without the database and the scheduler through tests/relay_drive.c,
compiled here (as test_db_lost.py compiles its driver): it routes a domain, connects as
the agent does and prints the route and every recipient's outcome.

Timeouts: PGMAIL_RELAY_TEST_TIMEOUT_MS caps every DNS and SMTP client timeout (a test-only
environment variable read by relay_test_timeout_ms, not a configuration key), so that a
silent resolver or a stalled server is given up after a second or two instead of the
RFC 5321 minutes. No timing is asserted.
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import remote_mx  # noqa: E402
from dnsserver import DnsServer  # noqa: E402
from harness import HOST  # noqa: E402
from remote_mx import PostfixMX, ScriptedMX, SmtpSink, TestCA  # noqa: E402

_drivers = {}

ZONES = {
    # preference order and random order among equals
    "order.test": ["MX 30 mx3.order.test.", "MX 10 mx1.order.test.", "MX 20 mx2.order.test."],
    "mx1.order.test": ["A 127.0.0.11"],
    "mx2.order.test": ["AAAA 2001:db8::12", "A 127.0.0.12"],
    "mx3.order.test": ["A 127.0.0.13"],
    "equal.test": [f"MX 10 e{i}.equal.test." for i in range(1, 5)] + ["MX 5 first.equal.test."],
    "first.equal.test": ["A 127.0.0.20"],
    **{f"e{i}.equal.test": [f"A 127.0.0.2{i}"] for i in range(1, 5)},
    "many.test": [f"MX {i} m{i}.many.test." for i in range(1, 8)],
    **{f"m{i}.many.test": [f"A 127.0.0.3{i}"] for i in range(1, 8)},
    # implicit MX
    "aonly.test": ["A 127.0.0.3"],
    "aaaaonly.test": ["AAAA 2001:db8::25"],
    "nothing.test": ["TXT \"no mail here\""],
    "nohost.test": ["MX 10 gone.nohost.test."],
    # RFC 7505
    "null.test": ["MX 0 ."],
    # this host
    "byname.test": [f"MX 10 {HOST}."],
    HOST: ["A 127.0.0.40"],
    "byaddr.test": ["MX 10 mx.byaddr.test."],
    "mx.byaddr.test": ["A 127.0.0.1"],
    "byv6.test": ["MX 10 mx.byv6.test."],
    "mx.byv6.test": ["AAAA ::1"],
    "byown.test": ["MX 10 mx.byown.test."],
    "mx.byown.test": ["A 127.0.0.9"],
    "notself.test": ["MX 10 mx.notself.test."],
    "mx.notself.test": ["A 127.0.0.3"],
    "backup.test": ["MX 10 mx.notself.test.", "MX 20 mx.byaddr.test.", "MX 30 mx3.order.test."],
    "badbackup.test": ["MX 10 mx.x.servfail.test.", "MX 20 mx.byaddr.test."],
    # SMTP peers
    "mx.test": ["MX 10 mx.mx.test."],
    "mx.mx.test": ["A 127.0.0.2"],
    "relay.test": ["A 127.0.0.4"],
    "pf.test": ["MX 10 mx.pf.test."],
    "mx.pf.test": ["A 127.0.0.5"],
}

BODY = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nlast line"


def driver(ctx):
    if ctx.tmp not in _drivers:
        exe = os.path.join(ctx.tmp, "relay_drive")
        root = ctx.root
        srcs = ["tests/relay_drive.c", "relay/dns.c", "relay/client.c", "relay/reply.c",
                "shared/io.c", "shared/tls.c", "shared/tickets.c", "shared/log.c", "shared/config.c",
                "shared/base64.c"]
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if ctx.san else []
        r = subprocess.run(["cc", "-std=c17", "-D_GNU_SOURCE", "-g", "-Wall", "-Wextra", "-Werror",
                            *san, "-Ishared", "-Irelay", "-I/usr/include/postgresql", "-o", exe,
                            *srcs, "-lunbound", "-lsystemd", "-lssl", "-lcrypto"],
                           cwd=root, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
        _drivers[ctx.tmp] = exe
    return _drivers[ctx.tmp]


def body_file(ctx, data=BODY, name="body"):
    path = os.path.join(ctx.tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


class Run:
    """The driver's output: route, hosts [(name, address, pref)], msgs [send rc],
    rcpts {addr: fields} (of the last message, or of the route/connect failure)."""

    def __init__(self, out, err):
        self.out, self.err = out, err
        self.route, self.hosts, self.msgs, self.rcpts, self.per_msg = None, [], [], {}, []
        for line in out.splitlines():
            w = line.split(" ")
            if w[0] == "route":
                self.route = w[1]
            elif w[0] == "host":
                self.hosts.append((w[1], w[2], int(w[3])))
            elif w[0] == "msg":
                self.msgs.append(int(w[2].split("=")[1]))
                self.rcpts = {}
                self.per_msg.append(self.rcpts)
            elif w[0] == "rcpt":
                head, _, reply = line.partition(' reply="')  # reply is last, unescaped
                f = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', head[5 + len(w[1]):]))
                self.rcpts[w[1]] = {k: v.strip('"') for k, v in f.items()}
                self.rcpts[w[1]]["reply"] = reply[:-1]

    def r(self, addr):
        return self.rcpts[addr]

    def __repr__(self):
        return self.out + self.err[-1500:]


def drive(ctx, dns, domain, rcpts, bodies=None, env=None, port=None, timeout_ms=2000):
    e = {"PGMAIL_DNS_RESOLVER": dns.resolver, "PGMAIL_RELAY_TEST_TIMEOUT_MS": timeout_ms}
    if port:
        e["PGMAIL_RELAY_PORT"] = port
    e.update(env or {})
    bodies = bodies or [body_file(ctx)]
    p = subprocess.run([driver(ctx), domain, "sender@example.test", ",".join(rcpts), *bodies],
                       env=ctx.env(e), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"driver rc={p.returncode}: {p.stderr[-1500:]}"
    return Run(p.stdout, p.stderr)


def dns(ctx):
    return DnsServer(ctx.tmp, ZONES)


# ---- DNS ---------------------------------------------------------------------------------

def test_relay_net_mx_preference_order_and_address_limit(ctx):
    with dns(ctx) as d:
        r = drive(ctx, d, "order.test", ["a@order.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.route == "OK", r
        assert r.hosts == [("mx1.order.test", "127.0.0.11", 10),
                           ("mx2.order.test", "2001:db8::12", 20),  # IPv6 first, then IPv4
                           ("mx2.order.test", "127.0.0.12", 20),
                           ("mx3.order.test", "127.0.0.13", 30)], r
        r = drive(ctx, d, "many.test", ["a@many.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert [h[2] for h in r.hosts] == [1, 2, 3, 4, 5], r  # LIM_RELAY_ADDRESSES


def test_relay_net_mx_random_among_equal_preferences(ctx):
    orders = set()
    with dns(ctx) as d:
        for _ in range(12):
            r = drive(ctx, d, "equal.test", ["a@equal.test"], env={"PGMAIL_RELAY_PORT": 1})
            assert r.hosts[0] == ("first.equal.test", "127.0.0.20", 5), r
            assert sorted(h[0] for h in r.hosts[1:]) == [f"e{i}.equal.test" for i in range(1, 5)]
            orders.add(tuple(h[0] for h in r.hosts[1:]))
    # 12 runs of 24 equally likely orders all alike: about 1 in 10^16
    assert len(orders) > 1, orders


def test_relay_net_implicit_mx_only_without_mx_records(ctx):
    with dns(ctx) as d:
        r = drive(ctx, d, "aonly.test", ["a@aonly.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.hosts == [("aonly.test", "127.0.0.3", 0)], r
        r = drive(ctx, d, "aaaaonly.test", ["a@aaaaonly.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.hosts == [("aaaaonly.test", "2001:db8::25", 0)], r
        for dom in ("nothing.test", "nohost.test"):  # no MX and no address / MX without one
            r = drive(ctx, d, dom, ["a@" + dom])
            assert r.route == "NOHOST", r
            assert r.r("a@" + dom)["kind"] == "5", r


def test_relay_net_null_mx_and_nxdomain_bounce(ctx):
    with dns(ctx) as d:
        r = drive(ctx, d, "null.test", ["a@null.test", "b@null.test"])
        assert r.route == "NULLMX", r
        for a in ("a@null.test", "b@null.test"):
            assert (r.r(a)["kind"], r.r(a)["status"]) == ("5", "5.1.10"), r
        r = drive(ctx, d, "nosuch.test", ["a@nosuch.test"])
        assert r.route == "NXDOMAIN", r
        assert (r.r("a@nosuch.test")["kind"], r.r("a@nosuch.test")["status"]) == ("5", "5.1.2")


def test_relay_net_servfail_and_timeout_defer(ctx):
    with dns(ctx) as d:
        for dom in ("x.servfail.test", "x.timeout.test"):
            r = drive(ctx, d, dom, ["a@" + dom], timeout_ms=1500)
            assert r.route == "TEMP", r
            assert (r.r("a@" + dom)["kind"], r.r("a@" + dom)["status"]) == ("4", "4.4.3"), r
        assert "timed out" in r.r("a@x.timeout.test")["reply"], r


def test_relay_net_mx_that_is_this_host_loops(ctx):
    with dns(ctx) as d:
        for dom, env in (("byname.test", {}), ("byaddr.test", {}), ("byv6.test", {}),
                         ("byown.test", {"PGMAIL_OWN_ADDRESSES": "192.0.2.7, 127.0.0.9"})):
            r = drive(ctx, d, dom, ["a@" + dom], env=env)
            assert r.route == "LOOP", (dom, r)
            a = r.r("a@" + dom)
            assert (a["kind"], a["status"]) == ("5", "5.4.6"), r
            assert "loops back to myself" in a["reply"], r
        # 127.0.0.9 is someone else without own_addresses; 127.0.0.3 is never this host
        r = drive(ctx, d, "byown.test", ["a@byown.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.route == "OK", r
        r = drive(ctx, d, "notself.test", ["a@notself.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.hosts == [("mx.notself.test", "127.0.0.3", 10)], r
        # RFC 5321 5.1: we are the backup MX: only the better one is tried
        r = drive(ctx, d, "backup.test", ["a@backup.test"], env={"PGMAIL_RELAY_PORT": 1})
        assert r.hosts == [("mx.notself.test", "127.0.0.3", 10)], r
        # the better MX cannot be looked up just now: defer, do not bounce as a loop
        r = drive(ctx, d, "badbackup.test", ["a@badbackup.test"])
        assert r.route == "TEMP" and r.r("a@badbackup.test")["kind"] == "4", r


# ---- the SMTP client ---------------------------------------------------------------------

def test_relay_net_exact_bytes_pipelined_and_outcomes(ctx):
    rcpt = {"defer@mx.test": "450 4.2.1 mailbox busy", "bad@mx.test": "550 5.1.1 no such user"}
    with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={"rcpt": rcpt}, size=100000,
                                   hold_for_data=True) as mx:
        r = drive(ctx, d, "mx.test", ["ok@mx.test", "defer@mx.test", "bad@mx.test"], port=mx.port)
    assert r.msgs == [0], r
    assert r.r("ok@mx.test")["kind"] == "2" and r.r("ok@mx.test")["status"] == "2.0.0", r
    assert r.r("ok@mx.test")["host"] == "mx.mx.test", r
    assert r.r("ok@mx.test")["address"] == "127.0.0.2", r
    assert (r.r("defer@mx.test")["kind"], r.r("defer@mx.test")["status"]) == ("4", "4.2.1"), r
    assert (r.r("bad@mx.test")["kind"], r.r("bad@mx.test")["status"]) == ("5", "5.1.1"), r
    # the text only: the code is a field of its own (queue.last_code)
    assert (r.r("bad@mx.test")["code"], r.r("bad@mx.test")["reply"]) == \
        ("550", "5.1.1 no such user"), r
    s = mx.sessions[0]
    assert s.pipelined is True, s.raw  # MAIL, RCPTs and DATA before the first reply
    assert s.commands[:6] == ["EHLO " + HOST, f"MAIL FROM:<sender@example.test> SIZE={len(BODY)}",
                              "RCPT TO:<ok@mx.test>", "RCPT TO:<defer@mx.test>",
                              "RCPT TO:<bad@mx.test>", "DATA"], s.commands
    assert s.envelopes[0][1] == ["ok@mx.test"]
    # dot-stuffed, CRLF added at the end, the final dot after it
    assert s.envelopes[0][2] == (b"Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n"
                                 b"middle . dot\r\n..\r\nlast line\r\n"), s.envelopes
    assert remote_mx.unstuff(s.envelopes[0][2]) == BODY + b"\r\n"
    assert s.raw.endswith(b"last line\r\n.\r\nQUIT\r\n"), s.raw[-100:]


def test_relay_net_no_pipelining_helo_fallback(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2", esmtp=False, pipelining=False,
                                   replies={"rcpt": {"bad@mx.test": "550 5.1.1 no"}}) as mx:
        r = drive(ctx, d, "mx.test", ["bad@mx.test", "ok@mx.test"], port=mx.port)
    assert r.r("ok@mx.test")["kind"] == "2" and r.r("bad@mx.test")["kind"] == "5", r
    s = mx.sessions[0]
    assert s.commands[:6] == ["EHLO " + HOST, "HELO " + HOST, "MAIL FROM:<sender@example.test>",
                              "RCPT TO:<bad@mx.test>", "RCPT TO:<ok@mx.test>", "DATA"], s.commands


def test_relay_net_no_recipient_accepted_no_data(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2", pipelining=False,
                                   replies={"rcpt": "550 5.1.1 nobody here"}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test", "b@mx.test"],
                  bodies=[body_file(ctx), body_file(ctx)], port=mx.port)
    assert r.msgs == [0, 0], r
    assert all(x["kind"] == "5" and x["status"] == "5.1.1" for x in r.rcpts.values()), r
    s = mx.sessions[0]
    assert "DATA" not in s.commands and s.commands.count("RSET") == 2, s.commands
    assert s.envelopes == []


def test_relay_net_greeting_refused_or_busy(ctx):
    for greeting, kind in (("554 5.3.2 not taking mail", "5"), ("421 4.3.2 busy", "4")):
        with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={"greeting": greeting}) as mx:
            r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port)
        a = r.r("a@mx.test")
        assert (a["kind"], a["code"], a["status"]) == (kind, greeting[:3], greeting[4:9]), r
        assert mx.sessions[0].commands == [], mx.sessions[0].commands  # nothing was sent


def test_relay_net_multiline_and_long_replies_bounded(ctx):
    rcpt = {"multi@mx.test": "550 5.1.1 first line\n550 5.1.1 second line",
            "long@mx.test": "550 5.7.1 " + "x" * 3000,
            "bytes@mx.test": "550 5.1.1 caf\u00e9\tno \"such\" user"}
    with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={"rcpt": rcpt}) as mx:
        r = drive(ctx, d, "mx.test", ["multi@mx.test", "long@mx.test", "bytes@mx.test",
                                      "ok@mx.test"], port=mx.port)
    assert r.r("multi@mx.test")["reply"] == "5.1.1 first line 5.1.1 second line", r
    long = r.r("long@mx.test")
    assert long["status"] == "5.7.1" and long["reply"].startswith("5.7.1 xxxx"), r
    assert len(long["reply"]) <= 512, len(long["reply"])  # LIM_REMOTE_REPLY
    assert r.r("ok@mx.test")["kind"] == "2", r  # the parser stayed in step
    # only printable ASCII is kept (logs, the queue's text columns, DSNs)
    assert r.r("bytes@mx.test")["reply"] == '5.1.1 caf???no "such" user', r


def test_relay_net_final_dot_552_bounces_all(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={"dot": "552 5.3.4 message too big"}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test", "b@mx.test"], port=mx.port)
    for a in ("a@mx.test", "b@mx.test"):
        assert (r.r(a)["kind"], r.r(a)["code"], r.r(a)["status"]) == ("5", "552", "5.3.4"), r
    assert r.msgs == [0], r


def test_relay_net_final_reply_without_enhanced_code(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={"dot": "451 local problem"}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port)
    assert (r.r("a@mx.test")["kind"], r.r("a@mx.test")["status"]) == ("4", "4.0.0"), r


def test_relay_net_421_mid_transaction_defers_the_rest(ctx):
    rcpt = {"bad@mx.test": "550 5.1.1 no", "c@mx.test": "421 4.3.2 shutting down"}
    with dns(ctx) as d, ScriptedMX("127.0.0.2", pipelining=False, replies={"rcpt": rcpt}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test", "bad@mx.test", "c@mx.test", "d@mx.test"],
                  bodies=[body_file(ctx), body_file(ctx)], port=mx.port)
    assert r.msgs == [-1], r  # the connection is gone: no second message
    assert r.r("bad@mx.test")["kind"] == "5", r  # answered before the 421
    for a in ("a@mx.test", "c@mx.test", "d@mx.test"):
        assert (r.r(a)["kind"], r.r(a)["code"]) == ("4", "421"), r
    assert "DATA" not in mx.sessions[0].commands


def test_relay_net_dropped_connection_defers(ctx):
    for step in ("dot", "data", "mail"):
        with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={step: "drop"}) as mx:
            r = drive(ctx, d, "mx.test", ["a@mx.test", "b@mx.test"], port=mx.port)
        assert r.msgs == [-1], (step, r)
        for a in ("a@mx.test", "b@mx.test"):
            assert r.r(a)["kind"] == "4", (step, r)
            assert "closed" in r.r(a)["reply"], (step, r)


def test_relay_net_stalled_server_times_out_and_defers(ctx):
    for step in ("dot", "rcpt"):
        with dns(ctx) as d, ScriptedMX("127.0.0.2", replies={step: "stall"}) as mx:
            r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port, timeout_ms=1500)
        assert r.msgs == [-1], r
        assert r.r("a@mx.test")["kind"] == "4", r
        assert "timeout" in r.r("a@mx.test")["reply"], r


def test_relay_net_size_over_limit_bounces_without_sending(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2", size=20) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port)
    assert (r.r("a@mx.test")["kind"], r.r("a@mx.test")["status"]) == ("5", "5.3.4"), r
    assert r.msgs == [0], r
    assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands), mx.sessions[0].commands


def test_relay_net_two_messages_over_one_connection(ctx):
    b2 = body_file(ctx, b"Subject: second\r\n\r\nsecond body\r\n", "body2")
    with dns(ctx) as d, ScriptedMX("127.0.0.2") as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], bodies=[body_file(ctx), b2], port=mx.port)
    assert r.msgs == [0, 0], r
    assert all(m["a@mx.test"]["kind"] == "2" for m in r.per_msg), r
    assert len(mx.sessions) == 1, len(mx.sessions)
    assert [e[2][:17] for e in mx.sessions[0].envelopes] == [b"Subject: dots\r\n\r\n",
                                                             b"Subject: second\r\n"]
    assert mx.sessions[0].commands[-1] == "QUIT"


def test_relay_net_unreadable_body_never_sends_the_dot(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2") as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], bodies=["-fail"], port=mx.port)
    assert r.msgs == [-1], r
    assert r.r("a@mx.test")["kind"] == "4", r
    assert mx.sessions[0].envelopes == [], mx.sessions[0].raw


# ---- TLS ---------------------------------------------------------------------------------

def test_relay_net_starttls_when_offered(ctx):
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, ScriptedMX("127.0.0.2", starttls=ca.cert("mx.mx.test")) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port)
    a = r.r("a@mx.test")
    assert a["kind"] == "2", r
    assert a["tls"].startswith("TLSv1.3 with cipher "), r
    s = mx.sessions[0]
    assert s.tls == "TLSv1.3" and s.envelopes, s.commands
    assert s.commands[:3] == ["EHLO " + HOST, "STARTTLS", "EHLO " + HOST], s.commands


def test_relay_net_failed_handshake_retried_in_clear(ctx):
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, ScriptedMX("127.0.0.2", starttls=ca.cert("mx.mx.test"),
                                   replies={"starttls": ["tlsfail", "220 2.0.0 go ahead"]}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port)
    assert r.r("a@mx.test")["kind"] == "2" and r.r("a@mx.test")["tls"] == "", r
    assert len(mx.sessions) == 2, [s.commands for s in mx.sessions]
    assert "STARTTLS" not in mx.sessions[1].commands and mx.sessions[1].envelopes
    assert "event=relay-tls-failed" in r.err and "retry=plaintext" in r.err, r.err


def test_relay_net_encrypt_defers_without_tls(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.2") as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port,
                  env={"PGMAIL_RELAY_TLS": "encrypt"})
    assert (r.r("a@mx.test")["kind"], r.r("a@mx.test")["status"]) == ("4", "4.7.4"), r
    assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands)
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, ScriptedMX("127.0.0.2", starttls=ca.cert("mx.mx.test"),
                                   replies={"starttls": "tlsfail"}) as mx:
        r = drive(ctx, d, "mx.test", ["a@mx.test"], port=mx.port,
                  env={"PGMAIL_RELAY_TLS": "encrypt"})
    assert r.r("a@mx.test")["kind"] == "4", r
    assert len(mx.sessions) == 1 and not mx.sessions[0].envelopes  # no retry in clear


def relayhost_env(ctx, host, port, password="relay-Secret-9"):
    pw = os.path.join(ctx.tmp, "relay-password")
    with open(pw, "w") as f:
        f.write(password + "\n")
    return {"PGMAIL_RELAYHOST": f"{host}:{port}", "PGMAIL_RELAYHOST_CA": TestCA(ctx.tmp).path,
            "PGMAIL_RELAYHOST_USER": "relay-user", "PGMAIL_RELAYHOST_PASSWORD_FILE": pw}


def test_relay_net_relayhost_auth_over_verified_starttls(ctx):
    ca = TestCA(ctx.tmp)
    for host, addr in (("relay.test", "127.0.0.4"), ("[127.0.0.4]", "127.0.0.4")):
        name = host.strip("[]")
        with dns(ctx) as d, ScriptedMX(addr, starttls=ca.cert(name, addr),
                                       auth=("relay-user", "relay-Secret-9")) as mx:
            r = drive(ctx, d, "far.away.test", ["a@far.away.test"],
                      env=relayhost_env(ctx, host, mx.port))
        assert r.route == "OK" and r.hosts == [(name, addr, 0)], r
        assert r.r("a@far.away.test")["kind"] == "2", r
        s = mx.sessions[0]
        assert s.tls and s.auth == ("relay-user", "relay-Secret-9"), s.commands
        assert s.envelopes[0][1] == ["a@far.away.test"]
        assert "relay-Secret-9" not in r.err


def test_relay_net_relayhost_over_ipv6(ctx):
    # ::1 is this host for MX routing, but a relayhost is taken as configured
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, ScriptedMX("::1", starttls=ca.cert("v6.relay.test", "::1"),
                                   auth=("relay-user", "relay-Secret-9")) as mx:
        r = drive(ctx, d, "far.test", ["a@far.test"],
                  env=relayhost_env(ctx, "[::1]", mx.port))
    assert r.hosts == [("::1", "::1", 0)], r
    a = r.r("a@far.test")
    assert (a["kind"], a["address"]) == ("2", "::1") and a["tls"], r
    assert mx.sessions[0].envelopes[0][1] == ["a@far.test"]


def test_relay_net_relayhost_wrong_password_or_certificate_defers(ctx):
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, ScriptedMX("127.0.0.4", starttls=ca.cert("relay.test", "127.0.0.4"),
                                   auth=("relay-user", "relay-Secret-9")) as mx:
        r = drive(ctx, d, "far.test", ["a@far.test"],
                  env=relayhost_env(ctx, "relay.test", mx.port, password="wrong"))
    a = r.r("a@far.test")
    assert (a["kind"], a["code"], a["status"]) == ("4", "535", "4.7.8"), r
    assert not any(c.startswith("MAIL") for c in mx.sessions[0].commands)
    assert mx.sessions[0].auth == ("relay-user", "wrong")
    # the certificate names another host: verification fails, nothing is sent in clear
    with dns(ctx) as d, ScriptedMX("127.0.0.4", starttls=ca.cert("wrong.test", "127.0.0.99"),
                                   auth=("relay-user", "relay-Secret-9")) as mx:
        r = drive(ctx, d, "far.test", ["a@far.test"],
                  env=relayhost_env(ctx, "relay.test", mx.port))
    assert r.r("a@far.test")["kind"] == "4", r
    assert "verification failed" in r.r("a@far.test")["reply"], r
    assert len(mx.sessions) == 1 and not mx.sessions[0].envelopes
    assert mx.sessions[0].commands == ["EHLO " + HOST, "STARTTLS"], mx.sessions[0].commands


def test_relay_net_relayhost_without_starttls_defers(ctx):
    with dns(ctx) as d, ScriptedMX("127.0.0.4") as mx:
        r = drive(ctx, d, "far.test", ["a@far.test"],
                  env=relayhost_env(ctx, "relay.test", mx.port))
    assert (r.r("a@far.test")["kind"], r.r("a@far.test")["status"]) == ("4", "4.7.4"), r
    assert not any(c.startswith(("MAIL", "AUTH")) for c in mx.sessions[0].commands)


# ---- Postfix's smtp-sink -----------------------------------------------------------------

def test_relay_net_delivers_to_postfix_smtp_sink(ctx):
    with dns(ctx) as d, SmtpSink("127.0.0.2") as sink:
        r = drive(ctx, d, "mx.test", ["a@mx.test", "b@mx.test"], port=sink.port)
        assert all(x["kind"] == "2" for x in r.rcpts.values()), r
        msgs = sink.messages()
    assert len(msgs) == 1, msgs
    mail, rcpts, body = msgs[0]
    assert mail.startswith("<sender@example.test>"), mail
    assert rcpts == ["<a@mx.test>", "<b@mx.test>"], rcpts
    assert body == BODY.replace(b"\r\n", b"\n") + b"\n", body


def test_relay_net_delivers_through_postfix_smtpd_over_starttls(ctx):
    ca = TestCA(ctx.tmp)
    with dns(ctx) as d, SmtpSink("127.0.0.6") as sink, \
            PostfixMX("127.0.0.5", domains=["pf.test"], next_hop=f"[127.0.0.6]:{sink.port}",
                      tls=ca.cert("mx.pf.test", "127.0.0.5")) as pf:
        r = drive(ctx, d, "pf.test", ["a@pf.test", "b@pf.test"], port=pf.port)
        for a in ("a@pf.test", "b@pf.test"):
            assert r.r(a)["kind"] == "2" and "queued as" in r.r(a)["reply"], r
            assert r.r(a)["tls"].startswith("TLSv1."), r
        deadline = time.monotonic() + 30  # Postfix relays it on to the sink
        while not sink.messages() and time.monotonic() < deadline:
            time.sleep(0.1)
        msgs = sink.messages()
        log = pf.log()
    assert len(msgs) == 1, log[-2000:]
    mail, rcpts, body = msgs[0]
    assert mail.startswith("<sender@example.test>"), mail
    assert [x.split(" ")[0] for x in rcpts] == ["<a@pf.test>", "<b@pf.test>"], rcpts
    assert "with ESMTPS id" in body.decode(errors="replace"), body[:400]
    assert body.endswith(BODY.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n") + b"\n"), body
