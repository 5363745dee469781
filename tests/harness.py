"""harness.py - what pgmail's Python tests share: the test context, the handler runners and
the helpers that read back what PostgreSQL stored.

The context (Ctx) is made by tests/run.py once per pass (normal binaries, then the
ASan/UBSan ones) after it has started a private PostgreSQL and loaded the fixtures. A test is
a function test_NAME(ctx); it fails by raising (AssertionError or anything else).

  ctx.smtpd(data, env=..., chunked=...)   pipe bytes into smtp/pgmail-smtpd (as inetd would)
  ctx.tcp(env=...)                        the handler behind systemd-socket-activate --inetd
  Client(port)                            a raw SMTP client for exact-reply tests
  ctx.messages()                          what got stored, bodies as bytes
  split_stored(body)                      Return-Path / Received / the original message

Python 3 standard library only.
"""

import base64
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

HOST = "mx.example.test"

# Fixture accounts and their passwords (pgmailctl user add reads the first line of stdin).
PASSWORDS = {
    "alice@example.test": "alice-Secret-1",
    "bob@example.test": "bob-Secret-2",
    "carol@example.test": "carol-Secret-3",
}
CAROL_QUOTA = 10000

# What the sanitizers print when they find something (habit 12: tests run clean under them).
SAN_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def b64(s):
    """base64 of a str (UTF-8) or bytes, as str."""
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def plain_blob(user, password, authzid=""):
    """The RFC 4616 PLAIN credential, base64-encoded."""
    return b64(f"{authzid}\0{user}\0{password}")


def crlf(text):
    """A message written with LF line ends (str or bytes) with CRLF line ends, as bytes."""
    if isinstance(text, str):
        text = text.encode()
    return re.sub(rb"\r?\n", b"\r\n", text)


# ---------------------------------------------------------------------------------------
# Normalising and matching replies (transcripts and anything else compared with a file)

_HEX_ID = re.compile(r"\b[0-9a-fA-F]{16,}\b")
_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}(?::\d{2})? [+-]\d{4}(?: \([A-Za-z0-9+-]+\))?"
)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}(?::?\d{2})?|Z)?")


def normalise(line):
    """Replace what differs from run to run: session ids (16+ hex digits) by {ID}, RFC 5322
    and ISO dates by {DATE}."""
    line = _DATE.sub("{DATE}", line)
    line = _ISO.sub("{DATE}", line)
    return _HEX_ID.sub("{ID}", line)


def _pattern(expected_line):
    """An expected line as a regex: {HOST} is the hostname, '*' matches any text."""
    parts = expected_line.replace("{HOST}", HOST).split("*")
    return re.compile(".*".join(re.escape(p) for p in parts) + r"\Z", re.S)


