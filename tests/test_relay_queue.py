"""test_relay_queue.py - pgmail-relay's queue against scripted SMTP servers on loopback.

The relay (relay/pgmail-relay, or build-san/ in the sanitizer pass) runs as in production,
in the foreground with PGMAIL_LOG=stderr, against the test database. The remote MX hosts
are python3-aiosmtpd servers on 127.13.x.y and relay_port, scripted per test: a reply per
recipient, a reply to the final dot, a final dot held until the test lets go. The routes
to them are served by a local unbound (tests/lib/dnsserver.py) once the real resolver is
there, and until then read by the stand-in resolver from PGMAIL_TEST_HOSTS (both are
given; see dns_for). Queue rows are written with SQL (a messages row and one queue row per
recipient), as pgmail-smtpd will write them.

What is asserted is what the issue promises: the bytes arrive intact, the outcome of each
recipient (delivered, deferred with its retry time, bounced with a DSN owed), LISTEN/NOTIFY
wakes an idle relay, and no mail is lost when the relay is killed (SIGKILL) before, during
or after the remote 250, stopped (SIGTERM) mid-delivery, or when PostgreSQL restarts;
two relays on one database never attempt one recipient at once. No timing assertions:
every wait is "until it happened", with a generous deadline.
"""

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import harness

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP
except ImportError:  # Debian's package, from a Python that is not Debian's own
    sys.path.append("/usr/lib/python3/dist-packages")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

WAIT = 40  # seconds: the deadline of every "until" below


def until(what, cond, timeout=WAIT, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def lit(s):
    """A SQL string literal (test data only)."""
    return "'" + s.replace("'", "''") + "'"


def reset_queue(ctx):
    ctx.psql("TRUNCATE queue, queue_attempts RESTART IDENTITY")


def queue_messages(ctx, msgs):
    """For each (sender, rcpts, body): a messages row and one queue row per recipient, each
    message in a transaction (and so a NOTIFY) of its own, all through one psql; the ids."""
    sql = ""
    for sender, rcpts, body in msgs:
        arr = "ARRAY[" + ",".join(lit(r) for r in rcpts) + "]::text[]"
        sql += (
            "WITH m AS (INSERT INTO messages (sender, size, session_id, body)"
            f" VALUES ({lit(sender)}, {len(body)}, 'test', decode('{body.hex()}', 'hex'))"
            " RETURNING id),"
            " q AS (INSERT INTO queue (message_id, sender, recipient, domain)"
            f" SELECT m.id, {lit(sender)}, r, lower(split_part(r, '@', 2))"
            f" FROM m, unnest({arr}) r)"
            " SELECT id FROM m;\n")
    # On stdin: a body in hex can be longer than one argument may be.
    r = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", ctx.pgdir, "-U",
                        "postgres", "-d", "pgmail_test"], input=sql.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return [int(x) for x in r.stdout.decode().split()]


def queue_message(ctx, sender, rcpts, body):
    """queue_messages for one message; its id."""
    return queue_messages(ctx, [(sender, rcpts, body)])[0]


def rows(ctx, where="true"):
    """{recipient: dict of the queue row} (several rows per recipient: the last)."""
    cols = ["id", "message_id", "recipient", "state", "attempts", "dsn",
            "coalesce(last_code, 0)", "coalesce(last_status, '')",
            "(lease_until IS NOT NULL)", "(finished_at IS NOT NULL)",
            "coalesce(extract(epoch FROM next_attempt - last_attempt)::int, -1)"]
    names = ["id", "message", "rcpt", "state", "attempts", "dsn", "code", "status", "leased",
             "finished", "retry_in"]
    out = {}
    for line in ctx.psql(f"SELECT {', '.join(cols)} FROM queue WHERE {where} ORDER BY id"
                         ).splitlines():
        r = dict(zip(names, line.split("|")))
        for k in ("id", "message", "attempts", "code", "retry_in"):
            r[k] = int(r[k])
        r["leased"] = r["leased"] == "t"
        r["finished"] = r["finished"] == "t"
        out[r["rcpt"]] = r
    return out


