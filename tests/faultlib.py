"""faultlib.py - what the fault-injection tests (test_faults.py) and the soak
(tests/soak/soak.py) share: a second, private PostgreSQL cluster that a test may stop and
restart without disturbing the runner's, a psql session that holds locks or connections
for as long as a test wants, and the ways to find and end a handler's database backend.

  PgCluster(dir)                  tests/lib/pg.sh start|stop on dir, psql, fixtures
  private_pg(ctx)                 a PgCluster for this pass, started, fixtures loaded, mail
                                  emptied; returns (cluster, pctx): pctx is a harness.Ctx
                                  whose database is the private cluster (ctx.tcp, psql,
                                  messages, pop3lib.pop3_tcp all work on it); stopped by
                                  the runner after the test (it sits in ctx._servers)
  PsqlSession(pgdir, user=)       a long-lived psql: run(sql) and wait; close() ends it
  backends(ctx, app)              pids of the handler's backends (pg_stat_activity)
  terminate(ctx, app)             pg_terminate_backend of each; how many
  wait_backend_state(ctx, app, ...)  until a backend waits on a lock (wait_event_type)
  wait_no_backends(ctx)           until no pgmail handler holds a database connection
  FaultRole(ctx)                  a non-superuser login role with the rights the handlers
                                  need, for CONNECTION LIMIT and ALTER ROLE SET (superusers
                                  are exempt from connection limits); dropped on exit
  handler_pids(srv)               pids of the handlers a TcpServer spawned
  alive(pid)                      the process exists and is not a zombie

Every change to the runner's cluster (roles, settings, locks) is undone in finally blocks
or context managers; processes are started here and stopped by their PID only.

Python 3 standard library only.
"""

import atexit
import copy
import os
import shutil
import subprocess
import time

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
PG_SH = os.path.join(HERE, "lib", "pg.sh")

SMTPD = "pgmail-smtpd"
POP3D = "pgmail-pop3d"


# ---------------------------------------------------------------------------------------
# A private cluster

class PgCluster:
    """A PostgreSQL cluster made and run by tests/lib/pg.sh under dir (Unix socket only)."""

    _started = []  # every cluster this process started, stopped at exit if still up

    def __init__(self, dir):
        self.dir = dir
        self.running = False

    def _pg(self, cmd, timeout=120):
        r = subprocess.run(["sh", PG_SH, cmd, self.dir], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"pg.sh {cmd} {self.dir} failed: {r.stderr.strip()[-500:]}")

    def start(self):
        self._pg("start")
        self.running = True
        if self not in PgCluster._started:
            PgCluster._started.append(self)

    def stop(self, check=True):
        """Fast shutdown (backends are terminated); a no-op when it is not running."""
        if self.running or os.path.exists(os.path.join(self.dir, "data", "postmaster.pid")):
            self._pg("stop")
        self.running = False

    def restart(self):
        self.stop()
        self.start()

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def psql(self, sql, db="postgres", user="postgres", timeout=60):
        r = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
                            "-U", user, "-d", db, "-c", sql],
                           capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({sql[:80]!r}): {r.stderr.decode().strip()}")
        return r.stdout.decode("utf-8", "backslashreplace")


@atexit.register
def _stop_leftovers():
    for c in PgCluster._started:
        if c.running:
            try:
                c.stop()
            except Exception:
                pass


def load_fixtures(pctx):
    """The runner's fixtures (tests/run.py setup_pass) in database pgmail_test of pctx's
    cluster, made with this pass's pgmailctl."""
    pctx.psql("DROP DATABASE IF EXISTS pgmail_test WITH (FORCE)", db="postgres")
    pctx.psql("CREATE DATABASE pgmail_test", db="postgres")
    pctx.ctl("migrate")
    pctx.ctl("domain", "add", "example.test")
    pctx.ctl("domain", "add", "other.test")
    for user in ("alice@example.test", "bob@example.test"):
        pctx.ctl("user", "add", user, stdin=(harness.PASSWORDS[user] + "\n").encode())
    pctx.ctl("user", "add", "carol@example.test", "--quota", str(harness.CAROL_QUOTA),
             stdin=(harness.PASSWORDS["carol@example.test"] + "\n").encode())
    pctx.ctl("alias", "add", "info@example.test", "alice@example.test")


def private_pg(ctx):
    """(cluster, pctx) for a test that stops or restarts the database: a second cluster
    under ctx.tmp, made once per pass (initdb takes seconds) and started here; pctx is a
    copy of ctx pointed at it. The cluster joins ctx._servers, so the runner stops it after
    the test like a TCP server (before that, the handlers the test started are stopped,
    since they were registered later)."""
    cluster = getattr(ctx, "_fault_pg", None)
    if cluster is None:
        cluster = PgCluster(os.path.join(ctx.tmp, "fault-pg"))
        cluster.fixtures = False
        ctx._fault_pg = cluster
    pctx = copy.copy(ctx)  # shares _servers and tmp with ctx
    pctx.pgdir = cluster.dir
    if not cluster.running:
        cluster.start()
    if cluster not in ctx._servers:
        ctx._servers.insert(0, cluster)
    if not cluster.fixtures:
        load_fixtures(pctx)
        cluster.fixtures = True
    pctx.reset_mail()
    return cluster, pctx


# ---------------------------------------------------------------------------------------
# A psql session that stays open

