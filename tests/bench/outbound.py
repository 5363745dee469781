#!/usr/bin/env python3
"""outbound.py - pgmail's outbound path (submission + pgmail-relay) against Postfix relaying,
both delivering to the same smtp-sinks, in one run.

    python3 tests/bench/outbound.py                 # make bench (after bench.py)
    python3 tests/bench/outbound.py --quick         # make bench-quick; make test: 3 messages
    python3 tests/bench/outbound.py --postfix-only  # the Postfix half alone (no relay needed)

What runs, all on loopback, free high ports, under one temporary directory, stopped by PID:
  * Postfix's smtp-sink, one per MX address 127.0.1.1 .. 127.0.1.100 (never 127.0.0.1:
    pgmail-relay counts that as itself), all on one port, with running counters (-c): the
    bench timestamps every "." they report. Nothing is written to disk by the sinks.
  * unbound (tests/bench/bench_unbound.py) with MX records dN.example -> mx.dN.example ->
    127.0.1.(N+1) for N = 0..99. (.example, not .test: libunbound answers NXDOMAIN for .test
    from a built-in local zone unless its user lifts it, as relay/dns.c does; .example needs
    nothing. tests/lib/dnsserver.py serves .test only: switch both when moving to it.)
  * pgmail: PostgreSQL (tests/lib/pg.sh), pgmail-smtpd behind systemd-socket-activate
    --inetd with PGMAIL_REQUIRE_AUTH=yes (port 587 as its unit runs it) twice: straight to
    PostgreSQL ("pgmail"), and through PgBouncer in transaction pooling mode
    ("pgmail+PgBouncer", the deployment the README advises); and one relay/pgmail-relay in
    the foreground with relay_port = the sinks' port and dns_resolver = that unbound,
    straight to PostgreSQL in both cases (a long-running service that keeps its
    connections). Submitters AUTH (PLAIN, sha512crypt hashes) before MAIL; their accounts
    have no outbound limit (pgmailctl user limit ADDRESS none). The relay's limits are its
    defaults (5 connections per destination, 20 in all).
  * Postfix 3.7: a private instance (postfix -c DIR), smtpd on 127.0.0.1, accepting for
    relay from mynetworks = 127.0.0.0/8 (no SASL: Postfix would need Dovecot or Cyrus for it,
    so Postfix's submitter does not pay the password check pgmail's does), otherwise its
    defaults (20 connections per destination, 100 smtp processes, connection cache on
    demand). Postfix's SMTP client resolves through the system resolver only, which cannot
    be pointed at a port other than 53: transport_maps name each domain's MX address
    (dN.example smtp:[127.0.1.N+1]:PORT), so Postfix does no DNS lookup at all while pgmail
    asks unbound (MX, then A and AAAA) for every destination. That favours Postfix slightly.
Figures (RESULT lines as bench.py prints them; ratio > 1: pgmail better):
  outbound_rate_1dest      messages/s, first submission to last arrival at the sink, all
                           to one domain (4 submitters, 10 messages per session)
  outbound_rate_100dest    the same spread over 100 domains with 100 MX addresses
  outbound_latency_idle_ms median of single messages sent to an idle system: from the 250
                           that ends DATA to the "." at the sink
  ..._pgbouncer            the same with pgmail-smtpd through PgBouncer
Both systems are durable (PostgreSQL with fsync and synchronous_commit on; Postfix's queue
files fsync'd) and deliver in clear (smtp-sink offers no STARTTLS). Runs alternate pgmail,
Postfix, pgmail, ... after one warm-up each; figures are medians.
Options of bench.py (--quick, --runs, --keep, --json, --bin, --limit), and --messages N,
--singles N, --postfix-only. Without relay/pgmail-relay built, the Postfix half runs alone
and the pgmail values are nan.
"""

import os
import re
import selectors
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (the shared machinery of tests/bench/)
from bench_unbound import Unbound  # noqa: E402

NDEST = 100
SUBMITTERS = 4
PER_SESSION = 10
MX_NET = "127.0.1."  # MX hosts 127.0.1.1 .. 127.0.1.NDEST
LOCAL = B.DOMAIN  # the submitting accounts' domain (bench.test)
SINK_TIMEOUT = 180  # seconds to wait for every message of a run at the sinks (quick: 60)

PACKAGES = ["postfix", "postgresql", "pgbouncer", "unbound", "systemd"]


def remote_domain(i):
    return f"d{i}.example"


def mx_address(i):
    return f"{MX_NET}{i + 1}"


