#!/usr/bin/env python3
"""soak.py - load and soak test of pgmail: parallel SMTP and POP3 sessions for minutes, then
a slowloris round, against a PostgreSQL cluster of its own; loopback only.

    python3 tests/soak/soak.py [--minutes N] [--smtp N] [--pop3 N] [--idle N]
                               [--idle-timeout S] [--rss-limit MIB] [--keep] [--seed N]

(`make soak` runs it with the defaults, 3 minutes, where the Makefile has that target.)
It starts a private cluster with
tests/lib/pg.sh in a temporary directory under .run/, migrates it with admin/pgmailctl,
adds a domain and eight users, and runs smtp/pgmail-smtpd and pop3/pgmail-pop3d behind
systemd-socket-activate on free 127.0.0.1 ports, as the socket units do. Then:

  load      --smtp workers each open SMTP sessions one after another and send one to three
            messages per session (1 to 3 recipients, 200 octets to 1 MiB, dot-led lines,
            half of them pipelined); about 3 % of them kill the connection mid-DATA.
            --pop3 workers log in as a random user (retrying [IN-USE]), RETR up to 20
            messages, checking each byte for byte against what was sent, DELE about half
            and QUIT; about 5 % drop the connection after DELE instead.
  slowloris --idle connections to handlers with PGMAIL_SMTP_TIMEOUT / PGMAIL_POP3_TIMEOUT
            set to --idle-timeout seconds, idling at every stage (before EHLO, mid-command,
            after RCPT holding a database connection, mid-DATA holding a COPY, logged in to
            POP3 holding the mailbox lock), while new sessions must still be served; then
            every idle one must have been closed by its timeout. One more client sends a
            byte every half timeout (a dribbler): how long it lasts is reported (INFO; the
            timeouts are per read, as Postfix's smtpd_timeout is by default).

While it runs, a sampler reads /proc/<pid>/status (VmHWM) of every live handler. Checks at
the end: every message answered 250 is stored exactly once, in exactly the mailboxes it was
addressed to, less what POP3 sessions removed with a QUIT answered +OK; nothing that was not
acknowledged is stored; quota counts match the mailboxes; no message is left without a
mailbox; every RETR matched; no protocol surprise; each handler's peak RSS stays under
--rss-limit; no handler process and no database connection is left behind. It prints a
summary and ends with "N passed, N failed" (exit status 1 when any failed).

tests/test_faults.py runs a short form (run(seconds=8, idle_seconds=3, ...)) in `make test`.
Python 3 standard library only.
"""

import argparse
import base64
import collections
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

import faultlib  # noqa: E402
import harness  # noqa: E402
import pop3lib  # noqa: E402

DOMAIN = "soak.test"
USERS = [f"u{i}@{DOMAIN}" for i in range(8)]
PASSWORD = "soak-Secret-0"
HOSTNAME = "mx.soak.test"


class Result:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.lines = []

    def check(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            self.lines.append(f"PASS {name}{': ' + detail if detail else ''}")
        else:
            self.failed += 1
            self.failures.append(f"{name}: {detail}")
            self.lines.append(f"FAIL {name}: {detail}")


# ---------------------------------------------------------------------------------------
# The handlers behind systemd-socket-activate

class Server:
    """systemd-socket-activate --inetd -a on a free port running binary with env (the PG*
    and PGMAIL_* variables are passed with -E). Stopped by its PID (process group)."""

    def __init__(self, binary, env, logdir, name):
        self.binary, self.env, self.name = binary, env, name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.proc = None
        self.port = None

    def start(self):
        for _ in range(5):
            self.port = harness.free_port()
            cmd = ["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{self.port}"]
            for k, v in sorted(self.env.items()):
                if k.startswith(("PG", "ASAN_", "UBSAN_", "LSAN_")):
                    cmd += ["-E", f"{k}={v}"]
            cmd.append(self.binary)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env, start_new_session=True)
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if f"Listening on 127.0.0.1:{self.port}" in self.log():
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            self.kill()
        raise RuntimeError(f"{self.name}: systemd-socket-activate did not start: "
                           f"{self.log()[-300:]}")

    def log(self):
        return harness.read_log(self.log_path)

    def spawned(self):
        return [int(p) for p in re.findall(r"Spawned .* as PID (\d+)", self.log())]

    def children(self):
        """PIDs of the live handlers (children of systemd-socket-activate)."""
        if not self.proc:
            return []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not [p for p in self.spawned() if faultlib.alive(p)]:
                return True
            time.sleep(0.05)
        return False

    def kill(self):
        harness.end_group(self.proc)