class PsqlSession:
    """psql reading commands from a pipe: run(sql) sends sql and waits until psql has done
    it (an \\echo marker comes back). Used to hold a lock or a connection while a handler
    runs into it. close() sends \\q (ending the transaction, so locks go), then kills the
    psql by PID if it does not go."""

    MARK = "__faultlib_done__"

    def __init__(self, pgdir, user="postgres", db="pgmail_test"):
        self.proc = subprocess.Popen(
            ["psql", "-XAtq", "-h", pgdir, "-U", user, "-d", db],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1)

    def run(self, sql, timeout=20):
        """Run sql; returns what psql printed (errors included) before the marker."""
        self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self.MARK + "\n")
        self.proc.stdin.flush()
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ln = self.proc.stdout.readline()
            if ln == "":
                raise RuntimeError(f"psql session ended: {''.join(out)[-300:]}")
            if ln.rstrip("\n") == self.MARK:
                return "".join(out)
            out.append(ln)
        raise RuntimeError(f"psql session: no answer to {sql[:60]!r} in {timeout}s")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\\q\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


# ---------------------------------------------------------------------------------------
# Handler backends

def backends(ctx, app=None):
    """PIDs of the backends of pgmail handlers (application_name, set by shared/db.c from
    the program name) connected to pgmail_test; app picks one program."""
    where = (f"application_name = '{app}'" if app
             else f"application_name IN ('{SMTPD}', '{POP3D}')")
    out = ctx.psql(f"SELECT pid FROM pg_stat_activity WHERE {where}"
                   " AND datname = 'pgmail_test' ORDER BY backend_start", db="postgres")
    return [int(x) for x in out.split()]


def wait_backends(ctx, app, count=1, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        pids = backends(ctx, app)
        if len(pids) >= count:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"{app} has {len(pids)} database connection(s), "
                                 f"expected {count} within {timeout}s")
        time.sleep(0.02)


def terminate(ctx, app):
    """pg_terminate_backend of every backend of app; returns how many were ended, and waits
    until they are gone from pg_stat_activity."""
    pids = backends(ctx, app)
    for pid in pids:
        ctx.psql(f"SELECT pg_terminate_backend({pid})", db="postgres")
    deadline = time.monotonic() + 10
    while set(backends(ctx, app)) & set(pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"backends {pids} of {app} still there 10s after "
                                 "pg_terminate_backend")
        time.sleep(0.02)
    return len(pids)


def wait_backend_state(ctx, app, wait_event_type="Lock", timeout=10):
    """Wait until a backend of app waits on wait_event_type (a lock held by the test)."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(ctx.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
            f" AND wait_event_type = '{wait_event_type}'", db="postgres").strip())
        if n:
            return
        if time.monotonic() > deadline:
            state = ctx.psql("SELECT application_name, state, wait_event_type, wait_event,"
                             " left(query, 60) FROM pg_stat_activity"
                             f" WHERE application_name = '{app}'", db="postgres")
            raise AssertionError(f"{app} did not wait on a {wait_event_type} within "
                                 f"{timeout}s: {state.strip()!r}")
        time.sleep(0.02)


def wait_no_backends(ctx, timeout=10):
    """Assert that within timeout no pgmail handler holds a connection to pgmail_test (a
    connection left behind would be a leak, or a lock held for ever)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = backends(ctx)
        if not pids:
            return
        if time.monotonic() > deadline:
            rows = ctx.psql("SELECT pid, application_name, state, left(query, 60)"
                            " FROM pg_stat_activity WHERE application_name LIKE 'pgmail-%'",
                            db="postgres")
            raise AssertionError(f"database connections left behind {timeout}s after the "
                                 f"handlers ended: {rows.strip()!r}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# A role of our own

class FaultRole:
    """A login role that is not a superuser (connection limits do not apply to superusers)
    with the table rights the handlers need. Changes to it (CONNECTION LIMIT, SET
    statement_timeout) cannot reach the postgres role the runner and other tests use.
    Dropped, with everything it was granted, on exit."""

    NAME = "pgmail_fault"

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        n = self.NAME
        self._drop()
        self.ctx.psql(f"CREATE ROLE {n} LOGIN;"
                      f" GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {n};"
                      f" GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {n}")
        return self

    def _drop(self):
        """Its sessions ended, its grants (all in pgmail_test) revoked, the role dropped; in
        one psql run, retried while a terminated session is still going away."""
        n = self.NAME
        sql = ("DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN"
               " PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s';"
               " EXECUTE 'ALTER ROLE %s RESET ALL'; EXECUTE 'DROP OWNED BY %s';"
               " EXECUTE 'DROP ROLE %s'; END IF; END$$" % (n, n, n, n, n))
        deadline = time.monotonic() + 10
        while True:
            try:
                self.ctx.psql(sql)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *a):
        self._drop()  # settings reset, and the CONNECTION LIMIT goes with the role
        return False

    def alter(self, clause):
        self.ctx.psql(f"ALTER ROLE {self.NAME} {clause}", db="postgres")

    @property
    def env(self):
        return {"PGUSER": self.NAME}


# ---------------------------------------------------------------------------------------
# Handler processes

def handler_pids(srv):
    """PIDs of the handlers srv (a harness.TcpServer) spawned so far, oldest first."""
    return srv.pids()


def wait_spawned(srv, count=1, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = handler_pids(srv)
        if len(pids) >= count:
            return pids[count - 1]
        time.sleep(0.01)
    raise AssertionError(f"handler number {count} was not spawned within {timeout}s")


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return not alive(pid)


def wchan(pid):
    """Where in the kernel pid sleeps (for failure messages)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip() or "?"
    except OSError:
        return "gone"


def vm_hwm(pid):
    """Peak resident set size of pid in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


def rmtree_cluster(cluster):
    """Stop cluster and remove its directory."""
    try:
        cluster.stop()
    finally:
        shutil.rmtree(cluster.dir, ignore_errors=True)
