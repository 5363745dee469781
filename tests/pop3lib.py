"""pop3lib.py - what pgmail's POP3 tests share: running pop3/pgmail-pop3d (piped, or behind
systemd-socket-activate on 127.0.0.1), a byte-exact POP3 client, putting mail into the
mailboxes (through pgmail-smtpd, or with SQL for exact bytes and volume) and a private
PgBouncer in transaction pooling mode.

  pop3d_bin(ctx)                      the handler of this pass (build-san/ in the san pass)
  pop3d_pipe(ctx, data, chunked=)     pipe bytes into the handler; harness.Result
  pop3_tcp(ctx, env=)                 a Pop3Server (context manager) with .port and .pids()
  Pop3Client(port)                    send commands, read status lines and multi-line data
  deliver(ctx, sender, rcpts, msg)    one SMTP transaction through pgmail-smtpd (piped)
  insert_message(ctx, rcpts, body)    one message stored with SQL, body byte for byte
  retr_bytes(raw)                     a multi-line response's data, dot-unstuffed
  PgBouncer(ctx)                      pgbouncer on a free 127.0.0.1 port (context manager)

The handler's database settings come from ctx.env(); a context that has an attribute
pop3_db_env (a dict, see test_pop3_pgbouncer.py) overrides them for pgmail-pop3d only, so
that the POP3 handler talks to PgBouncer while the tests still read PostgreSQL directly.

Python 3 standard library only (plus the pgbouncer program for PgBouncer).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import PASSWORDS

SENDER = "sender@remote.example"


# ---------------------------------------------------------------------------------------
# The handler

def pop3d_bin(ctx):
    prefix = os.path.join(ctx.root, "build-san") if ctx.san else ctx.root
    return os.path.join(prefix, "pop3", "pgmail-pop3d")


def pop3_env(ctx, extra=None):
    """ctx.env() for pgmail-pop3d: the context's pop3_db_env (if any), then extra."""
    merged = dict(getattr(ctx, "pop3_db_env", None) or {})
    merged.update(extra or {})
    return ctx.env(merged)


# The pipe runner is the harness's (one for both handlers).
pipe_run = harness.pipe_run


def pop3d_pipe(ctx, data, env=None, chunked=False, timeout=30):
    """pgmail-pop3d with data on stdin (the peer counts as local); harness.Result."""
    binary = pop3d_bin(ctx)
    if not os.path.exists(binary):
        raise AssertionError(f"{os.path.relpath(binary, ctx.root)} is not built")
    return pipe_run(ctx, [binary], data, pop3_env(ctx, env), chunked, timeout, "pgmail-pop3d")


class Pop3Server(harness.TcpServer):
    """pgmail-pop3d behind systemd-socket-activate --inetd -a on a free 127.0.0.1 port, as
    pgmail-pop3d.socket (Accept=yes) runs it: harness.TcpServer with pgmail-pop3d's binary
    and environment."""

    log_prefix = "pop3-"

    def __init__(self, ctx, env):
        super().__init__(ctx, env, pop3d_bin(ctx))

    def environment(self):
        return pop3_env(self.ctx, self.env_extra)

    def wait_spawned(self, count, timeout=5):
        """The PID of the count-th handler (1-based), once it has been spawned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.pids()
            if len(pids) >= count:
                return pids[count - 1]
            time.sleep(0.01)
        raise AssertionError(f"handler number {count} was not spawned within {timeout}s")


def pop3_tcp(ctx, env=None):
    """A Pop3Server, registered so that the runner stops it after the test."""
    srv = Pop3Server(ctx, env)
    ctx._servers.append(srv)
    return srv


# ---------------------------------------------------------------------------------------
# A byte-exact POP3 client

def retr_bytes(raw):
    """The data of a multi-line response (the bytes after the status line, up to and
    including the CRLF before the terminating '.'), dot-unstuffed (RFC 1939 3). Fails when
    a line starts with a single '.', which the server should have stuffed."""
    if raw == b"":
        return b""
    assert raw.endswith(b"\r\n"), f"multi-line data does not end in CRLF: {raw[-40:]!r}"
    data = b"\r\n" + raw
    dotted, stuffed = data.count(b"\r\n."), data.count(b"\r\n..")
    if dotted != stuffed:
        i = 0
        while True:
            i = data.index(b"\r\n.", i) + 2
            if data[i + 1:i + 2] != b".":
                break
        raise AssertionError(f"a line starts with a single '.' (not dot-stuffed): "
                             f"{data[i:i + 60]!r}")
    return data.replace(b"\r\n..", b"\r\n.")[2:]


class Pop3Client:
    """Send what you like; read status lines (str) and multi-line data (bytes)."""

    def __init__(self, port, timeout=15, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.greeting = self.status() if greet else None
        if greet:
            expect_ok(self.greeting, "greeting")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drop the connection with a TCP RST, as a killed client would leave it."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        except OSError:
            pass
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self):
        """One line without its CRLF (bytes), or None at the end of the stream."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                ln = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return ln
            if len(self.buf) > 100000:
                raise AssertionError(f"no CRLF in {len(self.buf)} bytes: {bytes(self.buf[:80])!r}")
            if not self._fill():
                if self.buf:
                    raise AssertionError(f"line without CRLF at close: {bytes(self.buf)!r}")
                return None

    def status(self):
        """One status line (str, '+OK ...' / '-ERR ...' / '+ ...'), or None at close."""
        ln = self.line()
        return None if ln is None else ln.decode("utf-8", "backslashreplace")

    def cmd(self, line):
        """Send one command (CRLF added) and return its status line."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.status()

    def data(self):
        """The raw multi-line data after a +OK status line, up to the terminating '.'
        line, which is consumed (bytes, still dot-stuffed)."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", max(0, start - 4))
            if i >= 0:
                raw = bytes(self.buf[:i + 2])
                del self.buf[:i + 5]
                return raw
            start = len(self.buf)
            if not self._fill():
                raise AssertionError(f"connection closed inside multi-line data after "
                                     f"{len(self.buf)} bytes: ...{bytes(self.buf[-80:])!r}")

    def multi(self, line):
        """Send a command expecting a multi-line answer: (status, raw data or None)."""
        st = self.cmd(line)
        if st is None or not st.startswith("+OK"):
            return st, None
        return st, self.data()

    def lines(self, line):
        """(status, data lines as str) of a multi-line command such as LIST, UIDL, CAPA."""
        st, raw = self.multi(line)
        if raw is None:
            return st, None
        return st, [x.decode("utf-8", "backslashreplace")
                    for x in retr_bytes(raw).split(b"\r\n")[:-1]]

    def retr(self, n):
        """RETR n: (status, message bytes, dot-unstuffed, with CRLF ends)."""
        st, raw = self.multi(f"RETR {n}")
        return st, (None if raw is None else retr_bytes(raw))

    def login(self, user="alice@example.test", password=None):
        """USER/PASS; asserts +OK and returns the PASS status line."""
        expect_ok(self.cmd(f"USER {user}"), "USER")
        return expect_ok(self.cmd(f"PASS {password or PASSWORDS[user]}"), f"PASS for {user}")

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout, sending nothing
        more (what it did send before is left in .buf for inspection)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True