def states(ctx):
    return {k: v["state"] for k, v in rows(ctx).items()}


def body_of(n=0, size=2000):
    """A message with dot-leading lines (RFC 5321 4.5.2 transparency), CRLF line ends."""
    lines = [f"Subject: relay test {n}", f"Message-ID: <{n}.{random.random()}@example.test>",
             "", ".leading dot", "..two dots", "."]
    while sum(len(x) + 2 for x in lines) < size:
        lines.append("x" * 70)
    return ("\r\n".join(lines) + "\r\n").encode()


# ---------------------------------------------------------------------------------------
# Scripted SMTP servers

class Script:
    """The behaviour and the record of one scripted server (aiosmtpd handler hooks)."""

    def __init__(self):
        self.rcpt_reply = {}       # recipient -> reply line instead of 250
        self.dot_reply = "250 2.0.0 OK queued"
        self.hold = threading.Event()  # cleared: the final dot's reply waits for release()
        self.hold.set()
        self.at_dot = threading.Event()  # set when a final dot has arrived
        self.lock = threading.Lock()
        self.received = []         # (mail_from, [rcpts], content) per final dot
        self.inflight = {}         # recipient -> transactions holding it now
        self.max_inflight = {}     # recipient -> most at once
        self.open = {}             # session id -> recipients of its open transaction
        self.delay = 0.0           # seconds before answering a final dot
        self.tx = set()            # sessions inside a transaction (MAIL .. its end)
        self.shared = None         # {"now", "max"}: transactions over all servers of a World
        self.max_tx = 0
        self.mail_options = {}     # recipient -> the MAIL FROM parameters it came with

    def _tx(self, sid, opening):
        # under self.lock; a session's transaction counts once, until it ends
        if opening == (sid in self.tx):
            return
        (self.tx.add if opening else self.tx.discard)(sid)
        self.max_tx = max(self.max_tx, len(self.tx))
        if self.shared is not None:
            with self.shared["lock"]:
                self.shared["now"] += 1 if opening else -1
                self.shared["max"] = max(self.shared["max"], self.shared["now"])

    def hold_dot(self):
        self.hold.clear()

    def release(self):
        self.hold.set()

    def _end(self, sid):
        with self.lock:
            self._tx(sid, False)
            for r in self.open.pop(sid, []):
                self.inflight[r] -= 1

    def session_gone(self, session):
        self._end(id(session))

    async def handle_MAIL(self, server, session, envelope, address, options):
        self._end(id(session))
        with self.lock:
            self._tx(id(session), True)
        envelope.mail_from = address
        envelope.mail_options = [o.upper() for o in options]
        return "250 2.1.0 OK"

    async def handle_RSET(self, server, session, envelope):
        self._end(id(session))
        return "250 2.0.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_reply.get(address)
        if reply:
            return reply
        with self.lock:
            self.open.setdefault(id(session), []).append(address)
            self.inflight[address] = self.inflight.get(address, 0) + 1
            self.max_inflight[address] = max(self.max_inflight.get(address, 0),
                                             self.inflight[address])
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  bytes(envelope.content)))
            for r in envelope.rcpt_tos:
                self.mail_options[r] = list(envelope.mail_options)
        self.at_dot.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        while not self.hold.is_set():
            await asyncio.sleep(0.02)
        self._end(id(session))
        return self.dot_reply

    def got(self, rcpt):
        """The contents that reached rcpt, in order."""
        with self.lock:
            return [c for _, rs, c in self.received if rcpt in rs]


class _SMTP(SMTP):
    def connection_lost(self, error):
        try:
            self.event_handler.session_gone(self.session)
        finally:
            super().connection_lost(error)


class _Controller(Controller):
    def factory(self):
        return _SMTP(self.handler, **self.SMTP_kwargs)