class Sampler(threading.Thread):
    """Every 50 ms: VmHWM of each live handler of the servers (peak per program, KiB) and
    how many run at once."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.peak = collections.defaultdict(int)
        self.peak_pid = {}
        self.concurrent = collections.defaultdict(int)
        self.samples = 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            live = collections.defaultdict(int)
            for srv in list(self.servers):
                for pid in srv.children():
                    kib = faultlib.vm_hwm(pid)
                    prog = os.path.basename(srv.binary)
                    live[prog] += 1
                    if kib > self.peak[prog]:
                        self.peak[prog] = kib
                        self.peak_pid[prog] = pid
            for prog, n in live.items():
                self.concurrent[prog] = max(self.concurrent[prog], n)
            self.samples += 1
            self.stop_flag.wait(0.05)

    def stop(self):
        self.stop_flag.set()
        self.join(5)


# ---------------------------------------------------------------------------------------
# Messages

def make_message(token, size, rng):
    """A CRLF message with token in X-Soak-Token and Subject, about size octets, with a
    few lines that start with a dot (dot-stuffing both ways)."""
    head = (f"From: <sender@remote.example>\r\nX-Soak-Token: {token}\r\n"
            f"Subject: {token}\r\nMessage-ID: <{token}@remote.example>\r\n\r\n").encode()
    lines = [head]
    n = len(head)
    i = 0
    while n < size:
        if rng.random() < 0.05:
            ln = b"." * rng.randint(1, 3) + b" dot-led line\r\n"
        else:
            ln = (f"{token} line {i} ".encode() + b"x" * rng.randint(0, 60) + b"\r\n")
        lines.append(ln)
        n += len(ln)
        i += 1
    return b"".join(lines)


def message_size(rng):
    r = rng.random()
    if r < 0.02:
        return 1 << 20
    if r < 0.15:
        return rng.randint(20000, 200000)
    return rng.randint(200, 8000)


def token_of(body):
    m = re.search(rb"\r\nX-Soak-Token: (\S+)\r\n", body[:8192])
    return m.group(1).decode() if m else None


# ---------------------------------------------------------------------------------------
# The load

class Load:
    def __init__(self, smtp_port, pop3_port, deadline, seed):
        self.smtp_port, self.pop3_port = smtp_port, pop3_port
        self.deadline = deadline
        self.seed = seed
        self.lock = threading.Lock()
        self.acked = {}        # token -> (recipients, sha256, length)
        self.not_acked = set()  # tokens whose sender never got 250
        self.tempfail = collections.Counter()
        self.deleted = set()   # (token, user) removed by a QUIT answered +OK
        self.retrieved = 0
        self.retr_bytes = 0
        self.in_use = 0
        self.pop3_quit_err = 0
        self.sessions = collections.Counter()
        self.surprises = []    # protocol surprises (reply that should not happen)
        self.errors = []       # exceptions in the clients
        self.seq = 0
        self.early = []        # (token, user, n) retrieved before its 250 was recorded

    def token(self, worker):
        with self.lock:
            self.seq += 1
            return f"S{worker}x{self.seq}"

    def surprise(self, text):
        with self.lock:
            if len(self.surprises) < 50:
                self.surprises.append(text)

    # -- SMTP -------------------------------------------------------------------------------

    def smtp_worker(self, w):
        rng = random.Random(self.seed * 1000 + w)
        while time.monotonic() < self.deadline:
            try:
                self.smtp_session(w, rng)
            except Exception as e:
                with self.lock:
                    self.errors.append(f"smtp worker {w}: {type(e).__name__}: {e}")
                time.sleep(0.1)

    def smtp_session(self, w, rng):
        with harness.Client(self.smtp_port, timeout=60) as c:
            with self.lock:
                self.sessions["smtp"] += 1
            r = c.reply()
            if not r or not r.startswith("220"):
                return self.surprise(f"greeting {r!r}")
            r = c.cmd("EHLO soak.client")
            if not r or not r.startswith("250"):
                return self.surprise(f"EHLO {r!r}")
            for _ in range(rng.randint(1, 3)):
                if time.monotonic() >= self.deadline:
                    break
                token = self.token(w)
                rcpts = rng.sample(USERS, rng.choice([1, 1, 1, 2, 3]))
                msg = make_message(token, message_size(rng), rng)
                env = [f"MAIL FROM:<s{w}@remote.example>"] + [f"RCPT TO:<{u}>" for u in rcpts]
                env.append("DATA")
                if rng.random() < 0.5:  # PIPELINING
                    c.send("".join(x + "\r\n" for x in env))
                    replies = [c.reply() for _ in env]
                else:
                    replies = [c.cmd(x) for x in env]
                want = ["250"] * (len(env) - 1) + ["354"]
                if [r[:3] if r else None for r in replies] != want:
                    if any(r and r.startswith("4") for r in replies):
                        with self.lock:
                            self.tempfail["envelope"] += 1
                            self.not_acked.add(token)
                        c.cmd("RSET")
                        continue
                    return self.surprise(f"envelope {env} -> {replies}")
                data = harness.dot_stuff(msg) + b".\r\n"
                if rng.random() < 0.03:  # killed mid-DATA
                    c.send(data[:len(data) // 2])
                    with self.lock:
                        self.not_acked.add(token)
                        self.sessions["smtp-killed"] += 1
                    faultlib_rst(c.sock)
                    return
                c.send(data)
                r = c.reply()
                with self.lock:
                    if r and r.startswith("250 "):
                        self.acked[token] = (rcpts, hashlib.sha256(msg).hexdigest(), len(msg))
                    elif r and r.startswith("4"):
                        self.tempfail["data"] += 1
                        self.not_acked.add(token)
                    else:
                        self.not_acked.add(token)
                        self.surprises.append(f"final dot -> {r!r}")
                        return
            c.cmd("QUIT")

    # -- POP3 -------------------------------------------------------------------------------

    def pop3_worker(self, w):
        rng = random.Random(self.seed * 1000 + 500 + w)
        while time.monotonic() < self.deadline:
            try:
                self.pop3_session(rng)
            except Exception as e:
                with self.lock:
                    self.errors.append(f"pop3 worker {w}: {type(e).__name__}: {e}")
                time.sleep(0.1)

    def pop3_session(self, rng):
        user = rng.choice(USERS)
        with pop3lib.Pop3Client(self.pop3_port, timeout=60) as c:
            with self.lock:
                self.sessions["pop3"] += 1
            st = c.cmd(f"USER {user}")
            if not st or not st.startswith("+OK"):
                return self.surprise(f"USER {st!r}")
            st = c.cmd(f"PASS {PASSWORD}")
            if st and st.startswith("-ERR [IN-USE]"):
                with self.lock:
                    self.in_use += 1
                c.cmd("QUIT")
                time.sleep(rng.random() * 0.05)
                return
            if not st or not st.startswith("+OK"):
                return self.surprise(f"PASS {st!r}")
            sizes = pop3lib.listing(c)
            marked = []
            for n in sorted(sizes)[:20]:
                st, body = c.retr(n)
                if not st or not st.startswith("+OK"):
                    return self.surprise(f"RETR {n} -> {st!r}")
                token = token_of(body)
                with self.lock:
                    self.retrieved += 1
                    self.retr_bytes += len(body)
                    info = self.acked.get(token)
                if info is None:
                    # committed, but its sender may not have read the 250 yet: checked
                    # again at the end
                    with self.lock:
                        self.early.append((token, user, n))
                else:
                    rcpts, sha, length = info
                    if user not in rcpts:
                        self.surprise(f"{token} in {user}'s mailbox, sent to {rcpts}")
                    if len(body) < length or hashlib.sha256(body[-length:]).hexdigest() != sha:
                        self.surprise(f"RETR of {token} for {user} differs from what was sent")
                    if int(sizes[n]) != len(body):
                        self.surprise(f"LIST says {sizes[n]} for {token}, RETR sent {len(body)}")
                if rng.random() < 0.5:
                    st = c.cmd(f"DELE {n}")
                    if not st or not st.startswith("+OK"):
                        return self.surprise(f"DELE {n} -> {st!r}")
                    marked.append((token, user))
            if marked and rng.random() < 0.05:  # dropped after DELE: nothing removed
                with self.lock:
                    self.sessions["pop3-dropped"] += 1
                c.abort()
                return
            st = c.cmd("QUIT")
            with self.lock:
                if st and st.startswith("+OK"):
                    self.deleted.update(marked)
                elif st and st.startswith("-ERR [SYS/TEMP]"):
                    self.pop3_quit_err += 1
                else:
                    self.surprises.append(f"QUIT -> {st!r}")


def faultlib_rst(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------------------------------
# Slowloris

def slowloris(res, env, logdir, smtpd, pop3d, n, timeout, psql, quiet):
    """n idle connections of five kinds plus a dribbler against handlers whose timeout is
    `timeout` seconds; new sessions must be served meanwhile; then the idle ones must be
    closed by the timeouts and their database connections gone."""
    e = dict(env, PGMAIL_SMTP_TIMEOUT=str(timeout), PGMAIL_POP3_TIMEOUT=str(timeout))
    s_srv = Server(smtpd, e, logdir, "slow-smtpd").start()
    p_srv = Server(pop3d, e, logdir, "slow-pop3d").start()
    kinds = ["greeted", "half-line", "after-rcpt", "mid-data", "pop3-login"]
    idle = []
    lock = threading.Lock()
    peak = {"backends": 0, "handlers": 0}
    watching = threading.Event()

    def watch():  # how many database connections and handlers the idle ones hold at most
        while not watching.is_set():
            b = len(faultlib_backends(psql))
            h = len(s_srv.children()) + len(p_srv.children())
            peak["backends"] = max(peak["backends"], b)
            peak["handlers"] = max(peak["handlers"], h)
            watching.wait(0.2)

    def open_one(i):
        kind = kinds[i % len(kinds)]
        try:
            if kind == "pop3-login":
                c = pop3lib.Pop3Client(p_srv.port, timeout=timeout + 15, greet=False)
                g = c.status()
                if not g or not g.startswith("+OK"):
                    res.check(False, "slowloris greeting", f"{kind} #{i}: {g!r}; "
                              + spawn_trouble(p_srv))
                    c.close()
                    return
                # a user's mailbox lock can be held once: later logins get [IN-USE] and
                # idle in AUTHORIZATION; the last user stays free for the check below
                c.cmd(f"USER {USERS[(i // len(kinds)) % (len(USERS) - 1)]}")
                st = c.cmd(f"PASS {PASSWORD}")
                if not st or not st.startswith(("+OK", "-ERR [IN-USE]")):
                    res.check(False, "slowloris login", f"PASS -> {st!r}")
            else:
                c = harness.Client(s_srv.port, timeout=timeout + 15)
                g = c.reply()
                if not g or not g.startswith("220 "):
                    res.check(False, "slowloris greeting", f"{kind} #{i}: {g!r}; "
                              + spawn_trouble(s_srv))
                    c.close()
                    return
                if kind == "half-line":
                    c.send(b"EHLO slow")
                elif kind in ("after-rcpt", "mid-data"):
                    c.send(f"EHLO slow\r\nMAIL FROM:<slow@remote.example>\r\n"
                           f"RCPT TO:<{USERS[i % len(USERS)]}>\r\n")
                    got = [c.reply(), c.reply(), c.reply()]
                    if kind == "mid-data":
                        got.append(c.cmd("DATA"))
                    if [(g or "")[:3] for g in got] != ["250", "250", "250", "354"][:len(got)]:
                        res.check(False, "slowloris setup", f"{kind} #{i}: {got}")
                        c.close()
                        return
                    if kind == "mid-data":
                        c.send(b"Subject: never finished\r\n\r\nhalf a mes")
            with lock:
                idle.append((kind, c, time.monotonic()))
        except (OSError, AssertionError) as ex:
            res.check(False, "slowloris connect", f"{kind} #{i}: {ex}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t_open = time.monotonic()
    try:
        # opened by 10 threads at once, so that they really idle together
        openers = [threading.Thread(target=lambda k=k: [open_one(i) for i in range(k, n, 10)],
                                    daemon=True) for k in range(10)]
        for t in openers:
            t.start()
        for t in openers:
            t.join(60)
        opened = time.monotonic() - t_open
        # a dribbler: one byte every half timeout, a command that never ends; it runs
        # alongside the rest, for at most 3 timeouts
        drib = {"closed": None, "limit": 3 * timeout}

        def dribble():
            c = harness.Client(s_srv.port, timeout=5)
            c.reply()
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < drib["limit"]:
                    c.send(b"X")
                    if harness.select_readable(c.sock, timeout / 2) and not c.sock.recv(4096):
                        drib["closed"] = time.monotonic() - t0
                        break
            except OSError:
                drib["closed"] = time.monotonic() - t0
            c.close()

        drib_thread = threading.Thread(target=dribble, daemon=True)
        drib_thread.start()
        # new sessions are served meanwhile
        served, why = 0, []
        for k in range(3):
            try:
                with harness.Client(s_srv.port, timeout=30) as c:
                    c.reply()
                    c.cmd("EHLO fresh")
                    r = harness.send_mail(c, "fresh@remote.example", [USERS[k]], harness.crlf(
                        f"X-Soak-Token: fresh{k}\nSubject: fresh\n\nok\n"))
                    served += bool(r and r.startswith("250 "))
                    c.cmd("QUIT")
            except (OSError, AssertionError) as ex:
                why.append(str(ex)[:200])
        res.check(served == 3, "slowloris: new SMTP sessions served while "
                  f"{len(idle)} connections idle", f"{served}/3 delivered {why}")
        got = None
        for u in reversed(USERS):  # the last one is never held by an idle session
            with pop3lib.Pop3Client(p_srv.port, timeout=30) as c:
                c.cmd(f"USER {u}")
                st = c.cmd(f"PASS {PASSWORD}")
                if st and st.startswith("+OK"):
                    got = u
                    c.cmd("QUIT")
                    break
                c.cmd("QUIT")
        res.check(got is not None, "slowloris: a new POP3 session served meanwhile",
                  f"logged in as {got}" if got else "every login refused")
        # every idle connection closed by the timeout
        limit = timeout + 5
        not_closed, wrong = [], []
        for kind, c, t0 in idle:
            sock = c.sock
            sock.settimeout(max(0.1, t0 + limit - time.monotonic()))
            data = b""
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (socket.timeout, TimeoutError):
                not_closed.append(kind)
                continue
            except ConnectionResetError:
                pass
            if kind != "pop3-login" and b"421 4.4.2" not in data:
                wrong.append(f"{kind}: {data[-80:]!r}")
        res.check(not not_closed, f"slowloris: {len(idle)} idle connections closed by the "
                  f"{timeout}s timeout within {limit}s",
                  f"still open: {collections.Counter(not_closed)}" if not_closed
                  else f"opened in {opened:.1f}s; at most {peak['handlers']} handlers and "
                  f"{peak['backends']} database connections at once")
        res.check(not wrong, "slowloris: idle SMTP sessions told 421 4.4.2", "; ".join(wrong[:5]))
        # the dribbler
        drib_thread.join(drib["limit"] + 10)
        res.lines.append(
            f"INFO slowloris: a client sending one byte every {timeout / 2:g}s was "
            + (f"closed after {drib['closed']:.1f}s" if drib["closed"] else
               f"still connected after {drib['limit']}s (the timeout is per read, not per "
               "command: it never fires while bytes trickle in)"))
        # their database connections are gone
        deadline = time.monotonic() + 10
        while faultlib_backends(psql) and time.monotonic() < deadline:
            time.sleep(0.1)
        watching.set()
        left = faultlib_backends(psql)
        res.check(not left, "slowloris: no database connection left after the timeouts",
                  f"{len(left)} left" if left else f"{peak['backends']} were held while idle")
    finally:
        watching.set()
        for _, c, _ in idle:
            c.close()
        for srv in (s_srv, p_srv):
            srv.wait_idle(10)
            srv.kill()
    return s_srv, p_srv


def spawn_trouble(srv):
    """What systemd-socket-activate and the handlers said that looks like trouble (for a
    connection that got no greeting: a failed fork, a handler that died at once)."""
    bad = [ln for ln in srv.log().splitlines()
           if re.search(r"(?i)fail|error|cannot|killed|dumped|signal", ln)
           and "event=" not in ln]
    return "log: " + (" | ".join(bad[-3:]) if bad else "nothing unusual")


def faultlib_backends(psql):
    out = psql("SELECT pid FROM pg_stat_activity WHERE application_name IN"
               " ('pgmail-smtpd', 'pgmail-pop3d')")
    return out.split()


# ---------------------------------------------------------------------------------------

def run(seconds=180, smtp_workers=12, pop3_workers=6, idle_clients=150, idle_seconds=10,
        rss_limit_mib=32, root=ROOT, tmp=None, seed=None, keep=False, quiet=False):
    """Run the soak; returns a Result (passed, failed, failures, lines)."""
    res = Result()
    seed = seed if seed is not None else int(time.time())
    base = tmp or os.path.join(root, ".run")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="pgmail-soak-", dir=base)
    smtpd = os.path.join(root, "smtp", "pgmail-smtpd")
    pop3d = os.path.join(root, "pop3", "pgmail-pop3d")
    ctl = os.path.join(root, "admin", "pgmailctl")
    for b in (smtpd, pop3d, ctl):
        if not os.path.exists(b):
            raise SystemExit(f"soak: {os.path.relpath(b, root)} is not built (run make)")
    cluster = faultlib.PgCluster(os.path.join(work, "pg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGMAIL_"))}
    env.update({"PGHOST": cluster.dir, "PGUSER": "postgres", "PGDATABASE": "pgmail_soak",
                "PGMAIL_CONFIG": "/dev/null", "PGMAIL_LOG": "stderr",
                "PGMAIL_HOSTNAME": HOSTNAME, "PGMAIL_PASSWORD_SCHEME": "sha512crypt"})
    servers = []
    sampler = None
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    def psql(sql):
        return cluster.psql(sql, db="pgmail_soak")

    try:
        say(f"soak: cluster in {work}, seed {seed}")
        cluster.start()
        cluster.psql("CREATE DATABASE pgmail_soak")
        for args in (["migrate"], ["domain", "add", DOMAIN]):
            subprocess.run([ctl, *args], env=env, check=True, capture_output=True, timeout=60)
        for u in USERS:
            subprocess.run([ctl, "user", "add", u], env=env, input=(PASSWORD + "\n").encode(),
                           check=True, capture_output=True, timeout=60)
        s_srv = Server(smtpd, env, work, "smtpd").start()
        p_srv = Server(pop3d, env, work, "pop3d").start()
        servers += [s_srv, p_srv]
        sampler = Sampler(servers)
        sampler.start()

        # -- load
        t0 = time.monotonic()
        load = Load(s_srv.port, p_srv.port, t0 + seconds, seed)
        threads = [threading.Thread(target=load.smtp_worker, args=(w,), daemon=True)
                   for w in range(smtp_workers)]
        threads += [threading.Thread(target=load.pop3_worker, args=(w,), daemon=True)
                    for w in range(pop3_workers)]
        say(f"soak: load for {seconds}s: {smtp_workers} SMTP and {pop3_workers} POP3 workers "
            f"on 127.0.0.1:{s_srv.port} and :{p_srv.port}")
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        took = time.monotonic() - t0
        stuck = sum(t.is_alive() for t in threads)
        res.check(not stuck, "load: every client finished", f"{stuck} still running")
        res.check(not load.errors, "load: no client error",
                  "; ".join(load.errors[:5]) + (f" (+{len(load.errors) - 5})"
                                                 if len(load.errors) > 5 else ""))
        never = [f"RETR {n} of {u}: {t}" for t, u, n in load.early if t not in load.acked]
        res.check(not never, "load: every message POP3 retrieved had been acknowledged",
                  "; ".join(never[:5]))
        res.check(not load.surprises, "load: no protocol surprise", "; ".join(load.surprises[:5]))
        quiet_ok = s_srv.wait_idle(30) and p_srv.wait_idle(30)
        res.check(quiet_ok, "load: every handler exited after its session")

        # -- what was stored
        rows = psql("SELECT m.id, a.address, translate(encode(substring(m.body FROM 1 FOR 8192),"
                    " 'base64'), E'\\n', '') FROM messages m"
                    " LEFT JOIN mailbox b ON b.message_id = m.id"
                    " LEFT JOIN accounts a ON a.id = b.account_id ORDER BY m.id")
        msg_tokens = {}
        pairs = collections.Counter()
        for row in rows.splitlines():
            mid, addr, b64 = row.split("|")
            tok = token_of(base64.b64decode(b64)) or f"?{mid}"
            msg_tokens.setdefault(mid, tok)
            if addr:
                pairs[(tok, addr)] += 1
        token_count = collections.Counter(msg_tokens.values())
        dup = [t for t, n in token_count.items() if n > 1]
        res.check(not dup, "store: no message stored twice", f"{dup[:5]}")
        acked_pairs = {(t, u) for t, (rcpts, _, _) in load.acked.items() for u in rcpts}
        want = acked_pairs - load.deleted
        have = set(pairs)
        dup_rows = [p for p, n in pairs.items() if n > 1]
        missing = want - have
        extra = have - want
        res.check(not missing and not extra and not dup_rows,
                  "store: every acknowledged (message, mailbox) present exactly once, "
                  "less what QUIT removed",
                  f"missing {sorted(missing)[:5]} ({len(missing)}), extra {sorted(extra)[:5]} "
                  f"({len(extra)}), doubled {dup_rows[:5]}")
        bad = set(token_count) & load.not_acked
        res.check(not bad, "store: nothing stored that was not acknowledged",
                  f"{len(bad)}: {sorted(bad)[:5]}")
        unknown = [t for t in token_count if t not in load.acked]
        res.check(not unknown, "store: no stored message unknown to the clients",
                  f"{unknown[:5]}")
        removed = {t for t in load.acked if not any((t, u) in have for u in load.acked[t][0])}
        stored_now = len([t for t in token_count if t in load.acked])
        res.check(stored_now + len(removed) == len(load.acked),
                  "store: stored now + removed by POP3 = acknowledged",
                  f"{stored_now} + {len(removed)} = {stored_now + len(removed)} vs "
                  f"{len(load.acked)}")
        incons = psql("SELECT a.address FROM accounts a LEFT JOIN mailbox b"
                      " ON b.account_id = a.id GROUP BY a.id"
                      " HAVING a.used_bytes <> coalesce(sum(b.size), 0)"
                      " OR a.message_count <> count(b.id)").split()
        res.check(not incons, "store: used_bytes and message_count equal what each mailbox"
                  " holds", f"{incons}")
        orphans = int(psql("SELECT count(*) FROM messages m WHERE NOT EXISTS"
                           " (SELECT 1 FROM mailbox b WHERE b.message_id = m.id)"))
        res.check(orphans == 0, "store: no message left in no mailbox", f"{orphans}")

        # -- slowloris
        if idle_clients:
            say(f"soak: slowloris: {idle_clients} idle connections, timeout {idle_seconds}s")
            slow = slowloris(res, env, work, smtpd, pop3d, idle_clients, idle_seconds, psql,
                             quiet)
            servers += list(slow)
            fresh = psql("SELECT count(*) FROM messages m WHERE position("
                         "convert_to('X-Soak-Token: fresh', 'UTF8') IN m.body) > 0").strip()
            never = psql("SELECT count(*) FROM messages m WHERE position("
                         "convert_to('never finished', 'UTF8') IN m.body) > 0").strip()
            res.check(fresh == "3" and never == "0", "slowloris: stored exactly the messages "
                      "that were finished", f"fresh {fresh}/3, unfinished {never}/0")

        # -- memory and leftovers
        sampler.stop()
        limit_kib = rss_limit_mib * 1024
        for prog in ("pgmail-smtpd", "pgmail-pop3d"):
            peak = sampler.peak.get(prog, 0)
            res.check(0 < peak < limit_kib, f"memory: {prog} peak RSS (VmHWM) under "
                      f"{rss_limit_mib} MiB", f"{peak / 1024:.1f} MiB")
        for srv in servers:
            srv.wait_idle(15)
            srv.kill()
        spawned = [(s.name, p) for s in servers for p in s.spawned()]
        alive = [(n, p) for n, p in spawned if faultlib.alive(p)]
        res.check(not alive, "leftovers: no handler process left",
                  f"{len(alive)} of {len(spawned)} still alive: {alive[:5]}")
        deadline = time.monotonic() + 10
        while faultlib_backends(psql) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = faultlib_backends(psql)
        res.check(not left, "leftovers: no database connection left", f"{left}")

        summary = {
            "seconds": round(took, 1),
            "smtp sessions": load.sessions["smtp"],
            "smtp killed mid-DATA": load.sessions["smtp-killed"],
            "messages acknowledged (250)": len(load.acked),
            "recipients acknowledged": len(acked_pairs),
            "temporary failures": dict(load.tempfail),
            "not acknowledged": len(load.not_acked),
            "pop3 sessions": load.sessions["pop3"],
            "pop3 [IN-USE] answers": load.in_use,
            "pop3 dropped after DELE": load.sessions["pop3-dropped"],
            "pop3 QUIT -ERR [SYS/TEMP]": load.pop3_quit_err,
            "messages retrieved": load.retrieved,
            "octets retrieved": load.retr_bytes,
            "mailbox entries removed by QUIT": len(load.deleted),
            "messages stored at the end": stored_now,
            "messages removed entirely": len(removed),
            "peak RSS smtpd (MiB)": round(sampler.peak.get("pgmail-smtpd", 0) / 1024, 1),
            "peak RSS pop3d (MiB)": round(sampler.peak.get("pgmail-pop3d", 0) / 1024, 1),
            "most concurrent handlers": dict(sampler.concurrent),
            "handlers spawned": len(spawned),
            "rss samples": sampler.samples,
        }
        res.summary = summary
        res.lines.append("summary:")
        for k, v in summary.items():
            res.lines.append(f"  {k}: {v}")
    except Exception as e:
        res.check(False, "soak ran", f"{type(e).__name__}: {e}")
    finally:
        if sampler:
            sampler.stop()
        for srv in servers:
            srv.kill()
        try:
            cluster.stop()
        except Exception as e:
            res.check(False, "cluster stopped", str(e))
        if keep:
            say(f"soak: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description="pgmail load and soak test")
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--smtp", type=int, default=12, help="parallel SMTP clients")
    ap.add_argument("--pop3", type=int, default=6, help="parallel POP3 clients")
    ap.add_argument("--idle", type=int, default=150, help="slowloris connections (0: none)")
    ap.add_argument("--idle-timeout", type=int, default=10,
                    help="handler timeout for them, seconds (long enough for all to be open "
                         "at once: handlers are spawned one after another)")
    ap.add_argument("--rss-limit", type=int, default=32, help="MiB per handler")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the cluster and logs")
    a = ap.parse_args()
    res = run(seconds=a.minutes * 60, smtp_workers=a.smtp, pop3_workers=a.pop3,
              idle_clients=a.idle, idle_seconds=a.idle_timeout, rss_limit_mib=a.rss_limit,
              seed=a.seed, keep=a.keep)
    for ln in res.lines:
        print(ln)
    print(f"{res.passed} passed, {res.failed} failed", flush=True)
    sys.exit(1 if res.failed else 0)


if __name__ == "__main__":
    main()