def expect_ok(st, what=""):
    assert st is not None, f"{what}: connection closed, expected +OK"
    assert st.startswith("+OK"), f"{what}: expected +OK, got {st!r}"
    return st


def expect_err(st, what="", prefix="-ERR"):
    assert st is not None, f"{what}: connection closed, expected {prefix!r}"
    assert st.lower().startswith(prefix.lower()), f"{what}: expected {prefix!r}, got {st!r}"
    return st


def session(port, user="alice@example.test"):
    """A Pop3Client logged in as user (TRANSACTION state)."""
    c = Pop3Client(port)
    c.login(user)
    return c


def stat(c):
    """(count, octets) from STAT."""
    st = expect_ok(c.cmd("STAT"), "STAT")
    m = re.match(r"\+OK (\d+) (\d+)(?: |$)", st)
    assert m, f"STAT: malformed reply {st!r}"
    return int(m.group(1)), int(m.group(2))


def listing(c, verb="LIST"):
    """{message number: size or unique id (str)} from LIST or UIDL without argument."""
    st, lines = c.lines(verb)
    expect_ok(st, verb)
    out = {}
    for ln in lines:
        m = re.fullmatch(r"(\d+) (\S+)", ln)
        assert m, f"{verb}: malformed line {ln!r}"
        out[int(m.group(1))] = m.group(2)
    return out


# ---------------------------------------------------------------------------------------
# Mail into the mailboxes

def deliver(ctx, sender, rcpts, message, timeout=60):
    """One SMTP transaction through pgmail-smtpd (piped, so the peer is local): message is
    the original CRLF message (dot-stuffed here). Asserts that it was stored; returns the
    seconds it took."""
    script = (f"EHLO client.example\r\nMAIL FROM:<{sender}>\r\n".encode()
              + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
              + b"DATA\r\n" + harness.dot_stuff(message) + b".\r\nQUIT\r\n")
    t0 = time.monotonic()
    r = ctx.smtpd(script, timeout=timeout)
    took = time.monotonic() - t0
    if not any(ln.startswith("250 2.0.0") for ln in r.lines):
        raise AssertionError(f"delivery through pgmail-smtpd to {rcpts} failed: {r.lines[-4:]}"
                             f" stderr: {r.err.decode('utf-8', 'replace')[-300:]}")
    return took


def psql_stdin(ctx, sql, timeout=120, db="pgmail_test"):
    """Run sql (str, any length) through psql's standard input; returns stdout (str)."""
    r = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", ctx.pgdir,
                        "-U", "postgres", "-d", db, "-f", "-"],
                       input=sql.encode(), capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed ({sql[:80]!r}): {r.stderr.decode().strip()[:500]}")
    return r.stdout.decode("utf-8", "backslashreplace")