class Server:
    """A scripted server on addr:port (stopped by ctx.stop_all after the test)."""

    def __init__(self, ctx, addr, port):
        self.script = Script()
        self.addr = addr
        self.ctl = _Controller(self.script, hostname=addr, port=port)
        self.ctl.start()
        ctx._servers.append(self)

    def stop(self):
        self.script.release()
        try:
            self.ctl.stop()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------
# The relay

class Relay:
    """pgmail-relay in its own process group, its stderr in a file (stopped by ctx.stop_all
    after the test, also when it fails)."""

    def __init__(self, ctx, env, name="relay"):
        self.ctx = ctx
        self.env = env
        self.bin = os.path.join(ctx.root, "build-san" if ctx.san else "", "relay",
                                "pgmail-relay")
        assert os.path.exists(self.bin), f"{self.bin} is not built"
        fd, self.log_path = tempfile.mkstemp(prefix=name + "-", suffix=".log", dir=ctx.tmp)
        self.proc = subprocess.Popen([self.bin], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                     env=ctx.env(env), start_new_session=True)
        os.close(fd)
        ctx._servers.append(self)
        until("the relay to be ready", lambda: "relay-ready" in self.log() or self.dead())
        assert not self.dead(), f"relay exited {self.proc.returncode}: {self.log()[-800:]}"

    def log(self):
        return harness.read_log(self.log_path)

    def dead(self):
        return self.proc.poll() is not None

    def kill(self):
        """SIGKILL the relay and its agents (its process group), as a crash would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def term(self, timeout=30):
        """SIGTERM to the main process only (KillMode=mixed); its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return self.proc.returncode

    def stop(self):
        if not self.dead():
            try:
                self.term(20)
            except subprocess.TimeoutExpired:
                pass
        harness.end_group(self.proc)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # agents left behind, if any
        except ProcessLookupError:
            pass
        if self in self.ctx._servers:
            self.ctx._servers.remove(self)
        if self.ctx.san:
            self.ctx.check_san(self.log(), "pgmail-relay")


def dns_for(ctx, routes):
    """Once relay/dns.c (the real resolver) and tests/lib/dnsserver.py are merged: a local
    unbound serving routes ({domain: [addresses in the order to try]}: one address as the
    domain's own A record, an implicit MX; several as MX hosts of rising preference), and
    the dns_resolver value for it. None before then (the stand-in resolver of
    relay/stub_net.c reads PGMAIL_TEST_HOSTS instead)."""
    lib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    if not os.path.exists(os.path.join(lib, "dnsserver.py")):
        return None
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from dnsserver import DnsServer
    zones = {}
    for d, addrs in routes.items():
        if len(addrs) == 1:
            zones[d] = [f"A {addrs[0]}"]
            continue
        zones[d] = [f"MX {10 * (i + 1)} mx{i + 1}.{d}." for i in range(len(addrs))]
        for i, a in enumerate(addrs):
            zones[f"mx{i + 1}.{d}"] = [f"A {a}"]
    dns = DnsServer(ctx.tmp, zones)
    ctx._servers.append(dns)  # stopped after the test, with the rest
    dns.start()
    r = dns.resolver
    return r() if callable(r) else r


class World:
    """Scripted servers for some .test domains on one port, the routes to them, and the
    relay's environment."""

    def __init__(self, ctx, domains, **env):
        reset_queue(ctx)
        self.ctx = ctx
        net = random.randint(1, 250)
        self.servers = {}
        self.shared = {"lock": threading.Lock(), "now": 0, "max": 0}
        for attempt in range(5):
            port = harness.free_port()
            try:
                for i, d in enumerate(domains):
                    self.servers[d] = Server(ctx, f"127.13.{net}.{i + 3}", port)
                    self.servers[d].script.shared = self.shared
                break
            except Exception:
                for s in self.servers.values():
                    s.stop()
                self.servers = {}
                if attempt == 4:
                    raise
        self.routes = {d: [s.addr] for d, s in self.servers.items()}
        self.resolver = None
        self.env = {"PGMAIL_RELAY_PORT": port, "PGMAIL_DELAY_WARNING_TIME": 0}
        self.env.update(env)

    def script(self, domain):
        return self.servers[domain].script

    def relay(self, name="relay", **env):
        """A relay with the world's routes (set self.routes before the first one)."""
        if self.resolver is None:
            self.resolver = dns_for(self.ctx, self.routes) or ""
        e = dict(self.env)
        e["PGMAIL_TEST_HOSTS"] = ",".join(f"{d}={'+'.join(a)}" for d, a in self.routes.items())
        if self.resolver:
            e["PGMAIL_DNS_RESOLVER"] = self.resolver
        e.update(env)
        return Relay(self.ctx, e, name)