class Sinks:
    """smtp-sink on each MX address; arrivals are the times "mesg=N" rose (-c counters)."""

    def __init__(self, bench, ndest):
        self.bench = bench
        self.port = self._free_port(ndest)
        self.procs = []
        self.arrivals = []  # time.monotonic() of every message's "." at any sink
        self.cond = threading.Condition()
        self.sel = selectors.DefaultSelector()
        for i in range(ndest):
            user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required as root
            p = subprocess.Popen(["smtp-sink"] + user + ["-c", "-h", f"mx.{remote_domain(i)}",
                                                        f"{mx_address(i)}:{self.port}", "256"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
            self.procs.append(p)
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, {"buf": b"", "mesg": 0})
        bench.started.append(self)
        self.stop_flag = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        for i in range(ndest):
            B.wait_until(lambda: self._accepts(mx_address(i)), 10, f"smtp-sink on {mx_address(i)}")

    @staticmethod
    def _free_port(ndest):
        """A port free on every MX address (tried on the first and last)."""
        while True:
            s = socket.socket()
            s.bind((mx_address(0), 0))
            port = s.getsockname()[1]
            s.close()
            try:
                t = socket.socket()
                t.bind((mx_address(ndest - 1), port))
                t.close()
                return port
            except OSError:
                continue

    def _accepts(self, addr):
        try:
            socket.create_connection((addr, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _read(self):
        while not self.stop_flag:
            for key, _ in self.sel.select(timeout=0.2):
                now = time.monotonic()
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not data:
                    self.sel.unregister(key.fileobj)
                    continue
                st = key.data
                st["buf"] += data
                *lines, st["buf"] = re.split(rb"[\r\n]", st["buf"])  # -c ends lines with \r
                for line in lines:
                    m = re.search(rb"mesg=(\d+)", line)
                    if m and int(m.group(1)) > st["mesg"]:
                        with self.cond:
                            self.arrivals.extend([now] * (int(m.group(1)) - st["mesg"]))
                            self.cond.notify_all()
                        st["mesg"] = int(m.group(1))

    def count(self):
        with self.cond:
            return len(self.arrivals)

    def wait_for(self, n, timeout=SINK_TIMEOUT):
        """The time of the n-th arrival (counting from the start), waiting for it."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout):
                raise B.BenchError(f"only {len(self.arrivals)} of {n} messages reached the "
                                   f"sinks within {timeout} s")
            return self.arrivals[n - 1]

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        self.stop_flag = True
        for p in self.procs:
            B.end_process(p)
        self.thread.join(timeout=5)


class PostfixRelay:
    """A private Postfix that relays for 127.0.0.0/8 to the sinks (transport_maps)."""

    def __init__(self, bench, sink_port, ndest):
        self.bench = bench
        t = bench.tmp
        self.dir = os.path.join(t, "postfix-relay")
        for d in (self.dir, os.path.join(self.dir, "queue"), os.path.join(self.dir, "data")):
            os.makedirs(d, exist_ok=True)
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        self.port = B.free_port(bench.ports)
        with open(os.path.join(self.dir, "transport"), "w") as f:
            for i in range(ndest):
                f.write(f"{remote_domain(i)} smtp:[{mx_address(i)}]:{sink_port}\n")
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(f"""# pgmail outbound bench: a private Postfix relaying to smtp-sinks (postfix -c {self.dir})
{B.postfix_paths(self.dir)}myhostname = relay.{LOCAL}
mydomain = {LOCAL}
myorigin = {LOCAL}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost =
transport_maps = texthash:{self.dir}/transport
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
message_size_limit = 26214400
biff = no
maillog_file = {self.dir}/postfix.log
maillog_file_prefixes = {t}
syslog_name = postfix-outbound-bench
""")
        B.write_master_cf(self.dir, self.port)
        B.run(["postfix", "-c", self.dir, "start"], timeout=60)
        bench.started.append(self)
        B.wait_until(lambda: B.listening(self.port), 20, "Postfix to listen")

    master = B.Postfix.master
    pids = B.Postfix.pids
    stop = B.Postfix.stop


class Relay:
    """relay/pgmail-relay in the foreground (as its unit runs it, without systemd)."""

    def __init__(self, bench, path, env):
        self.log = open(os.path.join(bench.tmp, "logs", "pgmail-relay.log"), "ab")
        self.proc = subprocess.Popen([path], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        bench.started.append(self)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise B.BenchError(f"pgmail-relay exited at once ({self.proc.returncode}); "
                               f"see {self.log.name} (--keep)")

    def pids(self):
        return B.tree([self.proc.pid])

    def stop(self):
        B.end_process(self.proc, timeout=30)
        self.log.close()


class Outbound(B.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.messages = args.messages or (3 if self.quick else 400)
        self.singles = args.singles or (2 if self.quick else 15)
        self.postfix_only = args.postfix_only
        self.relay_path = os.path.join(self.bin, "relay", "pgmail-relay")
        self.body = B.message(B.MSG_SIZE, "outbound-bench")
        self.submitted = 0  # messages accepted by either system, one recipient each

    # -- set-up ------------------------------------------------------------------------

    def setup(self):
        if not self.postfix_only and not os.access(self.relay_path, os.X_OK):
            log(f"relay/pgmail-relay is not built under {self.bin}: the Postfix half only")
            self.notes.append("pgmail-relay not built: pgmail figures are nan")
            self.postfix_only = True
        progs = [] if self.postfix_only else ["smtp/pgmail-smtpd", "admin/pgmailctl"]
        self.prepare(progs, PACKAGES, ("smtp-sink", "postfix", "unbound",
                                       "systemd-socket-activate"), "pgmail-outbound-")
        log(f"starting {NDEST} smtp-sinks on {mx_address(0)}..{mx_address(NDEST - 1)}")
        self.sinks = Sinks(self, NDEST)
        records = []
        for i in range(NDEST):
            records += [f"{remote_domain(i)}. MX 10 mx.{remote_domain(i)}.",
                        f"mx.{remote_domain(i)}. A {mx_address(i)}"]
        self.dns = Unbound(self.tmp, records, B.free_port(self.ports))
        self.started.append(self.dns)
        log(f"unbound on {self.dns.address}; Postfix relay instance")
        self.postfix = PostfixRelay(self, self.sinks.port, NDEST)
        if not self.postfix_only:
            self.setup_pgmail()

    def setup_pgmail(self):
        log("starting PostgreSQL, pgmail-smtpd (submission, AUTH required), pgmail-relay")
        self.pg = B.Postgres(self)
        self.new_db("pgmail")
        sha = {"PGMAIL_PASSWORD_SCHEME": "sha512crypt"}
        self.senders = [f"s{i:02d}@{LOCAL}" for i in range(SUBMITTERS)]
        for s in self.senders:
            self.ctl("user", "add", s, stdin=B.PASSWORD + "\n", env_extra=sha)
            # The per-account outbound limit (500 remote recipients an hour by default)
            # would stop the bench; Postfix's side has none either.
            self.ctl("user", "limit", s, "none")
        self.pgb = B.PgBouncer(self, "transaction")
        self.smtpd = {}
        for key, via in (("pgmail", None), ("pgbouncer", self.pgb)):
            env = self.pgmail_env(via=via)
            env["PGMAIL_REQUIRE_AUTH"] = "yes"
            self.smtpd[key] = B.Spawner(self, f"smtpd-submission-{key}",
                                        [os.path.join(self.bin, "smtp", "pgmail-smtpd")], env)
        renv = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NOTIFY_"))}
        # The relay straight to PostgreSQL, as the README advises: a long-running service
        # that keeps its connections (the scheduler LISTENs, which no transaction pooler
        # carries), and sharing PgBouncer's server connections with the handlers would make
        # PgBouncer 1.18 SET application_name at nearly every hand-over (measured: two
        # statements more per message).
        renv.update(self.pgmail_env())
        renv.update({"PGMAIL_RELAY_PORT": str(self.sinks.port),
                     "PGMAIL_DNS_RESOLVER": self.dns.address})
        self.relay = Relay(self, self.relay_path, renv)

    # -- load ----------------------------------------------------------------------------

    def submit(self, port, auth, rcpts, conc=SUBMITTERS, per=PER_SESSION):
        """Send one message to each of rcpts: conc sessions at a time, per messages each.
        Returns the time of the last 250 (time.monotonic())."""
        chunks = [rcpts[i:i + per] for i in range(0, len(rcpts), per)]
        lock = threading.Lock()
        errors = []
        last = [0.0]

        def worker(w):
            sender = self.senders[w % len(self.senders)] if auth else f"s{w:02d}@{LOCAL}"
            while True:
                with lock:
                    if not chunks or errors:
                        return
                    chunk = chunks.pop(0)
                try:
                    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.test",
                                     timeout=60)
                    if auth:
                        s.login(sender, B.PASSWORD)
                    for r in chunk:
                        refused = s.sendmail(sender, [r], self.body)
                        if refused:
                            raise smtplib.SMTPException(f"refused {refused}")
                    t = time.monotonic()
                    s.quit()
                    with lock:
                        last[0] = max(last[0], t)
                except (OSError, smtplib.SMTPException) as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    return

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise B.BenchError(f"submission to 127.0.0.1:{port} failed: {errors[0][:300]}")
        self.submitted += len(rcpts)
        return last[0]

    def contenders(self):
        out = [("postfix", "Postfix", self.postfix.port, False, self.postfix.pids, lambda: [])]
        if not self.postfix_only:
            out[:0] = [
                ("pgmail", "pgmail", self.smtpd["pgmail"].port, True,
                 lambda: self.smtpd["pgmail"].pids() + self.relay.pids(), self.pg.pids),
                ("pgbouncer", "pgmail+PgBouncer", self.smtpd["pgbouncer"].port, True,
                 lambda: self.smtpd["pgbouncer"].pids() + self.relay.pids(),
                 lambda: self.pg.pids() + self.pgb.pids())]
        return out

    def rate_system(self, key, label, port, auth, server, db, ndest, n):
        seq = [0]

        def batch(count):
            seq[0] += 1
            return [f"r{seq[0]}x{i}@{remote_domain(i % ndest)}" for i in range(count)]

        def once(count, counted=True):
            rcpts = batch(count)

            def fn():
                base = self.sinks.count()
                t0 = time.monotonic()
                accepted = self.submit(port, auth, rcpts)
                end = self.sinks.wait_for(base + count, 60 if self.quick else SINK_TIMEOUT)
                if counted:  # which side is the bottleneck: submission or delivery
                    log(f"    {label}: {count} accepted in {accepted - t0:.2f} s "
                        f"({count / max(accepted - t0, 1e-9):.1f}/s), all at the sinks after "
                        f"{end - t0:.2f} s")
                return count, end - t0, 0
            return self.measure(fn, server() if counted else [], db() if counted else [])

        def warm():
            once(max(SUBMITTERS, min(n // 4, 40)), counted=False)

        return B.System(key, label, lambda: once(n), warm)

    def latency_system(self, key, label, port, auth, server, db):
        def once():
            lat = []
            for i in range(self.singles):
                time.sleep(0.3)  # idle: queues empty, nothing in flight
                base = self.sinks.count()
                t250 = self.submit(port, auth, [f"l{i}@{remote_domain(0)}"], conc=1, per=1)
                lat.append((self.sinks.wait_for(base + 1, 60) - t250) * 1000)
            return lat

        def fn():
            got["lat"] = once()
            return len(got["lat"]), 1.0, 0
        got = {}

        def sample():
            s = self.measure(fn, server(), db())
            s.value = statistics.median(got["lat"])
            return s
        return B.System(key, label, sample, None)

    def nan_system(self, key):
        s = B.System(key, key, None)
        nan = float("nan")
        s.samples = [B.Sample(nan, 1, nan, nan, nan, nan)]
        return s

    def figures(self):
        for ndest in (1, NDEST):
            fig = f"outbound_rate_{ndest}dest"
            n = self.messages
            systems = [self.rate_system(k, f"{lb} ({ndest} dest.)", p, a, sv, db, ndest, n)
                       for k, lb, p, a, sv, db in self.contenders()]
            s = self.compete(f"{fig}: {n} messages (msgs/s, submission to the sinks)", systems)
            self.results_of(fig, "msgs/s", "rate", s)
        systems = [self.latency_system(k, lb, p, a, sv, db)
                   for k, lb, p, a, sv, db in self.contenders()]
        s = self.compete(f"outbound_latency_idle_ms: {self.singles} single messages (ms, the "
                         f"250 to the sink, median)", systems)
        self.results_of("outbound_latency_idle_ms", "ms", "time", s)
        time.sleep(1)
        if self.sinks.count() != self.submitted:  # a run waits only for its own count
            raise B.BenchError(f"{self.submitted} messages accepted, {self.sinks.count()} "
                               f"arrived at the sinks (duplicates?)")
        self.notes.append(
            "outbound: Postfix's SMTP client takes each domain's MX address from transport_maps "
            "(no DNS: its resolver cannot use another port than 53); pgmail-relay asks unbound "
            "for MX and addresses. Postfix accepts from mynetworks without AUTH; pgmail's "
            "submitters AUTH (sha512crypt). Both durable, both in clear. _pgbouncer: "
            "pgmail-smtpd through PgBouncer (transaction pooling); pgmail-relay always "
            "straight to PostgreSQL.")

    def results_of(self, fig, unit, kind, s):
        """RESULT lines of one figure: pgmail direct, and through PgBouncer (_pgbouncer)."""
        for key, suffix in (("pgmail", ""), ("pgbouncer", "_pgbouncer")):
            self.result(fig + suffix, unit, kind, s.get(key) or self.nan_system(key),
                        s["postfix"], "Postfix relaying")

    main = B.Bench.setup_and_figures


log = B.log


def main():
    ap = B.arg_parser("pgmail outbound (submission + pgmail-relay) against Postfix relaying",
                      600, 200)
    ap.add_argument("--messages", type=int, help="messages per measured run (400; quick 3)")
    ap.add_argument("--singles", type=int, help="single messages for the latency (15; quick 2)")
    ap.add_argument("--postfix-only", action="store_true",
                    help="only the Postfix half (pgmail's figures are nan)")
    args = ap.parse_args()
    B.run_bench(Outbound(args), args)


if __name__ == "__main__":
    main()