def insert_sql(rcpts, body_expr, sender=SENDER):
    """SQL that stores one message whose body is the bytea expression body_expr, with one
    mailbox row per address of rcpts (in that order), and counts it in the account totals."""
    arr = ",".join("'" + a.replace("'", "''") + "'" for a in rcpts)
    return (
        "WITH m AS (INSERT INTO messages (sender, size, session_id, body)"
        f" SELECT '{sender}', octet_length(b), 'pop3-test', b"
        f" FROM (SELECT {body_expr} AS b OFFSET 0) x"  # OFFSET 0: evaluate body_expr once
        " RETURNING id, size),"
        " r AS (SELECT a.id, t.n FROM unnest(ARRAY[" + arr + "]::text[]) WITH ORDINALITY"
        "  AS t(addr, n) JOIN accounts a ON lower(a.address) = lower(t.addr)),"
        " b AS (INSERT INTO mailbox (account_id, message_id, size)"
        "  SELECT r.id, m.id, m.size FROM m, (SELECT id, n FROM r ORDER BY n) r"
        "  RETURNING account_id, size)"
        " UPDATE accounts a SET used_bytes = a.used_bytes + b.size,"
        " message_count = a.message_count + 1 FROM b"
        " WHERE a.id = b.account_id;\n")


def insert_message(ctx, rcpts, body, sender=SENDER):
    """Store body (bytes, exactly as RETR must send it) for the addresses rcpts."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    psql_stdin(ctx, insert_sql(rcpts, f"decode('{body.hex()}', 'hex')", sender))


def stored_bodies(ctx, address):
    """The bodies in address's mailbox, in mailbox order (bytes)."""
    import base64
    rows = ctx.psql(
        "SELECT translate(encode(m.body, 'base64'), E'\\n', '') FROM mailbox b"
        " JOIN messages m ON m.id = b.message_id JOIN accounts a ON a.id = b.account_id"
        f" WHERE a.address = '{address}' ORDER BY b.id")
    return [base64.b64decode(x) for x in rows.split()]


def uidls_in_db(ctx, address):
    return ctx.psql("SELECT b.id FROM mailbox b JOIN accounts a ON a.id = b.account_id"
                    f" WHERE a.address = '{address}' ORDER BY b.id").split()


# ---------------------------------------------------------------------------------------
# PgBouncer

class PgBouncer:
    """Debian's pgbouncer with its own configuration and auth file in a temporary
    directory, on a free 127.0.0.1 port, pool_mode = transaction, in front of the test
    PostgreSQL's Unix socket. As root it runs as the postgres user (pgbouncer refuses
    root). Stopped by PID (SIGTERM, then SIGKILL) on exit from the with block."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.port = None
        self.dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *a):
        self.stop()
        return False

    @property
    def env(self):
        """What pgmail-pop3d needs to talk to PostgreSQL through this PgBouncer."""
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port)}

    def log(self):
        try:
            with open(os.path.join(self.dir, "pgbouncer.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def start(self):
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(exe):
            raise AssertionError("pgbouncer is not installed (Debian package pgbouncer)")
        root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="pgmail-pgbouncer-")
        if root:
            shutil.chown(self.dir, "postgres", "postgres")
        for attempt in range(5):
            self.port = harness.free_port()
            ini = os.path.join(self.dir, "pgbouncer.ini")
            users = os.path.join(self.dir, "userlist.txt")
            with open(users, "w") as f:
                f.write('"postgres" ""\n')
            with open(ini, "w") as f:
                f.write(
                    "[databases]\n"
                    f"pgmail_test = host={self.ctx.pgdir} dbname=pgmail_test user=postgres\n"
                    "[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\n"
                    f"listen_port = {self.port}\n"
                    "unix_socket_dir =\n"
                    "auth_type = trust\n"
                    f"auth_file = {users}\n"
                    "pool_mode = transaction\n"
                    "admin_users = postgres\n"
                    "max_client_conn = 200\n"
                    "default_pool_size = 20\n"
                    f"logfile = {os.path.join(self.dir, 'pgbouncer.log')}\n"
                    "log_connections = 0\n"
                    "log_disconnections = 0\n")
            if root:
                for p in (ini, users):
                    shutil.chown(p, "postgres", "postgres")
            kw = {"user": "postgres"} if root else {}
            self.proc = subprocess.Popen([exe, ini], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         **kw)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            log = self.log()
            self.stop(remove=False)
            if "Address already in use" not in log:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise AssertionError(f"pgbouncer did not start: {log[-500:]}")
        shutil.rmtree(self.dir, ignore_errors=True)
        raise AssertionError("no free port for pgbouncer")

    def show_pools(self):
        """PgBouncer's SHOW POOLS row for pgmail_test, as a dict (numbers as int)."""
        r = subprocess.run(["psql", "-XAq", "-F", "|", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "postgres", "-d", "pgbouncer", "-c", "SHOW POOLS"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"SHOW POOLS failed: {r.stderr.decode().strip()}")
        rows = [ln.split("|") for ln in r.stdout.decode().splitlines() if "|" in ln]
        head = rows[0]
        for row in rows[1:]:
            d = dict(zip(head, row))
            if d.get("database") == "pgmail_test":
                return {k: int(v) if v.isdigit() else v for k, v in d.items()}
        return {}

    def stop(self, remove=True):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if remove and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