def attempts_of(ctx, queue_id):
    return ctx.psql(f"SELECT outcome, coalesce(code, 0), coalesce(host, ''),"
                    f" coalesce(address, '') FROM queue_attempts WHERE queue_id = {queue_id}"
                    " ORDER BY id").splitlines()


# ---------------------------------------------------------------------------------------
# Tests

def test_delivers_intact(ctx):
    w = World(ctx, ["a.test"])
    body = body_of(1, 70000)  # more than one chunk of the body reader
    mid = queue_message(ctx, "alice@example.test", ["bob@a.test", "carol@a.test"], body)
    w.relay()
    until("delivery", lambda: set(states(ctx).values()) == {"delivered"})
    s = w.script("a.test")
    assert len(s.received) == 1, s.received
    frm, rcpts, content = s.received[0]
    assert frm == "alice@example.test" and sorted(rcpts) == ["bob@a.test", "carol@a.test"]
    assert content == body, "the bytes that arrived differ from the stored message"
    for r in rows(ctx).values():
        assert r["attempts"] == 1 and r["finished"] and not r["leased"] and r["code"] == 250, r
        assert r["dsn"] == "", r
        att = attempts_of(ctx, r["id"])
        assert len(att) == 1 and att[0].startswith("delivered|250|a.test|127.13."), att
    # Nothing needs the message any more: its bytes are gone, the history stays.
    assert ctx.psql(f"SELECT count(*) FROM messages WHERE id = {mid}").strip() == "0"


def test_8bitmime_declared(ctx):
    # RFC 6152: a body with octets outside US-ASCII goes with BODY=8BITMIME to a server that
    # announced 8BITMIME (aiosmtpd does); a 7-bit one goes without. Both arrive intact.
    w = World(ctx, ["a.test"])
    seven = body_of(40)
    eight = body_of(41).replace(b"Subject: relay test 41", "Subject: Grüße".encode())
    queue_message(ctx, "alice@example.test", ["seven@a.test"], seven)
    queue_message(ctx, "alice@example.test", ["eight@a.test"], eight)
    w.relay()
    until("delivery", lambda: set(states(ctx).values()) == {"delivered"})
    s = w.script("a.test")
    assert s.got("seven@a.test") == [seven] and s.got("eight@a.test") == [eight], s.received
    by_rcpt = s.mail_options
    assert "BODY=8BITMIME" in by_rcpt["eight@a.test"], by_rcpt
    assert not any(o.startswith("BODY=") for o in by_rcpt["seven@a.test"]), by_rcpt
    assert any(o.startswith("SIZE=") for o in by_rcpt["seven@a.test"]), by_rcpt


def test_listen_wakes_idle_relay(ctx):
    # The relay starts with an empty queue: its next timed wake-up is an hour away
    # (scheduler.c IDLE_MS), so only the NOTIFY of the new row can make it deliver.
    w = World(ctx, ["a.test"])
    r = w.relay()
    until("the relay to go idle", lambda: "relay-ready" in r.log())
    time.sleep(0.5)
    queue_message(ctx, "alice@example.test", ["bob@a.test"], body_of(2))
    until("delivery after NOTIFY", lambda: states(ctx) == {"bob@a.test": "delivered"})
    assert len(w.script("a.test").received) == 1


