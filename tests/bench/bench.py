#!/usr/bin/env python3
"""bench.py - pgmail against Postfix and Dovecot on this machine, in one run, with the floors.

    python3 tests/bench/bench.py            # make bench        (~10 minutes, 3 runs each)
    python3 tests/bench/bench.py --quick    # make bench-quick  (~2 minutes, 1 run each)

Everything is started here, on 127.0.0.1 and free ports, under one temporary directory, and
stopped and removed at the end (also after an error, Ctrl-C or the time limit):
  * a PostgreSQL cluster (tests/lib/pg.sh: fsync on, synchronous_commit on) with pgmail's
    schema, the bench accounts (SHA512-CRYPT, made by pgmailctl) and their mail;
  * pgmail's handlers behind systemd-socket-activate --inetd -a, as systemd runs them:
    straight to PostgreSQL (the default), and through PgBouncer in session pooling
    (server_reset_query = DISCARD ALL) and in transaction pooling;
  * Postfix (smtpd, virtual Maildir delivery) and Dovecot (pop3, pop3_lock_session = yes)
    from Debian's packages, each configured in a private directory with the same users and
    the same password hashes; Dovecot twice: as shipped (a login process per connection)
    and with the login processes kept (service_count = 0, Dovecot's high-performance mode);
  * the floors: a trivial handler (fork + exec only) and one that opens and closes a libpq
    connection, both behind systemd-socket-activate; pgbench of the delivery transaction.
Load: Postfix's smtp-source (4 KiB messages, 1 and 10 per session, 1 and 16 sessions in
parallel; for Postfix the clock stops when the last message is in its Maildir) and
tests/bench/pop3load.c (USER/PASS, STAT, RETR of a 4 KiB message, QUIT).
The systems of one figure are measured in turns (A B C A B C ...), so that the machine's
drift hits them alike; each figure is the median of the runs. Beside each rate: page faults
and CPU milliseconds per operation of the server's processes (handlers or daemons) and of
the database side (PostgreSQL and PgBouncer), from `perf stat -e page-faults,task-clock`
attached to those processes (or /proc/PID/stat when perf does not work).

Output (stdout): a table, then one line per figure
    RESULT <name> pgmail=<v> anchor=<v> ratio=<r>
where ratio > 1 means pgmail is better (anchor/pgmail for times and memory), and per figure
    PROFILE <name> pgmail_faults=.. pgmail_db_faults=.. pgmail_cpu_ms=.. pgmail_db_cpu_ms=..
            anchor_faults=.. anchor_cpu_ms=..   (per operation)
Progress goes to stderr. Missing Debian packages are installed first with apt-get (without
letting their services start). Python 3 standard library only.

Options: --quick, --runs N, --seconds S (per measured run), --keep (leave the temporary
directory and print its path), --json FILE (all samples), --bin DIR (where smtp/, pop3/ and
admin/ are built; default: the repository).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

DOMAIN = "bench.test"
SENDER = "bench@sender.test"
PASSWORD = "bench-Pw-7"
NOBODY = 65534  # owner of the Postfix/Dovecot maildirs
MSG_SIZE = 4096  # octets of the POP3 test message (as sent, CRLF)
BIG_SIZE = 20 * 1024 * 1024
SCALE_MSG = 512  # octets of each message of the scaling mailboxes
NPAR = 16  # the "many sessions" parallelism
NUMBERED = "n"  # smtp-source -N sends to 1n@, 2n@, ...: accounts 1n .. NUMBERED_MAX n
NUMBERED_MAX = 6000
# Dovecot's scaling mailboxes stop at 10,000 messages: 100,000 files take minutes to write
# and remove here (ext4 mounted with discard), longer than the whole figure is worth.
DOVECOT_SCALE_MAX = 10000

PACKAGES = ["postfix", "dovecot-pop3d", "pgbouncer", "postgresql", "gcc",
            "libpq-dev", "systemd"]
OPTIONAL_PACKAGES = ["linux-perf"]


def postfix_paths(directory):
    """The main.cf lines every private Postfix instance of the benches starts with: its own
    queue and data directories under directory, Debian's programs."""
    return f"""compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
"""