def match_lines(expected, actual):
    """True when the actual lines match the expected ones: each expected line is a glob
    ('*' = any text, {HOST} = hostname) for one actual line, except a line that is exactly
    '...', which matches any number of lines (none included)."""
    pats = [None if e == "..." else _pattern(e) for e in expected]
    memo = {}

    def m(i, j):
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(pats):
            r = j == len(actual)
        elif pats[i] is None:
            r = any(m(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            r = j < len(actual) and bool(pats[i].match(actual[j])) and m(i + 1, j + 1)
        memo[key] = r
        return r

    return m(0, 0)


def first_mismatch(expected, actual):
    """A short description of where actual parts from expected (for failure messages): the
    first expected line that cannot be matched after the longest matching prefix."""
    k = max(k for k in range(len(expected) + 1) if match_lines(expected[:k] + ["..."], actual))
    if k == len(expected):
        return "unexpected extra lines at the end"
    j = min(j for j in range(len(actual) + 1) if match_lines(expected[:k], actual[:j]))
    got = repr(actual[j]) if j < len(actual) else "end of output"
    return f"expected line {k + 1} {expected[k]!r}, got line {j + 1} {got}"


def visible(text):
    """Make CR and TAB visible (as the two characters \\r and \\t) so that line comparisons
    and failure messages show them."""
    return text.replace("\r", "\\r").replace("\t", "\\t")


def reply_lines(raw):
    """Server output (bytes) as a list of normalised lines without their CRLF. A line that
    does not end in CRLF (a bare LF, or an unterminated tail) is marked so it cannot pass."""
    text = raw.decode("utf-8", "backslashreplace")
    out = []
    for piece in text.split("\n"):
        out.append(piece)
    tail = out.pop()  # after the last LF
    lines = []
    for piece in out:
        if piece.endswith("\r"):
            lines.append(normalise(piece[:-1]))
        else:
            lines.append(normalise(piece) + " <bare LF>")
    if tail:
        lines.append(normalise(tail) + " <no line end>")
    return lines


# ---------------------------------------------------------------------------------------
# Stored messages

def split_stored(body):
    """Split a stored body into (return_path_line, received_header, original) as bytes.
    The body must start with a Return-Path: line and one Received: header (with any
    continuation lines), each ending in CRLF; original is the rest, untouched."""
    if not body.startswith(b"Return-Path: "):
        raise AssertionError(f"stored body does not start with Return-Path: {body[:80]!r}")
    rp, sep, rest = body.partition(b"\r\n")
    if not sep:
        raise AssertionError(f"Return-Path line without CRLF: {body[:80]!r}")
    if not rest.startswith(b"Received: "):
        raise AssertionError(f"no Received: header after Return-Path: {rest[:80]!r}")
    pos = 0
    while True:
        end = rest.find(b"\r\n", pos)
        if end < 0:
            raise AssertionError(f"Received: header without CRLF: {rest[:200]!r}")
        pos = end + 2
        if not rest[pos:pos + 1] in (b" ", b"\t"):
            break
    return rp, rest[:pos], rest[pos:]


def check_stored(body, sender, original, helo=None, peer=None, session=None):
    """Assert that a stored body is Return-Path: <sender>, a Received: header naming our
    host (and the helo, peer address and session id, when given), then the original message
    byte for byte."""
    rp, received, rest = split_stored(body)
    want = b"Return-Path: <" + sender.encode() + b">"
    assert rp == want, f"Return-Path line is {rp!r}, expected {want!r}"
    flat = re.sub(rb"\r\n[ \t]+", b" ", received)
    assert b"by " + HOST.encode() in flat, f"Received: does not say 'by {HOST}': {received!r}"
    if helo:
        assert flat.startswith(b"Received: from " + helo.encode()), (
            f"Received: does not start 'from {helo}': {received!r}")
    if peer:
        assert peer.encode() in flat, f"Received: does not name the peer {peer}: {received!r}"
    if session:  # "with ESMTP id ID": the session id, or a prefix of it
        m = re.search(rb" id ([0-9A-Za-z]+)", flat)
        assert m and len(m.group(1)) >= 8 and session.startswith(m.group(1).decode()), (
            f"Received: does not give the session id {session}: {received!r}")
    if rest != original:
        n = next((i for i, (a, b) in enumerate(zip(rest, original)) if a != b),
                 min(len(rest), len(original)))
        raise AssertionError(
            f"stored message differs from what was sent at byte {n} "
            f"(stored {len(rest)} bytes, sent {len(original)}): "
            f"stored {rest[max(0, n - 20):n + 40]!r} sent {original[max(0, n - 20):n + 40]!r}")


class Message:
    def __init__(self, id, sender, size, session_id, body, recipients):
        self.id, self.sender, self.size = id, sender, size
        self.session_id, self.body, self.recipients = session_id, body, recipients

    def __repr__(self):
        return (f"<message {self.id} from {self.sender!r} to {self.recipients} "
                f"{len(self.body)} bytes>")


# ---------------------------------------------------------------------------------------
# The context

class SanitizerReport(AssertionError):
    pass


class Result:
    def __init__(self, out, err, rc):
        self.out, self.err, self.rc = out, err, rc
        self.lines = reply_lines(out)

    def __repr__(self):
        return f"<rc={self.rc} out={self.out[:200]!r}>"


class Ctx:
    def __init__(self, root, san, pgdir):
        self.root = root
        self.san = san
        self.pgdir = pgdir
        prefix = os.path.join(root, "build-san") if san else root
        self.smtpd_bin = os.path.join(prefix, "smtp", "pgmail-smtpd")
        self.ctl_bin = os.path.join(prefix, "admin", "pgmailctl")
        self.tmp = tempfile.mkdtemp(prefix="pgmail-test-", dir=os.path.join(root, ".run"))
        self._servers = []

    # -- environment ---------------------------------------------------------------------

    def env(self, extra=None):
        """The environment of every pgmail program: the private database, no config file,
        logs on stderr, fast failed-AUTH replies; plus the sanitizer options in the san
        pass, plus extra (a value of None removes a variable)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "PGMAIL_", "ASAN_", "UBSAN_", "LSAN_"))}
        env.update({
            "PGHOST": self.pgdir,
            "PGUSER": "postgres",
            "PGDATABASE": "pgmail_test",
            "PGMAIL_CONFIG": "/dev/null",
            "PGMAIL_LOG": "stderr",
            "PGMAIL_HOSTNAME": HOST,
            "PGMAIL_AUTH_FAILURE_DELAY_MS": "100",
            "PGMAIL_PASSWORD_SCHEME": "sha512crypt",
        })
        if self.san:
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
            env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def check_san(self, err, what):
        """In the sanitizer pass, fail when a program's stderr holds a sanitizer report."""
        text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
        for pat in SAN_PATTERNS:
            i = text.find(pat)
            if i >= 0:
                start = text.rfind("\n", 0, i) + 1
                excerpt = text[start:start + 600]
                raise SanitizerReport(f"{what}: sanitizer report: {excerpt}")

    # -- the database ----------------------------------------------------------------------

    def psql(self, sql, db="pgmail_test", input=None):
        """Run sql with psql -XAt (stop on the first error); returns its stdout as str."""
        r = subprocess.run(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", self.pgdir, "-U", "postgres",
             "-d", db, "-c", sql],
            input=input, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({sql[:80]!r}): {r.stderr.decode().strip()}")
        return r.stdout.decode("utf-8", "backslashreplace")

    def reset_mail(self):
        """Empty every mailbox (ids start again at 1) and every quota count, and forget the
        failed logins (migrations/012: every test's clients come from 127.0.0.1)."""
        self.psql("TRUNCATE mailbox, messages, queue, queue_attempts, auth_failures RESTART IDENTITY; UPDATE accounts SET used_bytes = 0, message_count = 0")

    def messages(self):
        """Every stored message, oldest first, with its body as bytes and its recipients'
        account addresses (one per mailbox row, in mailbox order)."""
        rows = self.psql(
            "SELECT m.id, m.size, translate(encode(convert_to(m.sender, 'UTF8'), 'base64'),"
            " E'\\n', ''), m.session_id, translate(encode(m.body, 'base64'), E'\\n', ''),"
            " coalesce((SELECT string_agg(a.address, ',' ORDER BY b.id) FROM mailbox b"
            "  JOIN accounts a ON a.id = b.account_id WHERE b.message_id = m.id), '')"
            " FROM messages m ORDER BY m.id")
        out = []
        for row in rows.splitlines():
            mid, size, sender, sess, body, rcpts = row.split("|")
            out.append(Message(int(mid), base64.b64decode(sender).decode(), int(size), sess,
                               base64.b64decode(body), [r for r in rcpts.split(",") if r]))
        return out

    def mailbox_count(self, address=None):
        sql = "SELECT count(*) FROM mailbox b JOIN accounts a ON a.id = b.account_id"
        if address:
            sql += f" WHERE a.address = '{address}'"
        return int(self.psql(sql).strip())

    def message_count(self):
        return int(self.psql("SELECT count(*) FROM messages").strip())

    def used_bytes(self, address):
        return int(self.psql(
            f"SELECT used_bytes FROM accounts WHERE address = '{address}'").strip())

    # -- programs ----------------------------------------------------------------------------

    def ctl(self, *args, stdin=None, env=None, check=True):
        """Run pgmailctl with args; returns Result. Fails on a non-zero exit when check."""
        r = subprocess.run([self.ctl_bin, *args], input=stdin, env=self.env(env),
                           capture_output=True, timeout=120)
        res = Result(r.stdout, r.stderr, r.returncode)
        if self.san:
            self.check_san(r.stderr, "pgmailctl " + " ".join(args))
        if check and r.returncode != 0:
            raise AssertionError(f"pgmailctl {' '.join(args)} exited {r.returncode}: "
                                 f"{r.stderr.decode('utf-8', 'replace').strip()[:500]}")
        return res

    def smtpd(self, data, env=None, chunked=False, timeout=30):
        """Run smtp/pgmail-smtpd with data on stdin (a pipe: the peer counts as local) and
        return Result(stdout, stderr, exit code); see pipe_run for chunked."""
        if not os.path.exists(self.smtpd_bin):
            raise AssertionError(f"{self.smtpd_bin} is not built")
        return pipe_run(self, [self.smtpd_bin], data, self.env(env), chunked, timeout,
                        "pgmail-smtpd")

    def tcp(self, env=None):
        """The handler behind systemd-socket-activate on a free 127.0.0.1 port (a context
        manager giving a TcpServer with .port)."""
        srv = TcpServer(self, env)
        self._servers.append(srv)
        return srv

    def stop_all(self):
        """Stop every TCP server still running (the runner calls this after each test)."""
        while self._servers:
            self._servers.pop().stop()


def read_log(path):
    """A log file of ours as text ("" while it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def end_group(proc):
    """End the process group of proc (a Popen of ours started with start_new_session, such
    as systemd-socket-activate and its handlers): SIGTERM, then SIGKILL after 5 s."""
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pipe_run(ctx, argv, data, env, chunked=False, timeout=30, what="handler"):
    """Run argv with data on stdin (a pipe) and return harness.Result. chunked writes one
    byte at a time with a short pause every few bytes, so the handler's reads split at every
    byte; writing stops quietly once the handler has closed its input."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    bufs = {"out": [], "err": []}

    def drain(f, key):
        for chunk in iter(lambda: f.read1(65536), b""):
            bufs[key].append(chunk)

    ts = [threading.Thread(target=drain, args=(p.stdout, "out"), daemon=True),
          threading.Thread(target=drain, args=(p.stderr, "err"), daemon=True)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    fd = p.stdin.fileno()
    step = 1 if chunked else max(1, len(data))
    try:
        for i in range(0, len(data), step):
            os.write(fd, data[i:i + step])
            if chunked and i % 4 == 3:
                time.sleep(0.0005)
            if time.monotonic() > deadline:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    try:
        p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        for t in ts:
            t.join(5)
        raise AssertionError(f"{what} still running after {timeout}s; output so far "
                             f"{b''.join(bufs['out'])[-300:]!r}")
    for t in ts:
        t.join(10)
    out, err = b"".join(bufs["out"]), b"".join(bufs["err"])
    if ctx.san:
        ctx.check_san(err, what)
    return Result(out, err, p.returncode)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TcpServer:
    """systemd-socket-activate --inetd -a -l 127.0.0.1:PORT HANDLER, as pgmail-smtpd.socket
    with Accept=yes runs it. systemd-socket-activate passes on only PATH, HOME and TERM, so
    every other variable travels as -E NAME=VALUE. Its own messages and the handlers' stderr
    go to one log file; on stop the server waits for every spawned handler to exit (so the
    sanitizers' exit-time leak checks run), stops the process group it made, and in the san
    pass fails on any sanitizer report in that log."""

    log_prefix = "tcp-"

    def __init__(self, ctx, env, binary=None):
        self.ctx = ctx
        self.env_extra = env or {}
        self.binary = binary or ctx.smtpd_bin
        self.proc = None
        self.port = None
        self.log_path = None

    def environment(self):
        """The handler's whole environment (a subclass adds its own defaults)."""
        return self.ctx.env(self.env_extra)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, et, ev, tb):
        self.stop(check=et is None)
        return False

    def start(self):
        ctx = self.ctx
        if not os.path.exists(self.binary):
            raise AssertionError(f"{os.path.relpath(self.binary, ctx.root)} is not built")
        full = self.environment()
        for attempt in range(5):
            self.port = free_port()
            cmd = ["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{self.port}"]
            for k, v in sorted(full.items()):
                if k.startswith(("PG", "ASAN_", "UBSAN_", "LSAN_")):
                    cmd += ["-E", f"{k}={v}"]
            cmd.append(self.binary)
            fd, self.log_path = tempfile.mkstemp(prefix=self.log_prefix, suffix=".log",
                                                 dir=ctx.tmp)
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                         env=full, start_new_session=True)
            os.close(fd)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                log = self.log()
                if f"Listening on 127.0.0.1:{self.port}" in log:
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            self._kill()
            if "Address already in use" not in self.log():
                raise AssertionError(f"systemd-socket-activate did not start: {self.log()[-500:]}")
        raise AssertionError("no free port for systemd-socket-activate")

    def log(self):
        return read_log(self.log_path)

    def pids(self):
        """PIDs of the handlers spawned so far, oldest first."""
        return [int(p) for p in re.findall(r"Spawned .* as PID (\d+)", self.log())]

    def handlers_done(self):
        """(spawned, exited) handler counts from systemd-socket-activate's own messages."""
        log = self.log()
        return log.count("Spawned "), len(re.findall(r"Child \d+ (?:died|exited|killed)", log))

    def wait_handlers(self, timeout=10):
        """Wait until every handler spawned so far has exited; True when they have."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spawned, done = self.handlers_done()
            if done >= spawned:
                return True
            time.sleep(0.02)
        return False

    def _kill(self):
        end_group(self.proc)

    def stop(self, check=True):
        if not self.proc:
            return
        finished = self.wait_handlers(15)
        self._kill()
        self.proc = None
        if self in self.ctx._servers:
            self.ctx._servers.remove(self)
        if check and self.ctx.san:
            self.ctx.check_san(self.log(), "pgmail-smtpd (tcp)")
        if check and not finished:
            raise AssertionError("a handler was still running 15s after the test ended")


# ---------------------------------------------------------------------------------------
# A raw SMTP client

class Client:
    """A byte-exact SMTP client: send what you like, read replies as (code, text)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def line(self):
        """One reply line without CRLF (str), or None at end of stream."""
        while b"\r\n" not in self.buf:
            if not self._fill():
                if self.buf:
                    raise AssertionError(f"reply line without CRLF at close: {self.buf!r}")
                return None
            if len(self.buf) > 100000:
                raise AssertionError("reply line too long")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "backslashreplace")

    def reply(self):
        """One reply: all its lines joined with '\\n' (str), or None at end of stream.
        Checks that continuation lines use the same code (RFC 5321 4.2.1)."""
        lines = []
        while True:
            ln = self.line()
            if ln is None:
                if lines:
                    raise AssertionError(f"connection closed inside a reply: {lines}")
                return None
            if not re.match(r"[2-5]\d\d[- ]", ln + " "):
                raise AssertionError(f"malformed reply line {ln!r}")
            if lines and ln[:3] != lines[0][:3]:
                raise AssertionError(f"reply code changed inside a reply: {lines + [ln]}")
            lines.append(ln)
            if len(ln) == 3 or ln[3] == " ":
                return "\n".join(lines)

    def cmd(self, line):
        """Send one command (CRLF added) and return its reply."""
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply()

    def replies_until_close(self, limit=1000):
        out = []
        while len(out) < limit:
            r = self.reply()
            if r is None:
                return out
            out.append(r)
        return out

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout with nothing more."""
        self.sock.settimeout(timeout)
        try:
            return not self._fill() and not self.buf
        except socket.timeout:
            return False


def expect(reply, prefix, what=""):
    """Assert that a reply starts with prefix (e.g. '250 ', '552 5.3.4')."""
    assert reply is not None, f"{what}: connection closed, expected {prefix!r}"
    assert reply.startswith(prefix), f"{what}: expected {prefix!r}, got {reply!r}"
    return reply


def session(port, helo="client.example", auth=None, timeout=10):
    """A Client past the greeting and EHLO, optionally after AUTH PLAIN as user auth."""
    c = Client(port, timeout)
    expect(c.reply(), "220 ", "greeting")
    expect(c.cmd(f"EHLO {helo}"), "250", "EHLO")
    if auth:
        expect(c.cmd(f"AUTH PLAIN {plain_blob(auth, PASSWORDS[auth])}"), "235 2.7.0",
               "AUTH PLAIN")
    return c


def send_mail(c, sender, rcpts, message, mail_params=""):
    """Drive one transaction on Client c with a CRLF message (dot-stuffed here); asserts 250
    at MAIL and RCPT and returns the reply to the final dot."""
    expect(c.cmd(f"MAIL FROM:<{sender}>{(' ' + mail_params) if mail_params else ''}"), "250",
           "MAIL")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), "250", f"RCPT {r}")
    expect(c.cmd("DATA"), "354", "DATA")
    c.send(dot_stuff(message) + b".\r\n")
    return c.reply()


def dot_stuff(message):
    """RFC 5321 4.5.2 transparency: double a leading '.'; make sure it ends with CRLF."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", message)
    return out


def select_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)