def test_4xx_defers_with_backoff(ctx):
    w = World(ctx, ["a.test"])
    w.script("a.test").rcpt_reply["later@a.test"] = "451 4.2.0 try again later"
    queue_message(ctx, "alice@example.test", ["later@a.test", "now@a.test"], body_of(3))
    r = w.relay()
    until("outcomes", lambda: states(ctx) == {"later@a.test": "deferred",
                                              "now@a.test": "delivered"})
    d = rows(ctx)["later@a.test"]
    assert d["attempts"] == 1 and d["code"] == 451 and d["status"] == "4.2.0", d
    assert not d["leased"] and not d["finished"] and d["dsn"] == "", d
    # A new message's age is below queue_min_backoff (300 s): 300 s, +-10 % jitter.
    assert 270 <= d["retry_in"] <= 330, d
    assert "relay-deferred" in r.log() and "rcpt=later@a.test" in r.log()
    # The deferred recipient still needs the message.
    assert ctx.message_count() == 1


def test_5xx_bounces_and_owes_dsn(ctx):
    w = World(ctx, ["a.test"])
    w.script("a.test").rcpt_reply["nobody@a.test"] = "550 5.1.1 no such user here"
    mid = queue_message(ctx, "alice@example.test", ["nobody@a.test"], body_of(4))
    queue_message(ctx, "", ["nobody@a.test"], body_of(5))  # a null sender: never a DSN
    r = w.relay()
    until("bounces",
          lambda: ctx.psql("SELECT count(*) FROM queue WHERE state = 'bounced'").strip() == "2")
    got = ctx.psql("SELECT sender, state, last_code, last_status, coalesce(dsn, '-'),"
                   " finished_at IS NOT NULL FROM queue WHERE message_id <= 2 ORDER BY id"
                   ).splitlines()
    assert got[0].startswith("alice@example.test|bounced|550|5.1.1|"), got
    assert got[1] == "|bounced|550|5.1.1|-|t", got
    if not has_store_dsn(ctx):
        # Until migrations/008 is there, the DSN stays owed (and the job says why).
        assert got[0].split("|")[4] == "failed", got
        until("the DSN job to try", lambda: "relay-dsn-failed" in r.log())
    else:
        # The DSN is written into alice's mailbox (a local sender), from the null sender,
        # naming the recipient; the rows owe nothing more and the original's bytes go.
        until("the DSN", lambda: ctx.mailbox_count("alice@example.test") == 1)
        until("the DSN marked written",
              lambda: ctx.psql("SELECT count(*) FROM queue WHERE dsn IS NOT NULL").strip()
              == "0")
        dsn = [m for m in ctx.messages() if m.recipients == ["alice@example.test"]]
        assert len(dsn) == 1 and dsn[0].sender == "", dsn
        assert b"nobody@a.test" in dsn[0].body and b"5.1.1" in dsn[0].body, dsn[0].body[:2000]
        assert ctx.psql(f"SELECT count(*) FROM messages WHERE id = {mid}").strip() == "0"
    assert "relay-bounced" in r.log() and "status=5.1.1" in r.log()


def has_store_dsn(ctx):
    """Whether migrations/008 (pgmail_store_dsn, the DSN engineer's) is in the schema."""
    return ctx.psql("SELECT count(*) FROM pg_proc WHERE proname = 'pgmail_store_dsn'"
                    ).strip() != "0"