def write_master_cf(directory, port, extra=()):
    """master.cf of a private Postfix instance: smtpd on 127.0.0.1:port and the services
    Postfix 3.7 needs to queue and relay, plus extra lines."""
    services = [  # name type private unpriv chroot wakeup maxproc command (Postfix 3.7)
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr", "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce", "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap", "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp", "showq unix n - n - - showq",
        "error unix - - n - - error", "retry unix - - n - - error",
        "discard unix - - n - - discard", "local unix - n n - - local",
        "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ] + list(extra)
    with open(os.path.join(directory, "master.cf"), "w") as f:
        f.write("\n".join(services) + "\n")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class TimeLimit(BaseException):
    pass


def run(cmd, check=True, timeout=300, **kw):
    """subprocess.run with captured text output; raises BenchError with stderr on failure."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))[:200]} failed ({r.returncode}): "
                         f"{(r.stderr or r.stdout).strip()[-800:]}")
    return r


# ---------------------------------------------------------------------------------------
# Packages


def missing_packages(names):
    out = []
    for p in names:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            out.append(p)
    return out


def system_daemons():
    """PIDs of a system-wide Postfix or Dovecot master (not ours: ours live under /tmp)."""
    found = []
    for pidfile in ("/var/spool/postfix/pid/master.pid", "/run/dovecot/master.pid"):
        try:
            pid = int(open(pidfile).read().split()[0])
            os.kill(pid, 0)
            found.append((pidfile, pid))
        except (OSError, ValueError, IndexError):
            pass
    return found


def ensure_packages(packages=None, optional_packages=None):
    """Install what is missing, never letting a package start its system service."""
    missing = missing_packages(PACKAGES if packages is None else packages)
    optional = missing_packages(OPTIONAL_PACKAGES if optional_packages is None
                                else optional_packages)
    if not missing and not optional:
        return
    if os.geteuid() != 0:
        if missing:
            raise BenchError(f"missing Debian packages {' '.join(missing)}: run as root or "
                             f"apt-get install them")
        return
    log(f"installing {' '.join(missing + optional)} (services kept from starting)")
    before = {pid for _, pid in system_daemons()}
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# made by pgmail's tests/bench/bench.py while it installs\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["debconf-set-selections"], input=(
            "postfix postfix/main_mailer_type select No configuration\n"), text=True,
            capture_output=True, env=env)
        run(["apt-get", "update", "-qq"], env=env, timeout=600, check=False)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env,
            timeout=900)
        if optional:
            run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + optional,
                env=env, timeout=900, check=False)
    finally:
        if created:
            os.unlink(policy)
    # Whatever the packages managed to start despite the policy is ours to stop.
    for pidfile, pid in system_daemons():
        if pid not in before:
            log(f"stopping the system daemon that the install started ({pidfile}, pid {pid})")
            os.kill(pid, signal.SIGTERM)


# ---------------------------------------------------------------------------------------
# Processes, ports, /proc


def free_port(taken):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in taken and port not in (25, 110):
            taken.add(port)
            return port


def listening(port):
    """True when something listens on 127.0.0.1:port (from /proc/net/tcp: no connection)."""
    want = "%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[1].endswith(":" + want):
                    return True
    except OSError:
        pass
    return False


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise BenchError(f"timed out waiting for {what}")


def end_process(proc, sig=signal.SIGTERM, timeout=10):
    """Signal proc (a Popen of ours) if it still runs, wait for it, kill it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(roots):
    """roots and all their descendants now living."""
    kids = children_map()
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_counts(pid):
    """(minflt + cminflt, CPU seconds incl. reaped children) of one process."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # fields after ")" start at field 3 (state): minflt=10 cminflt=11 utime=14 .. cstime=17
    return int(f[7]) + int(f[8]), sum(int(x) for x in f[11:15]) / tick


def perf_works():
    try:
        r = subprocess.run(["perf", "stat", "-x,", "-e", "page-faults,task-clock", "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "page-faults" in r.stderr


class Counter:
    """Page faults and CPU time of some processes and every child they start meanwhile:
    perf stat attached to them, or (without perf) /proc counts before and after."""

    def __init__(self, bench, pids):
        self.bench = bench
        self.pids = [p for p in pids if alive(p)]
        self.proc = None

    def start(self):
        if not self.pids:
            return self
        if self.bench.perf:
            self.out = os.path.join(self.bench.tmp, f"perf-{os.getpid()}-{id(self)}.txt")
            for attempt in range(4):
                # perf refuses the whole list when one process is gone (a backend that was
                # just ending): start again with the living ones.
                self.pids = [p for p in self.pids if alive(p)]
                self.proc = self.bench.perfs[id(self)] = subprocess.Popen(
                    ["perf", "stat", "-x,", "-e", "page-faults,task-clock", "-o", self.out,
                     "-p", ",".join(map(str, self.pids))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.25)  # attached by then (it gives no sign)
                if self.proc.poll() is None:
                    break
                self.bench.perfs.pop(id(self), None)
                self.proc = None
        else:
            self.before = self._proc_sum()
        return self

    def _proc_sum(self):
        faults, cpu = 0, 0.0
        for p in tree(self.pids):
            f, c = proc_counts(p)
            faults += f
            cpu += c
        return faults, cpu

    def stop(self):
        """(page faults, CPU ms) since start."""
        if not self.pids:
            return 0, 0.0
        if not self.bench.perf:
            f1, c1 = self._proc_sum()
            return f1 - self.before[0], (c1 - self.before[1]) * 1000
        if self.proc is None:
            return float("nan"), float("nan")
        time.sleep(0.05)  # let the last handler finish exiting
        self.bench.perfs.pop(id(self), None)
        end_process(self.proc, signal.SIGINT)
        faults, cpu = 0, 0.0
        try:
            for line in open(self.out):
                parts = line.strip().split(",")
                if len(parts) < 3 or parts[0].startswith("<"):
                    continue
                if parts[2].startswith("page-faults"):
                    faults = float(parts[0])
                elif parts[2].startswith("task-clock"):
                    cpu = float(parts[0])
            os.unlink(self.out)
        except (OSError, ValueError):
            pass
        return faults, cpu


class PeakRSS:
    """Samples VmHWM of a process tree every 10 ms: the peak RSS per program name (MiB)."""

    def __init__(self, roots):
        self.roots = roots
        self.peak = {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop_flag.is_set():
            for p in tree(self.roots):
                try:
                    comm = open(f"/proc/{p}/comm").read().strip()
                    for line in open(f"/proc/{p}/status"):
                        if line.startswith("VmHWM:"):
                            kb = int(line.split()[1])
                            self.peak[comm] = max(self.peak.get(comm, 0), kb / 1024)
                except (OSError, ValueError):
                    pass
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------
# Messages


def message(size, subject, crlf=True):
    """A plain message of exactly size octets as sent over the wire (CRLF line ends)."""
    head = (f"From: Bench <{SENDER}>\r\nTo: <someone@{DOMAIN}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject}@bench>\r\n\r\n")
    body = []
    left = size - len(head)
    n = 0
    while left > 0:
        if left >= 78:
            line = ("%06d " % n + "x" * 69)[:76] + "\r\n"
        else:
            line = "y" * max(left - 2, 0) + "\r\n" if left >= 2 else "z"
        body.append(line)
        left -= len(line)
        n += 1
    text = (head + "".join(body)).encode()
    assert len(text) == size, (len(text), size)
    return text if crlf else text.replace(b"\r\n", b"\n")


# ---------------------------------------------------------------------------------------
# The systems under test


class Spawner:
    """A handler behind systemd-socket-activate --inetd -a on its own port."""

    def __init__(self, bench, name, argv, env):
        self.bench, self.name = bench, name
        self.port = free_port(bench.ports)
        cmd = ["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{self.port}"]
        for k, v in env.items():
            cmd += ["-E", f"{k}={v}"]
        self.log = open(os.path.join(bench.tmp, "logs", f"{name}.log"), "ab")
        self.proc = subprocess.Popen(cmd + argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        bench.started.append(self)
        wait_until(lambda: listening(self.port), 10, f"{name} to listen")

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        end_process(self.proc)
        self.log.close()


class Postgres:
    def __init__(self, bench):
        self.bench = bench
        self.dir = os.path.join(bench.tmp, "pg")
        self.pgsh = os.path.join(ROOT, "tests", "lib", "pg.sh")
        run(["sh", self.pgsh, "start", self.dir], timeout=180)
        bench.started.append(self)

    def pids(self):
        try:
            pid = int(open(os.path.join(self.dir, "data", "postmaster.pid")).readline())
        except (OSError, ValueError):
            return []
        return tree([pid])

    def psql(self, sql=None, db="pgmail", file=None):
        cmd = ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-U", "postgres", "-d", db]
        cmd += ["-f", file] if file else ["-c", sql]
        return run(cmd, timeout=600).stdout

    def stop(self):
        run(["sh", self.pgsh, "stop", self.dir], check=False, timeout=120)


class PgBouncer:
    def __init__(self, bench, mode, aliases=()):
        self.bench, self.mode = bench, mode
        self.dir = os.path.join(bench.tmp, f"pgbouncer-{mode}")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port(bench.ports)
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "users.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')
        with open(ini, "w") as f:
            extra = "".join(f"{a} = host={bench.pg.dir} port=5432 dbname={db}\n"
                            for a, db in aliases)
            f.write(f"""[databases]
{extra}* = host={bench.pg.dir} port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir = {self.dir}
auth_type = trust
auth_file = {users}
pool_mode = {mode}
server_reset_query = DISCARD ALL
max_client_conn = 400
default_pool_size = 20
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
""")
        self.proc = subprocess.Popen(["pgbouncer", "-u", "postgres", ini], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.started.append(self)
        wait_until(lambda: listening(self.port), 10, f"pgbouncer ({mode}) to listen")

    def env(self):
        return {"PGHOST": self.dir, "PGPORT": str(self.port)}

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        end_process(self.proc)


class Postfix:
    def __init__(self, bench, rcpts):
        self.bench = bench
        t = bench.tmp
        self.dir = os.path.join(t, "postfix")
        self.vmail = os.path.join(t, "vmail")
        for d in (self.dir, os.path.join(self.dir, "queue"), os.path.join(self.dir, "data"),
                  self.vmail):
            os.makedirs(d, exist_ok=True)
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        os.chown(self.vmail, NOBODY, NOBODY)
        self.port = free_port(bench.ports)
        with open(os.path.join(self.dir, "vmailbox"), "w") as f:
            for r in rcpts:
                f.write(f"{r}@{DOMAIN} {DOMAIN}/{r}/\n")
        with open(os.path.join(self.dir, "vnumbered"), "w") as f:
            f.write(f"/^[0-9]+{NUMBERED}@{re.escape(DOMAIN)}$/ {DOMAIN}/{NUMBERED}/\n")
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(f"""# pgmail bench: a private Postfix instance (postfix -c {self.dir})
{postfix_paths(self.dir)}myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = texthash:{self.dir}/vmailbox, regexp:{self.dir}/vnumbered
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
virtual_minimum_uid = 100
virtual_mailbox_limit = 0
mailbox_size_limit = 0
message_size_limit = 26214400
biff = no
maillog_file = {self.dir}/postfix.log
maillog_file_prefixes = {t}
syslog_name = postfix-bench
""")
        write_master_cf(self.dir, self.port, ["virtual unix - n n - - virtual",
                                              "lmtp unix - - n - - lmtp"])
        run(["postfix", "-c", self.dir, "start"], timeout=60)
        bench.started.append(self)
        wait_until(lambda: listening(self.port), 20, "Postfix to listen")

    def master(self):
        try:
            return int(open(os.path.join(self.dir, "queue", "pid", "master.pid")).read())
        except (OSError, ValueError):
            return None

    def pids(self):
        m = self.master()
        return tree([m]) if m else []

    def newdir(self, rcpt):
        return os.path.join(self.vmail, DOMAIN, rcpt, "new")

    def delivered(self, rcpts):
        n = 0
        for r in set(rcpts):
            try:
                n += len(os.listdir(self.newdir(r)))
            except FileNotFoundError:
                pass
        return n

    def clear(self, rcpts):
        for r in set(rcpts):
            d = self.newdir(r)
            if os.path.isdir(d):
                for fn in os.listdir(d):
                    os.unlink(os.path.join(d, fn))

    def stop(self):
        m = self.master()
        run(["postfix", "-c", self.dir, "stop"], check=False, timeout=60)
        if m:
            try:
                wait_until(lambda: not alive(m), 15, "Postfix to stop")
            except BenchError:
                os.kill(m, signal.SIGKILL)


class Dovecot:
    """Dovecot's pop3 from a private config; hp=True keeps login processes (service_count=0,
    Dovecot's "high-performance mode"), else as shipped (one login process per connection)."""

    def __init__(self, bench, name, mailroot, passwd, hp):
        self.bench, self.name = bench, name
        t = bench.tmp
        self.dir = os.path.join(t, name)
        for d in ("run", "state"):
            os.makedirs(os.path.join(self.dir, d))
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.join(self.dir, "run"), 0o755)
        self.port = free_port(bench.ports)
        conf = os.path.join(self.dir, "dovecot.conf")
        hp_conf = """service pop3-login {
  service_count = 0
  process_min_avail = 2
}
""" if hp else ""
        with open(conf, "w") as f:
            f.write(f"""# pgmail bench: a private Dovecot (dovecot -c {conf})
protocols = pop3
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{mailroot}/%d/%n/Maildir
mail_uid = {NOBODY}
mail_gid = {NOBODY}
first_valid_uid = 100
pop3_lock_session = yes
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={mailroot}/%d/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
{hp_conf}""")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.started.append(self)
        wait_until(lambda: listening(self.port), 20, f"{name} to listen")

    def pids(self):
        return tree([self.proc.pid])

    def stop(self):
        end_process(self.proc, timeout=15)


# ---------------------------------------------------------------------------------------
# Figures


class Sample:
    def __init__(self, value, ops=1, faults=0.0, db_faults=0.0, cpu=0.0, db_cpu=0.0, errors=0):
        self.value = value
        per = max(ops, 1)
        self.faults, self.db_faults = faults / per, db_faults / per
        self.cpu, self.db_cpu = cpu / per, db_cpu / per
        self.errors = errors


def med(xs):
    xs = [x for x in xs if x == x]  # without NaN (a counter that could not attach)
    return statistics.median(xs) if xs else float("nan")


class System:
    """One contender of a figure: a callable that makes one measured Sample."""

    def __init__(self, key, label, fn, warm=None):
        self.key, self.label, self.fn, self.warm = key, label, fn, warm
        self.samples = []

    def median(self, attr="value"):
        return med([getattr(s, attr) for s in self.samples])


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.runs = args.runs or (1 if self.quick else 3)
        self.seconds = args.seconds or (0.8 if self.quick else 1.5)
        self.warm_seconds = 0.3 if self.quick else 0.4
        self.bin = os.path.abspath(args.bin or ROOT)
        self.ports = set()
        self.started = []
        self.perfs = {}  # perf stat processes attached right now
        self.results = []  # (name, unit, kind, pgmail System/value, anchor ..., labels)
        self.notes = []
        self.perf = False

    # -- set-up ------------------------------------------------------------------------

    def setup(self):
        for prog in ("smtp/pgmail-smtpd", "pop3/pgmail-pop3d", "admin/pgmailctl"):
            if not os.access(os.path.join(self.bin, prog), os.X_OK):
                raise BenchError(f"{prog} is not built under {self.bin}: run make first")
        ensure_packages()
        for tool in ("smtp-source", "pgbench", "pgbouncer", "postfix", "dovecot",
                     "systemd-socket-activate", "cc"):
            if not shutil.which(tool):
                raise BenchError(f"{tool} not found")
        self.perf = perf_works()
        log(f"page faults and CPU from {'perf stat' if self.perf else '/proc/PID/stat'}")
        self.tmp = tempfile.mkdtemp(prefix="pgmail-bench-")
        os.chmod(self.tmp, 0o755)
        os.makedirs(os.path.join(self.tmp, "logs"))
        os.makedirs(os.path.join(self.tmp, "bin"))
        self.build_tools()
        log("starting PostgreSQL")
        self.pg = Postgres(self)
        self.setup_db()
        self.pgb = {m: PgBouncer(self, m) for m in ("session", "transaction")}
        self.setup_anchors()

    def setup_and_figures(self):
        """main() of a bench script that has setup() and figures()."""
        t0 = time.monotonic()
        self.setup()
        log(f"set up in {time.monotonic() - t0:.0f} s")
        self.figures()
        log(f"done in {time.monotonic() - t0:.0f} s")

    def prepare(self, progs, packages, tools, prefix):
        """The start of a bench script's setup: progs built under --bin, packages installed,
        tools on PATH, perf probed, and self.tmp (with logs/) made."""
        for prog in progs:
            if not os.access(os.path.join(self.bin, prog), os.X_OK):
                raise BenchError(f"{prog} is not built under {self.bin}: run make first")
        ensure_packages(packages, [])
        for tool in tools:
            if not shutil.which(tool):
                raise BenchError(f"{tool} not found")
        self.perf = perf_works()
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.tmp, 0o755)
        os.makedirs(os.path.join(self.tmp, "logs"))

    def build_tools(self):
        b = os.path.join(self.tmp, "bin")
        inc = run(["pg_config", "--includedir"], check=False).stdout.strip() or \
            "/usr/include/postgresql"
        cc = ["cc", "-O2", "-Wall", "-Wextra"]
        run(cc + ["-o", f"{b}/pop3load", f"{HERE}/pop3load.c"])
        run(cc + ["-o", f"{b}/floor", f"{HERE}/floor.c"])
        # Linked as the Makefile links the handlers (libpq.a when its archives are here), so
        # that the floor pays the same loading cost.
        libdir = run(["pg_config", "--libdir"], check=False).stdout.strip()
        pkglib = run(["pg_config", "--pkglibdir"], check=False).stdout.strip()
        archives = [f"{libdir}/libpq.a", f"{pkglib}/libpgcommon_shlib.a",
                    f"{pkglib}/libpgport_shlib.a"]
        if all(os.path.exists(a) for a in archives):
            pq = [os.path.join(ROOT, "shared", "link", "nogss.c")] + archives + ["-lssl", "-lcrypto"]
        else:
            pq = ["-lpq"]
        run(cc + ["-DFLOOR_LIBPQ", f"-I{inc}", "-o", f"{b}/floor-libpq", f"{HERE}/floor.c"] + pq)
        run(cc + ["-o", f"{b}/rsswrap", f"{HERE}/rsswrap.c"])
        self.tool = lambda name: os.path.join(b, name)

    def pgmail_env(self, db="pgmail", via=None):
        env = {"PGHOST": self.pg.dir, "PGPORT": "5432", "PGUSER": "postgres", "PGDATABASE": db,
               "PGMAIL_CONFIG": "/dev/null", "PGMAIL_HOSTNAME": f"mx.{DOMAIN}",
               "PGMAIL_LOG": "stderr"}
        if via:
            env.update(via.env())
        return env

    def ctl(self, *args, stdin=None, env_extra=None, db="pgmail"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(self.pgmail_env(db))
        env.update(env_extra or {})
        return run([os.path.join(self.bin, "admin", "pgmailctl")] + list(args), input=stdin,
                   env=env, timeout=120).stdout

    def new_db(self, db):
        self.pg.psql(f"CREATE DATABASE {db}", db="postgres")
        self.ctl("migrate", db=db)
        self.ctl("domain", "add", DOMAIN, db=db)

    def setup_db(self):
        log("loading accounts and mail")
        self.new_db("pgmail")
        sha = {"PGMAIL_PASSWORD_SCHEME": "sha512crypt"}
        self.ctl("user", "add", f"p00@{DOMAIN}", stdin=PASSWORD + "\n", env_extra=sha)
        self.ctl("user", "add", f"y00@{DOMAIN}", stdin=PASSWORD + "\n",
                 env_extra={"PGMAIL_PASSWORD_SCHEME": "yescrypt"})
        self.hash = self.pg.psql(f"SELECT password_hash FROM accounts WHERE address = 'p00@{DOMAIN}'").strip()
        yhash = self.pg.psql(f"SELECT password_hash FROM accounts WHERE address = 'y00@{DOMAIN}'").strip()
        if not self.hash.startswith("$6$") or not yhash.startswith("$y$"):
            raise BenchError(f"unexpected hashes {self.hash[:4]!r} {yhash[:4]!r}")
        self.yhash = yhash
        self.pop_users = [f"p{i:02d}" for i in range(NPAR)]
        self.yes_users = [f"y{i:02d}" for i in range(NPAR)]
        self.smtp_users = [f"s{i:02d}" for i in range(NPAR)]
        self.scale_sizes = [10, 10000] if self.quick else [10, 10000, 100000]
        self.scale_users = {n: f"m{n}" for n in self.scale_sizes}
        others = ([(u, self.hash) for u in self.pop_users[1:] + self.smtp_users + ["big"]] +
                  [(u, yhash) for u in self.yes_users[1:]] +
                  [(u, self.hash) for u in self.scale_users.values()])
        msg = message(MSG_SIZE, "pop3-bench")
        small = message(SCALE_MSG, "scale")
        sql = [f"INSERT INTO accounts (domain_id, address, password_hash) SELECT d.id, v.a, v.h"
               f" FROM domains d, (VALUES " +
               ", ".join(f"('{u}@{DOMAIN}', '{h}')" for u, h in others) +
               f") v(a, h) WHERE d.name = '{DOMAIN}';"]
        # One 4 KiB message in every POP3 account (its own copy, as SMTP would store it).
        users = ", ".join(f"'{u}@{DOMAIN}'" for u in self.pop_users + self.yes_users)
        sql.append(f"""
WITH a AS (SELECT id FROM accounts WHERE address IN ({users})),
m AS (INSERT INTO messages (sender, size, session_id, body)
      SELECT '{SENDER}', {MSG_SIZE}, 'fill-' || a.id, '\\x{msg.hex()}'::bytea FROM a
      RETURNING id, session_id)
INSERT INTO mailbox (account_id, message_id, size)
SELECT substring(session_id FROM 6)::bigint, id, {MSG_SIZE} FROM m;
UPDATE accounts SET used_bytes = {MSG_SIZE}, message_count = 1 WHERE address IN ({users});""")
        for n, u in self.scale_users.items():
            sql.append(f"""
WITH m AS (INSERT INTO messages (sender, size, session_id, body)
           SELECT '{SENDER}', {SCALE_MSG}, 'fill', '\\x{small.hex()}'::bytea
           FROM generate_series(1, {n}) RETURNING id)
INSERT INTO mailbox (account_id, message_id, size)
SELECT (SELECT id FROM accounts WHERE address = '{u}@{DOMAIN}'), id, {SCALE_MSG} FROM m;
UPDATE accounts SET used_bytes = {n * SCALE_MSG}, message_count = {n}
WHERE address = '{u}@{DOMAIN}';""")
        sql.append(f"""INSERT INTO accounts (domain_id, address, password_hash)
SELECT d.id, i || '{NUMBERED}@{DOMAIN}', '{self.hash}' FROM domains d,
generate_series(1, {NUMBERED_MAX}) i WHERE d.name = '{DOMAIN}';""")
        path = os.path.join(self.tmp, "fill.sql")
        with open(path, "w") as f:
            f.write("\n".join(sql))
        self.pg.psql(file=path)
        # Delivery scaling: the same account in a database of 10 and of 100,000 accounts.
        self.acct_dbs = {} if self.quick else {10: "pgmail_a10", 100000: "pgmail_a100k"}
        for n, db in self.acct_dbs.items():
            self.new_db(db)
            self.pg.psql(f"INSERT INTO accounts (domain_id, address, password_hash)"
                         f" SELECT d.id, 'a' || i || '@{DOMAIN}', '{self.hash}'"
                         f" FROM domains d, generate_series(1, {n}) i", db=db)
            self.pg.psql("VACUUM ANALYZE", db=db)
        self.pg.psql("VACUUM ANALYZE")
        self.pg.psql("CHECKPOINT")
        with open(os.path.join(self.tmp, "users-pop"), "w") as f:
            f.writelines(f"{u}@{DOMAIN} {PASSWORD}\n" for u in self.pop_users)
        with open(os.path.join(self.tmp, "users-yes"), "w") as f:
            f.writelines(f"{u}@{DOMAIN} {PASSWORD}\n" for u in self.yes_users)
        for n, u in self.scale_users.items():
            with open(os.path.join(self.tmp, f"users-{u}"), "w") as f:
                f.write(f"{u}@{DOMAIN} {PASSWORD}\n")
        with open(os.path.join(self.tmp, "users-big"), "w") as f:
            f.write(f"big@{DOMAIN} {PASSWORD}\n")

    def setup_anchors(self):
        log("configuring Postfix and Dovecot (private instances)")
        self.postfix = Postfix(self, self.smtp_users + ["big"])
        # Dovecot's maildirs: the same messages, stored as a Maildir stores them (LF).
        mroot = os.path.join(self.tmp, "dmail")
        msg = message(MSG_SIZE, "pop3-bench", crlf=False)

        def put(user, data, count, start=0):
            d = os.path.join(mroot, DOMAIN, user, "Maildir")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            vsize = len(data) + data.count(b"\n")
            for i in range(start, start + count):
                with open(os.path.join(d, "cur", f"{1700000000 + i}.M{i}P1.bench,S={len(data)},"
                                                 f"W={vsize}:2,S"), "wb") as f:
                    f.write(data)

        for u in self.pop_users:
            put(u, msg, 1)
        small = message(SCALE_MSG, "scale", crlf=False)
        for n, u in self.scale_users.items():
            if n <= DOVECOT_SCALE_MAX:
                put(u, small, n)
        put("big", message(BIG_SIZE, "big", crlf=False), 1)
        for dirpath, dirnames, filenames in os.walk(mroot):
            os.chown(dirpath, NOBODY, NOBODY)
        passwd = os.path.join(self.tmp, "dovecot-passwd")
        with open(passwd, "w") as f:
            for u in self.pop_users + ["big"] + list(self.scale_users.values()):
                f.write(f"{u}@{DOMAIN}:{{SHA512-CRYPT}}{self.hash}\n")
        os.chmod(passwd, 0o644)
        self.dovecot = Dovecot(self, "dovecot", mroot, passwd, hp=False)
        self.dovecot_hp = Dovecot(self, "dovecot-hp", mroot, passwd, hp=True)

    def cleanup(self):
        for p in self.perfs.values():
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in reversed(self.started):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                log(f"warning: stopping {type(s).__name__}: {e}")
        self.started = []
        if getattr(self, "tmp", None):
            if self.args.keep:
                log(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- load generators -----------------------------------------------------------------

    def smtp_run(self, port, conc, per_session, rcpts=None, count=None, seconds=None,
                 size=MSG_SIZE, postfix=None):
        """Send size-octet messages with smtp-source; returns (messages, seconds, errors).
        per_session 1: one smtp-source with conc parallel sessions and count messages, each
        to its own account N<NUMBERED>@ (smtp-source -N), or all to rcpts[0] when given.
        per_session > 1: conc workers, worker i sending to rcpts[i], one smtp-source session
        of per_session messages after the other until seconds have passed.
        For Postfix the clock stops when the last message is in its Maildir."""
        base = ["smtp-source", "-l", str(size), "-f", SENDER, "-M", "client.bench.test"]
        errors = []
        t0 = time.monotonic()
        if per_session == 1:
            to = ["-t", f"{rcpts[0]}@{DOMAIN}"] if rcpts else ["-N", "-t", f"{NUMBERED}@{DOMAIN}"]
            dirs = rcpts[:1] if rcpts else [NUMBERED]
            r = subprocess.run(base + ["-s", str(conc), "-m", str(count)] + to +
                               [f"127.0.0.1:{port}"], capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                errors.append(r.stderr.strip()[-300:])
            total = count
            end = time.monotonic()
        else:
            dirs = rcpts[:conc]
            ends = [0.0] * conc
            done = [0] * conc
            start_evt = threading.Event()

            def worker(i):
                cmd = base + ["-s", "1", "-d", "-m", str(per_session),
                              "-t", f"{rcpts[i % len(rcpts)]}@{DOMAIN}", f"127.0.0.1:{port}"]
                start_evt.wait()
                try:
                    while True:
                        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                        if r.returncode != 0:
                            errors.append(r.stderr.strip()[-300:])
                            break
                        done[i] += per_session
                        if time.monotonic() >= t0 + seconds:
                            break
                except subprocess.TimeoutExpired:
                    errors.append("smtp-source timed out")
                ends[i] = time.monotonic()

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            start_evt.set()
            for t in threads:
                t.join()
            end = max(ends)
            total = sum(done)
        if postfix is not None and not errors:
            # Postfix said 250 at queueing; the message is delivered when in the Maildir.
            deadline = time.monotonic() + 120
            while postfix.delivered(dirs) < total:
                if time.monotonic() > deadline:
                    errors.append("Postfix did not deliver everything within 120 s")
                    break
                time.sleep(0.005)
            end = time.monotonic()
        if errors:
            log(f"  smtp-source errors: {errors[0]}")
        return total, end - t0, len(errors)

    def pop3_run(self, port, conc, users, seconds=None, n=None, script="STAT,RETR 1"):
        cmd = [self.tool("pop3load"), "-p", str(port), "-c", str(conc), "-s", script]
        if script != "greet":
            cmd += ["-u", os.path.join(self.tmp, users)]
        cmd += ["-t", f"{seconds:.3f}"] if seconds else ["-n", str(n)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        m = dict(kv.split("=") for kv in r.stdout.split())
        if r.returncode != 0:
            log(f"  pop3load: {r.stderr.strip()[:300]}")
        return {k: float(v) for k, v in m.items()}

    # -- measuring -----------------------------------------------------------------------

    def measure(self, fn, server_pids, db_pids):
        """Run fn() -> (ops, seconds, errors) with the counters attached."""
        cs = Counter(self, server_pids).start()
        cd = Counter(self, db_pids).start() if db_pids else None
        ops, secs, errors = fn()
        f, c = cs.stop()
        df, dc = cd.stop() if cd else (0, 0.0)
        return Sample(ops / secs if secs > 0 else 0.0, ops, f, df, c, dc, errors)

    def db_pids(self, via=None):
        return self.pg.pids() + (via.pids() if via else [])

    def compete(self, title, systems):
        """Warm each system up, then measure them in turns, runs times."""
        log(f"{title}: " + ", ".join(s.label for s in systems))
        for s in systems:
            if s.warm:
                s.warm()
        for r in range(self.runs):
            for s in systems:
                sample = s.fn()
                s.samples.append(sample)
        for s in systems:
            log(f"  {s.label:28s} {s.median():9.1f}  faults/op {s.median('faults'):7.0f}"
                f" + db {s.median('db_faults'):6.0f}  cpu ms/op {s.median('cpu'):6.2f}"
                f" + db {s.median('db_cpu'):6.2f}" +
                (f"  errors {sum(x.errors for x in s.samples)}" if any(x.errors for x in s.samples) else ""))
        return {s.key: s for s in systems}

    def result(self, name, unit, kind, pg, anchor, anchor_label, note=""):
        self.results.append((name, unit, kind, pg, anchor, anchor_label, note))

    # -- SMTP ----------------------------------------------------------------------------

    def smtp_system(self, key, label, port, conc, per, server, db, postfix=None, rcpts=None):
        rcpts = rcpts or (None if per == 1 else self.smtp_users)
        hint = {"rate": None}

        def once(seconds, counted=True):
            if postfix:
                postfix.clear(rcpts or [NUMBERED])
            count = None
            if per == 1:  # a message count that lasts about seconds at the last rate seen
                count = int(hint["rate"] * seconds) if hint["rate"] else max(conc, 4)
                count = min(max(count, conc), NUMBERED_MAX)
            fn = lambda: self.smtp_run(port, conc, per, rcpts, count=count, seconds=seconds,
                                       postfix=postfix)
            s = self.measure(fn, server(), db()) if counted else self.measure(fn, [], [])
            if s.value > 0:
                hint["rate"] = s.value
            return s

        def warm():
            once(self.warm_seconds / 2, counted=False)
            once(self.warm_seconds, counted=False)

        return System(key, label, lambda: once(self.seconds), warm)

    def smtp_figures(self):
        pf = self.postfix
        sm = os.path.join(self.bin, "smtp", "pgmail-smtpd")
        spawners = {
            "direct": Spawner(self, "smtpd-direct", [sm], self.pgmail_env()),
            "session": Spawner(self, "smtpd-pgb-session", [sm],
                               self.pgmail_env(via=self.pgb["session"])),
            "transaction": Spawner(self, "smtpd-pgb-tx", [sm],
                                   self.pgmail_env(via=self.pgb["transaction"])),
        }
        floors = {
            "spawn": Spawner(self, "floor-smtp", [self.tool("floor"), "smtp"], {}),
            "libpq": Spawner(self, "floor-libpq-smtp", [self.tool("floor-libpq"), "smtp"],
                             self.pgmail_env()),
            "libpq-tx": Spawner(self, "floor-libpq-tx-smtp", [self.tool("floor-libpq"), "smtp"],
                                self.pgmail_env(via=self.pgb["transaction"])),
        }
        vias = {"direct": None, "session": self.pgb["session"],
                "transaction": self.pgb["transaction"]}
        for per in (1, 10):
            for conc in (1, NPAR):
                fig = f"smtp_{per}msg_c{conc}"
                systems = []
                for mode, sp in spawners.items():
                    if self.quick and mode == "session":
                        continue
                    systems.append(self.smtp_system(
                        mode, f"pgmail {mode}", sp.port, conc, per, sp.pids,
                        lambda v=vias[mode]: self.db_pids(v)))
                systems.append(self.smtp_system("postfix", "Postfix", pf.port, conc, per,
                                                pf.pids, lambda: [], postfix=pf))
                if per == 1:
                    for key, sp in floors.items():
                        via = self.pgb["transaction"] if key == "libpq-tx" else None
                        systems.append(self.smtp_system(
                            f"floor-{key}", f"floor {key}", sp.port, conc, per, sp.pids,
                            (lambda v=via: self.db_pids(v)) if key != "spawn" else (lambda: [])))
                    systems.append(self.pgbench_system(conc, connect=True))
                else:
                    systems.append(self.pgbench_system(conc, connect=False))
                s = self.compete(f"{fig} (msgs/s)", systems)
                self.result(fig, "msgs/s", "rate", s["direct"], s["postfix"], "Postfix")
                for mode in ("session", "transaction"):
                    if mode in s:
                        self.result(f"{fig}_pgbouncer_{mode}", "msgs/s", "rate", s[mode],
                                    s["postfix"], "Postfix")
                if per == 1:
                    self.result(f"floor_spawn_{fig}", "msgs/s", "rate", s["direct"],
                                s["floor-spawn"], "spawn floor")
                    self.result(f"floor_libpq_{fig}", "msgs/s", "rate", s["direct"],
                                s["floor-libpq"], "libpq floor")
                    self.result(f"floor_libpq_{fig}_pgbouncer_transaction", "msgs/s", "rate",
                                s["transaction"], s["floor-libpq-tx"], "libpq floor (PgBouncer)")
                    self.result(f"floor_pgbench_connect_{fig}", "msgs/s", "rate", s["direct"],
                                s["pgbench"], "pgbench -C deliver")
                else:
                    self.result(f"floor_pgbench_{fig}", "msgs/s", "rate", s["direct"],
                                s["pgbench"], "pgbench deliver")
                    self.result(f"floor_pgbench_{fig}_pgbouncer_transaction", "msgs/s", "rate",
                                s["transaction"], s["pgbench"], "pgbench deliver")
        for sp in list(spawners.values()) + list(floors.values()):
            sp.stop()
            self.started.remove(sp)

    def pgbench_system(self, conc, connect):
        """The delivery alone (the statements smtp/sql.c runs for one message without bounces:
        the recipient lookup that draws the message id, then the COPY as an INSERT, which
        delivers through its trigger and commits on its own), each client into its own
        account as the SMTP load does; -C: a new connection per message."""
        script = os.path.join(self.tmp, "deliver.sql")
        if not os.path.exists(script):
            body = message(MSG_SIZE, "pgbench").hex()
            ids = [int(x) for x in self.pg.psql(
                "SELECT id FROM accounts WHERE address LIKE 's__@%' ORDER BY address").split()]
            if ids != list(range(ids[0], ids[0] + NPAR)):
                raise BenchError(f"the SMTP accounts' ids are not consecutive: {ids}")
            with open(script, "w") as f:
                f.write(f"""\\set acct {ids[0]} + :client_id % {NPAR}
SELECT domain_id, account_id, quota_bytes, used_bytes, statement_timeout, message_id FROM pgmail_rcpt_lookup('s00@{DOMAIN}', '{DOMAIN}', true, NULL) \\gset
INSERT INTO messages (id, sender, session_id, deliver_to, body, size) VALUES (:message_id, '{SENDER}', 'pgbench', ARRAY[:acct]::bigint[], '\\x{body}'::bytea, {MSG_SIZE});
""")

        def go(seconds):
            cmd = ["pgbench", "-n", "-M", "extended", "-f", script, "-c", str(conc),
                   "-j", str(min(conc, 2)), "-T", str(max(1, int(round(seconds)))),
                   "-h", self.pg.dir, "-U", "postgres", "pgmail"]
            if connect:
                cmd.insert(1, "-C")

            def fn():
                r = run(cmd, check=False, timeout=120)
                m = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
                t = re.search(r"tps = ([\d.]+) \((?:without|excluding)", r.stdout) or \
                    re.search(r"tps = ([\d.]+)", r.stdout)
                if r.returncode != 0 or not m or not t:
                    log(f"  pgbench failed: {r.stderr.strip()[:300]}")
                    return 0, 1.0, 1
                n = int(m.group(1))
                return n, n / float(t.group(1)), 0
            return self.measure(fn, [], self.pg.pids())

        label = "pgbench -C deliver" if connect else "pgbench deliver"
        return System("pgbench", label, lambda: go(self.seconds), None)

    # -- POP3 ----------------------------------------------------------------------------

    def pop3_system(self, key, label, port, conc, server, db, users="users-pop", script=None):
        def once(seconds, counted=True):
            def fn():
                m = self.pop3_run(port, conc, users, seconds=seconds,
                                  script=script or "STAT,RETR 1")
                return m["sessions"], m["elapsed"], m["errors"]
            return self.measure(fn, server() if counted else [], db() if counted else [])
        return System(key, label, lambda: once(self.seconds),
                      lambda: once(self.warm_seconds, counted=False))

    def pop3_figures(self):
        pd = os.path.join(self.bin, "pop3", "pgmail-pop3d")
        spawners = {
            "direct": Spawner(self, "pop3d-direct", [pd], self.pgmail_env()),
            "session": Spawner(self, "pop3d-pgb-session", [pd],
                               self.pgmail_env(via=self.pgb["session"])),
            "transaction": Spawner(self, "pop3d-pgb-tx", [pd],
                                   self.pgmail_env(via=self.pgb["transaction"])),
        }
        fl = Spawner(self, "floor-pop3", [self.tool("floor"), "pop3"], {})
        fl_pq = Spawner(self, "floor-libpq-pop3", [self.tool("floor-libpq"), "pop3"],
                        self.pgmail_env())
        vias = {"direct": None, "session": self.pgb["session"],
                "transaction": self.pgb["transaction"]}
        for conc in (1, NPAR):
            fig = f"pop3_c{conc}"
            systems = []
            for mode, sp in spawners.items():
                if self.quick and mode == "session":
                    continue
                systems.append(self.pop3_system(mode, f"pgmail {mode}", sp.port, conc, sp.pids,
                                                lambda v=vias[mode]: self.db_pids(v)))
            if not self.quick:
                systems.append(self.pop3_system("yescrypt", "pgmail direct, yescrypt",
                                                spawners["direct"].port, conc,
                                                spawners["direct"].pids, self.db_pids,
                                                users="users-yes"))
            systems.append(self.pop3_system("dovecot", "Dovecot", self.dovecot.port, conc,
                                            self.dovecot.pids, lambda: []))
            systems.append(self.pop3_system("dovecot-hp", "Dovecot high-perf login",
                                            self.dovecot_hp.port, conc, self.dovecot_hp.pids,
                                            lambda: []))
            systems.append(self.pop3_system("floor-spawn", "floor spawn", fl.port, conc, fl.pids,
                                            lambda: []))
            systems.append(self.pop3_system("floor-libpq", "floor libpq", fl_pq.port, conc,
                                            fl_pq.pids, self.db_pids))
            s = self.compete(f"{fig} (sessions/s)", systems)
            self.result(fig, "sessions/s", "rate", s["direct"], s["dovecot"], "Dovecot")
            self.result(f"{fig}_vs_dovecot_hp", "sessions/s", "rate", s["direct"],
                        s["dovecot-hp"], "Dovecot high-perf")
            for mode in ("session", "transaction"):
                if mode in s:
                    self.result(f"{fig}_pgbouncer_{mode}", "sessions/s", "rate", s[mode],
                                s["dovecot"], "Dovecot")
            self.result(f"floor_spawn_{fig}", "sessions/s", "rate", s["direct"],
                        s["floor-spawn"], "spawn floor")
            self.result(f"floor_libpq_{fig}", "sessions/s", "rate", s["direct"],
                        s["floor-libpq"], "libpq floor")
            if "yescrypt" in s:
                self.result(f"{fig}_yescrypt", "sessions/s", "rate", s["yescrypt"], s["direct"],
                            "pgmail sha512crypt")
        for sp in list(spawners.values()) + [fl, fl_pq]:
            sp.stop()
            self.started.remove(sp)

    # -- scaling -------------------------------------------------------------------------

    def scaling(self):
        pd = os.path.join(self.bin, "pop3", "pgmail-pop3d")
        sp = Spawner(self, "pop3d-scale", [pd], self.pgmail_env())
        log("scaling: STAT, LIST, UIDL on mailboxes of " +
            ", ".join(str(n) for n in self.scale_sizes) + " messages (ms per session)")
        times = {}
        cmds = ("STAT",) if self.quick else ("STAT", "LIST", "UIDL")
        for n in self.scale_sizes:
            users = f"users-{self.scale_users[n]}"
            count = 10 if n <= 10000 else 4
            if self.quick:
                count = 4
            for cmd in cmds:
                contenders = [("pgmail", sp.port, sp.pids, self.db_pids)]
                if n <= DOVECOT_SCALE_MAX:
                    contenders.append(("dovecot", self.dovecot_hp.port, self.dovecot_hp.pids,
                                       lambda: []))
                for key, port, server, db in contenders:
                    self.pop3_run(port, 1, users, n=1, script=cmd)  # warm (Dovecot indexes)
                    times[(n, cmd, key)] = System(key, key, None)
                for r in range(self.runs):
                    for key, port, server, db in contenders:
                        m = {}

                        def fn():
                            m.update(self.pop3_run(port, 1, users, n=count, script=cmd))
                            return m["sessions"], m["elapsed"], m["errors"]
                        smp = self.measure(fn, server(), db())
                        smp.value = m["median_ms"]
                        times[(n, cmd, key)].samples.append(smp)
                dv = times.get((n, cmd, "dovecot"))
                log(f"  {n:6d} {cmd}: pgmail {times[(n, cmd, 'pgmail')].median():8.2f} ms"
                    f" (CPU {times[(n, cmd, 'pgmail')].median('cpu'):.1f} + db "
                    f"{times[(n, cmd, 'pgmail')].median('db_cpu'):.1f})" +
                    (f"  Dovecot {dv.median():8.2f} ms (CPU {dv.median('cpu'):.1f})" if dv else ""))
        sp.stop()
        self.started.remove(sp)
        big = self.scale_sizes[-1]
        for n in self.scale_sizes:
            for cmd in cmds:
                if (n, cmd, "dovecot") not in times:
                    continue
                self.result(f"pop3_{cmd.lower()}_{n}msgs_ms", "ms/session", "time",
                            times[(n, cmd, "pgmail")], times[(n, cmd, "dovecot")],
                            "Dovecot high-perf")
        def cpu_of(sysm):  # the same sessions, CPU (handler + database) instead of wall time
            c = System(sysm.key, sysm.label, None)
            c.samples = [Sample(x.cpu + x.db_cpu) for x in sysm.samples]
            for x, y in zip(c.samples, sysm.samples):
                x.faults, x.db_faults, x.cpu, x.db_cpu = y.faults, y.db_faults, y.cpu, y.db_cpu
            return c

        for cmd in cmds:
            self.result(f"pop3_{cmd.lower()}_growth_{big}_vs_10", "ms/session", "time",
                        times[(big, cmd, "pgmail")], times[(10, cmd, "pgmail")],
                        "pgmail on 10 msgs")
            # wall time swings with the neighbours; CPU per session is the steadier measure
            self.result(f"pop3_{cmd.lower()}_cpu_growth_{big}_vs_10", "CPU ms", "time",
                        cpu_of(times[(big, cmd, "pgmail")]), cpu_of(times[(10, cmd, "pgmail")]),
                        "pgmail on 10 msgs")
        # Delivery into a database of 10 and of 100,000 accounts.
        if not self.acct_dbs:
            return
        sm = os.path.join(self.bin, "smtp", "pgmail-smtpd")
        systems = []
        sps = []
        for n, db in self.acct_dbs.items():
            s = Spawner(self, f"smtpd-{db}", [sm], self.pgmail_env(db=db))
            sps.append(s)
            # a7 exists in both databases (accounts a1..aN)
            systems.append(self.smtp_system(f"a{n}", f"pgmail, {n} accounts", s.port, 1, 10,
                                            s.pids, self.db_pids, rcpts=["a7"]))
        res = self.compete("delivery scaling (msgs/s, 10 msgs/session, 1 session)", systems)
        self.result("smtp_deliver_100000_accounts", "msgs/s", "rate", res["a100000"], res["a10"],
                    "pgmail, 10 accounts")
        for s in sps:
            s.stop()
            self.started.remove(s)

    # -- memory --------------------------------------------------------------------------

    def memory(self):
        log(f"memory: peak RSS receiving and retrieving {MSG_SIZE} octets and {BIG_SIZE >> 20} MiB")
        rlog = os.path.join(self.tmp, "rss.log")
        sm = os.path.join(self.bin, "smtp", "pgmail-smtpd")
        pd = os.path.join(self.bin, "pop3", "pgmail-pop3d")
        ssp = Spawner(self, "smtpd-rss", [self.tool("rsswrap"), rlog, sm], self.pgmail_env())
        psp = Spawner(self, "pop3d-rss", [self.tool("rsswrap"), rlog, pd], self.pgmail_env())
        fsp = Spawner(self, "floor-rss", [self.tool("rsswrap"), rlog, self.tool("floor"), "smtp"], {})
        qsp = Spawner(self, "floor-libpq-rss", [self.tool("rsswrap"), rlog,
                                                self.tool("floor-libpq"), "smtp"],
                      self.pgmail_env())

        def last_rss(action):
            before = os.path.getsize(rlog) if os.path.exists(rlog) else 0
            action()
            wait_until(lambda: os.path.exists(rlog) and os.path.getsize(rlog) > before, 30,
                       "the RSS record")
            time.sleep(0.1)
            line = open(rlog).read()[before:].strip().splitlines()[-1]
            return int(re.search(r"maxrss_kb=(\d+)", line).group(1)) / 1024

        def smtp_one(port, rcpt, size, postfix=None):
            self.smtp_run(port, 1, 1, [rcpt], count=1, size=size, postfix=postfix)

        out = {}
        out["floor"] = last_rss(lambda: smtp_one(fsp.port, "s00", MSG_SIZE))
        out["floor-libpq"] = last_rss(lambda: smtp_one(qsp.port, "s00", MSG_SIZE))
        out["smtpd-small"] = last_rss(lambda: smtp_one(ssp.port, "s00", MSG_SIZE))
        out["smtpd-big"] = last_rss(lambda: smtp_one(ssp.port, "big", BIG_SIZE))
        out["pop3d-small"] = last_rss(lambda: self.pop3_run(psp.port, 1, "users-pop", n=1))
        out["pop3d-big"] = last_rss(lambda: self.pop3_run(psp.port, 1, "users-big", n=1))
        for s in (ssp, psp, fsp, qsp):
            s.stop()
            self.started.remove(s)
        # Postfix: the processes that take the message in (smtpd), queue it (cleanup) and
        # deliver it (virtual); Dovecot: the pop3 process. VmHWM sampled every 10 ms.
        self.postfix.clear(["big"])
        with PeakRSS([self.postfix.master()]) as pk:
            smtp_one(self.postfix.port, "big", BIG_SIZE, postfix=self.postfix)
        pf = pk.peak
        with PeakRSS([self.dovecot.proc.pid]) as pk:
            self.pop3_run(self.dovecot.port, 1, "users-big", n=1, script="RETR 1,SLEEP 300")
        dv = pk.peak
        with PeakRSS([self.dovecot.proc.pid]) as pk:
            self.pop3_run(self.dovecot.port, 1, "users-pop", n=1, script="STAT,RETR 1,SLEEP 300")
        dv_small = pk.peak
        log("  pgmail (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()))
        log("  Postfix (MiB, 20 MiB message): " +
            ", ".join(f"{k} {v:.1f}" for k, v in sorted(pf.items())))
        log("  Dovecot (MiB, RETR 20 MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(dv.items())))

        def val(v):
            s = System("m", "m", None)
            s.samples = [Sample(v)]
            return s
        self.result(f"mem_smtp_receive_{BIG_SIZE >> 20}MiB", "MiB", "mem", val(out["smtpd-big"]),
                    val(pf.get("smtpd", float("nan"))), "Postfix smtpd")
        self.result(f"mem_smtp_receive_4KiB", "MiB", "mem", val(out["smtpd-small"]),
                    val(out["floor-libpq"]), "libpq floor")
        self.result(f"mem_pop3_retr_{BIG_SIZE >> 20}MiB", "MiB", "mem", val(out["pop3d-big"]),
                    val(dv.get("pop3", float("nan"))), "Dovecot pop3")
        self.result("mem_pop3_retr_4KiB", "MiB", "mem", val(out["pop3d-small"]),
                    val(dv_small.get("pop3", float("nan"))), "Dovecot pop3")
        self.notes.append(
            "memory (peak RSS, MiB): pgmail-smtpd %.1f (4 KiB) / %.1f (20 MiB), pgmail-pop3d "
            "%.1f / %.1f; trivial floor %.1f, libpq floor %.1f; Postfix with 20 MiB: %s; "
            "Dovecot RETR 20 MiB: %s" % (
                out["smtpd-small"], out["smtpd-big"], out["pop3d-small"], out["pop3d-big"],
                out["floor"], out["floor-libpq"],
                ", ".join(f"{k} {v:.1f}" for k, v in sorted(pf.items())),
                ", ".join(f"{k} {v:.1f}" for k, v in sorted(dv.items()))))

    def hash_costs(self):
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import crypt
        except ImportError:
            return
        for name, h in (("sha512crypt", self.hash), ("yescrypt", self.yhash)):
            ts = []
            for _ in range(5):
                t = time.process_time()
                crypt.crypt(PASSWORD, h)
                ts.append((time.process_time() - t) * 1000)
            self.notes.append(f"one {name} verification ({h[:h.find('$', 3) + 1]}...): "
                              f"{med(ts):.1f} ms CPU")

    # -- report --------------------------------------------------------------------------

    def report(self):
        def fmt(v):
            if v != v:  # nan
                return "n/a"
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"

        lines = []
        hdr = (f"{'figure':44s} {'unit':10s} {'pgmail':>9s} {'anchor':>9s} {'ratio':>6s}  "
               f"{'anchor is':24s} {'flt/op':>7s} {'+db':>6s} {'cpu ms':>7s} {'+db':>6s}"
               f" {'anchor flt':>10s} {'cpu ms':>7s}")
        lines.append(hdr)
        lines.append("-" * len(hdr))
        machine = []
        for name, unit, kind, pg, an, alabel, note in self.results:
            pv, av = pg.median(), an.median()
            if kind == "rate":
                ratio = pv / av if av else float("nan")
            else:
                ratio = av / pv if pv else float("nan")
            prof = [pg.median("faults"), pg.median("db_faults"), pg.median("cpu"),
                    pg.median("db_cpu"), an.median("faults") + an.median("db_faults"),
                    an.median("cpu") + an.median("db_cpu")]
            has_prof = kind != "mem"
            lines.append(f"{name:44s} {unit:10s} {fmt(pv):>9s} {fmt(av):>9s} {fmt(ratio):>6s}  "
                         f"{alabel:24s} " +
                         (" ".join(f"{fmt(x):>{w}s}" for x, w in zip(prof, (7, 6, 7, 6, 10, 7)))
                          if has_prof else ""))
            machine.append(f"RESULT {name} pgmail={pv:.4g} anchor={av:.4g} ratio={ratio:.3f}")
            if has_prof:
                machine.append(
                    f"PROFILE {name} pgmail_faults={prof[0]:.0f} pgmail_db_faults={prof[1]:.0f} "
                    f"pgmail_cpu_ms={prof[2]:.3f} pgmail_db_cpu_ms={prof[3]:.3f} "
                    f"anchor_faults={prof[4]:.0f} anchor_cpu_ms={prof[5]:.3f}")
        print()
        print(f"pgmail bench ({'quick' if self.quick else 'full'}: medians of {self.runs} run(s) "
              f"of ~{self.seconds:g} s; ratio > 1: pgmail better; flt/op, cpu ms: page faults "
              f"and CPU per message or session of the handlers/daemons, +db: PostgreSQL and "
              f"PgBouncer)")
        print("\n".join(lines))
        for n in self.notes:
            print(f"note: {n}")
        print()
        print("\n".join(machine))
        sys.stdout.flush()
        if self.args.json:
            data = []
            for name, unit, kind, pg, an, alabel, note in self.results:
                data.append({"name": name, "unit": unit, "kind": kind, "anchor": alabel,
                             "pgmail": [vars(s) for s in pg.samples],
                             "anchor_samples": [vars(s) for s in an.samples]})
            with open(self.args.json, "w") as f:
                json.dump({"results": data, "notes": self.notes}, f, indent=1)

    def main(self):
        t0 = time.monotonic()
        self.setup()
        log(f"set up in {time.monotonic() - t0:.0f} s")
        self.hash_costs()
        self.smtp_figures()
        self.pop3_figures()
        self.scaling()
        self.memory()
        log(f"done in {time.monotonic() - t0:.0f} s")


def arg_parser(description, limit, quick_limit):
    """The options every bench script of tests/bench/ takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="1 run, short loads (make bench-quick)")
    ap.add_argument("--runs", type=int, help="measured runs per figure (3; quick: 1)")
    ap.add_argument("--seconds", type=float, help="seconds per measured run (2; quick: 0.8)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="write every sample to this file")
    ap.add_argument("--bin", help="directory holding the built smtp/ pop3/ admin/ programs")
    ap.add_argument("--limit", type=int,
                    help=f"abort after this many seconds ({limit}; quick {quick_limit})")
    ap.set_defaults(default_limit=(limit, quick_limit))
    return ap


def run_bench(bench, args):
    """bench.main() under the time limit; cleanup and report whatever happens; exits."""
    limit = args.limit or args.default_limit[1 if args.quick else 0]

    def on_alarm(signum, frame):
        raise TimeLimit(f"time limit of {limit} s reached")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.alarm(limit)
    rc = 0
    try:
        bench.main()
    except (BenchError, TimeLimit, KeyboardInterrupt, subprocess.TimeoutExpired) as e:
        log(f"stopped: {e}")
        rc = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()
    if bench.results:
        bench.report()
    sys.exit(rc)


def main():
    args = arg_parser("pgmail benchmark against Postfix and Dovecot", 870, 240).parse_args()
    run_bench(Bench(args), args)


if __name__ == "__main__":
    main()