def _kill_case(ctx, when):
    """SIGKILL the relay at a chosen point of one delivery; a restarted relay (lease 2 s)
    must deliver the recipient: at least once, never lost."""
    w = World(ctx, ["a.test"], PGMAIL_RELAY_LEASE=2)
    s = w.script("a.test")
    body = body_of(6)
    queue_message(ctx, "alice@example.test", ["bob@a.test"], body)
    locker = None
    if when in ("before-250", "after-250"):
        s.hold_dot()
    r = w.relay("relay1")
    try:
        if when == "before-250":
            until("the final dot", s.at_dot.is_set)
            r.kill()
            s.release()
        elif when == "after-250":
            # The remote says 250 while the outcome cannot be written (the test holds the
            # row's lock): the relay dies knowing of the 250, before recording it.
            until("the final dot", s.at_dot.is_set)
            locker = subprocess.Popen(
                ["psql", "-XAtq", "-h", ctx.pgdir, "-U", "postgres", "-d", "pgmail_test"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            locker.stdin.write("BEGIN; SELECT id FROM queue FOR UPDATE;\n")
            locker.stdin.flush()
            locker.stdout.readline()
            s.release()
            until("the outcome to wait for the lock", lambda: ctx.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgmail-relay'"
                " AND wait_event_type = 'Lock'").strip() == "1")
            r.kill()
            # The outcome is one autocommit statement (migrations/009) that the server
            # already holds: let it never commit, as when the database goes down with it.
            ctx.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'pgmail-relay' AND wait_event_type = 'Lock'")
            locker.stdin.write("ROLLBACK;\n\\q\n")
            locker.stdin.flush()
            locker.wait(10)
        else:  # after the outcome is recorded
            until("delivery", lambda: states(ctx) == {"bob@a.test": "delivered"})
            r.kill()
    finally:
        if locker and locker.poll() is None:
            locker.kill()
            locker.wait()
    w.relay("relay2")
    until("delivery after the restart",
          lambda: states(ctx) == {"bob@a.test": "delivered"})
    got = s.got("bob@a.test")
    assert all(c == body for c in got), "a copy arrived damaged"
    if when == "recorded":
        assert len(got) == 1, f"delivered again after it was recorded: {len(got)}"
    else:
        assert len(got) >= 2, f"the restarted relay did not deliver it again: {len(got)}"
    assert rows(ctx)["bob@a.test"]["finished"]


def test_sigkill_before_250(ctx):
    _kill_case(ctx, "before-250")


def test_sigkill_after_250_before_recording(ctx):
    _kill_case(ctx, "after-250")


def test_sigkill_after_recording(ctx):
    _kill_case(ctx, "recorded")


def test_sigterm_finishes_current_message(ctx):
    w = World(ctx, ["a.test"])
    s = w.script("a.test")
    s.hold_dot()
    ids = [queue_message(ctx, "alice@example.test", [f"r{i}@a.test"], body_of(10 + i))
           for i in range(3)]
    r = w.relay()
    until("the first final dot", s.at_dot.is_set)
    r.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert not r.dead(), "the relay stopped without finishing the message in progress"
    s.release()
    r.proc.wait(30)
    assert r.proc.returncode == 0, r.log()[-800:]
    st = rows(ctx)
    assert st["r0@a.test"]["state"] == "delivered", st
    for i in (1, 2):  # not started: released, no attempt counted
        x = st[f"r{i}@a.test"]
        assert x["state"] == "queued" and x["attempts"] == 0 and not x["leased"], x
    assert len(s.got("r0@a.test")) == 1
    w.relay("relay2")
    until("the rest", lambda: set(states(ctx).values()) == {"delivered"})
    for i in range(3):
        assert len(s.got(f"r{i}@a.test")) == 1, (i, s.received)
    assert ids


def test_two_relays_never_attempt_one_recipient_at_once(ctx):
    # Both relays run first and the messages come one transaction at a time, so that each
    # NOTIFY wakes both and they race for the same rows; the servers take a while over
    # each message so that agents overlap.
    domains = [f"d{i}.test" for i in range(6)]
    w = World(ctx, domains, PGMAIL_RELAY_DESTINATION_CONCURRENCY=2)
    for d in domains:
        w.script(d).delay = 0.05
    r1 = w.relay("relay1")
    r2 = w.relay("relay2")
    rcpts = []
    for i in range(30):
        d = domains[i % len(domains)]
        rs = [f"u{i}@{d}", f"v{i}@{d}"]
        rcpts += rs
        queue_message(ctx, "alice@example.test", rs, body_of(100 + i, 500))
    until("every recipient", lambda: set(states(ctx).values()) == {"delivered"}, timeout=80)
    for rc in rcpts:
        s = w.script(rc.split("@")[1])
        assert len(s.got(rc)) >= 1, rc
        assert s.max_inflight.get(rc, 0) == 1, (rc, s.max_inflight.get(rc))
    # Both took part (else the test proved nothing about two relays).
    assert "relay-agent" in r1.log() and "relay-agent" in r2.log()


def test_concurrency_limits(ctx):
    # relay_destination_concurrency 1 and relay_max_connections 2: never two transactions
    # at one destination, never three in all, though work for every destination arrives
    # while agents run (and the limit of 2 in all is reached).
    domains = ["a.test", "b.test", "c.test"]
    w = World(ctx, domains, PGMAIL_RELAY_DESTINATION_CONCURRENCY=1,
              PGMAIL_RELAY_MAX_CONNECTIONS=2)
    for d in domains:
        w.script(d).delay = 0.3
    w.relay()

    def burst(first):
        queue_messages(ctx, [("alice@example.test", [f"x{i}@{domains[i % 3]}"],
                              body_of(200 + i, 300)) for i in range(first, first + 9)])

    burst(0)
    until("a transaction in flight", lambda: w.shared["now"] > 0)
    burst(9)
    until("every recipient", lambda: set(states(ctx).values()) == {"delivered"}, timeout=80)
    for d in domains:
        assert w.script(d).max_tx == 1, (d, w.script(d).max_tx)
    assert w.shared["max"] == 2, w.shared["max"]


def test_postgres_restart(ctx):
    w = World(ctx, ["a.test"])
    r = w.relay()
    queue_message(ctx, "alice@example.test", ["one@a.test"], body_of(20))
    until("first delivery", lambda: states(ctx) == {"one@a.test": "delivered"})
    lib = os.path.join(ctx.root, "tests", "lib", "pg.sh")
    subprocess.run(["sh", lib, "stop", ctx.pgdir], check=True, timeout=120)
    try:
        time.sleep(1)
        assert not r.dead(), "the relay exited when PostgreSQL went away"
    finally:
        subprocess.run(["sh", lib, "start", ctx.pgdir], check=True, timeout=120)
    queue_message(ctx, "alice@example.test", ["two@a.test"], body_of(21))
    until("delivery after the restart",
          lambda: states(ctx) == {"one@a.test": "delivered", "two@a.test": "delivered"})
    assert not r.dead()
    assert "relay-db-failed" in r.log() and "relay-db-back" in r.log(), r.log()[-1500:]


def test_arguments(ctx):
    bin = os.path.join(ctx.root, "build-san" if ctx.san else "", "relay", "pgmail-relay")
    for args, want in ((["--help"], "delivers pgmail's outbound queue"),
                       (["extra"], "no arguments expected")):
        p = subprocess.run([bin, *args], capture_output=True, text=True, timeout=30,
                           env=ctx.env())
        assert p.returncode == 2 and want in p.stderr and "usage:" in p.stderr, p


def test_sd_notify_ready_watchdog_stopping(ctx):
    # systemd's side of Type=notify, played by a datagram socket: READY=1 once LISTEN is
    # in place, WATCHDOG=1 from the loop (WATCHDOG_USEC), STOPPING=1 on SIGTERM.
    import socket
    reset_queue(ctx)
    path = os.path.join(ctx.tmp, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(WAIT)
    try:
        r = Relay(ctx, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": 300000,
                        "PGMAIL_DELAY_WARNING_TIME": 0})
        got = []
        while got.count("WATCHDOG=1") < 3:
            got += sock.recv(4096).decode().split("\n")
        # (pings may come before READY: the watchdog runs from the start, while the
        # database may still be out of reach)
        assert got.count("READY=1") == 1, got
        assert r.term() == 0, r.log()[-500:]
        rest = []
        sock.settimeout(1)
        try:
            while True:
                rest += sock.recv(4096).decode().split("\n")
        except socket.timeout:
            pass
        assert "STOPPING=1" in rest, rest
    finally:
        sock.close()


def test_next_host_when_one_is_unreachable(ctx):
    # RFC 5321 5.1: the first address refuses the connection (nothing listens there); the
    # agent goes on to the next one within the same attempt.
    w = World(ctx, ["a.test"])
    good = w.servers["a.test"].addr
    dead = good.rsplit(".", 1)[0] + ".250"
    w.routes["a.test"] = [dead, good]
    queue_message(ctx, "alice@example.test", ["bob@a.test"], body_of(30))
    r = w.relay()
    until("delivery", lambda: states(ctx) == {"bob@a.test": "delivered"})
    att = attempts_of(ctx, rows(ctx)["bob@a.test"]["id"])
    assert len(att) == 1 and att[0].startswith("delivered|250|") and \
        att[0].endswith(f"a.test|{good}"), att
    assert "relay-connect-failed" in r.log() and dead in r.log()


def test_421_defers_the_rest_of_the_batch(ctx):
    # A 421 ends the connection: its recipient and the messages after it in the batch are
    # deferred with that reply, none bounced, none lost.
    w = World(ctx, ["a.test"])
    w.script("a.test").rcpt_reply["busy@a.test"] = "421 4.3.2 shutting down"
    queue_message(ctx, "alice@example.test", ["busy@a.test"], body_of(31))
    queue_message(ctx, "alice@example.test", ["next@a.test"], body_of(32))
    w.relay()
    until("outcomes", lambda: states(ctx) == {"busy@a.test": "deferred",
                                              "next@a.test": "deferred"})
    for rc, x in rows(ctx).items():
        assert x["attempts"] == 1 and x["code"] == 421 and x["status"] == "4.3.2", x
    assert w.script("a.test").got("next@a.test") == []


def test_lifetime_delay_warning_and_history(ctx):
    # Past queue_lifetime a 4xx bounces (and owes a DSN); a deferred row older than
    # delay_warning_time owes a delay warning; finished rows older than the history
    # (LIM_QUEUE_HISTORY_DAYS, 7) are pruned, younger ones kept.
    w = World(ctx, ["a.test"])
    s = w.script("a.test")
    s.rcpt_reply["old@a.test"] = "451 4.4.1 later"
    s.rcpt_reply["slow@a.test"] = "452 4.2.2 mailbox full"
    queue_message(ctx, "alice@example.test", ["old@a.test"], body_of(33))
    queue_message(ctx, "alice@example.test", ["slow@a.test"], body_of(34))
    ctx.psql("UPDATE queue SET arrived_at = now() - interval '2 hours'"
             " WHERE recipient = 'old@a.test'")
    ctx.psql("INSERT INTO queue (message_id, sender, recipient, domain, state, finished_at)"
             " VALUES (999998, '', 'gone@a.test', 'a.test', 'delivered',"
             "         now() - interval '8 days'),"
             "        (999999, '', 'kept@a.test', 'a.test', 'delivered',"
             "         now() - interval '6 days')")
    r = w.relay(PGMAIL_QUEUE_LIFETIME=3600, PGMAIL_DELAY_WARNING_TIME=2)
    until("the lifetime bounce", lambda: rows(ctx).get("old@a.test", {}).get("state")
          == "bounced")
    old = rows(ctx)["old@a.test"]
    assert old["code"] == 451 and old["finished"], old
    assert old["dsn"] == "failed" or ctx.mailbox_count("alice@example.test") >= 1, old
    # The warning falls due two seconds after arrival: the relay wakes for it by itself.
    until("the delay warning", lambda: ctx.psql(
        "SELECT dsn IS NOT DISTINCT FROM 'delayed' OR warned FROM queue"
        " WHERE recipient = 'slow@a.test'").strip() == "t")
    assert rows(ctx)["slow@a.test"]["state"] == "deferred"
    left = sorted(rows(ctx, "message_id >= 999998"))
    assert left == ["kept@a.test"], left
    assert "relay-bounced" in r.log()
