"""remote_mx.py - remote SMTP servers for the outbound tests, on loopback addresses other
than 127.0.0.1 (which is "this host" to the relay): a scripted server, Postfix's
smtp-sink, and a test CA for their certificates.

(a) ScriptedMX: a small threaded SMTP server of our own (stdlib sockets and ssl). Debian's
    python3-aiosmtpd is installed for /usr/bin/python3 only, and cannot stall, drop the
    connection or answer at an arbitrary step, or report what arrived before a reply; this
    server does all of that and keeps every byte.

    with ScriptedMX("127.0.0.2", starttls=ca.cert("mx.a.test"), size=10000,
                    replies={"rcpt": {"bad@a.test": "550 5.1.1 no such user"},
                             "dot": "552 5.3.4 too big"}) as mx:
        ... mx.port, mx.sessions[0].raw, mx.sessions[0].envelopes ...

    replies: step -> reply. Steps: greeting, ehlo, helo, starttls, auth, mail, rcpt, data,
    dot, rset, quit. A reply is a whole reply text ("451 4.3.0 try later", lines separated
    by "\n" for a multiline one), "drop" (close the connection without a reply), "stall"
    (say nothing until the client goes away or the server stops), "tlsfail" (starttls
    only: answer 220, then close instead of a handshake), or a list consumed one per use
    (the last repeats). rcpt may also be a dict {address: reply} (others get 250).
    Options: esmtp (answer EHLO, else 502 so the client falls back to HELO), pipelining,
    size (the SIZE limit announced; None: no SIZE), starttls ((cert, key) paths, or None:
    not offered), auth ((user, password): AUTH PLAIN LOGIN offered after TLS; wrong ones
    get 535 5.7.8), hold_for_data (with PIPELINING: after MAIL, wait up to 5 s for DATA
    before replying, and record in session.pipelined whether it came: a client that waits
    for each reply simply gets the reply after that wait).

    Each Session records: raw (every byte received, before and after TLS), commands (the
    command lines, without CRLF), envelopes (mail, [rcpts accepted], data: the DATA bytes as
    received, dot-stuffed, up to but excluding the final ".\r\n"), tls (the protocol version
    or None), auth (the (user, password) tried, the last), pipelined, closed (the client
    closed or QUIT).

(b) SmtpSink: /usr/sbin/smtp-sink on ADDRESS:PORT as nobody, dumping each transaction into
    a file (-d); messages() parses them: [(mail args, [rcpt args], message bytes)].

(c) TestCA: a test CA made with openssl, and server certificates it signs:
    ca = TestCA(tmp); cert, key = ca.cert("mx.a.test", "127.0.0.2"); ca.path (PEM).

(d) PostfixMX: a private Postfix (master -d, its own directories) whose smtpd takes mail
    for some domains on ADDRESS:PORT and relays it to a next hop (an SmtpSink): a real
    Postfix as the remote MX; PostfixMX(host, domains=[...], next_hop="[127.0.0.6]:PORT",
    tls=(cert, key), main=[more main.cf lines], services="more master.cf lines\n").

Everything started is stopped by stop() (context managers), also when a test fails.
Python 3 standard library only (plus openssl and smtp-sink).
"""

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
from dnsserver import free_port  # noqa: E402
from tlslib import _openssl  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"


class _Started:
    """start() and stop() as a context manager: stop() runs also when the test fails."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _end(proc, group=False):
    """Stop proc by its PID (with group: its whole process group): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    kill = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    kill(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        kill(signal.SIGKILL)
        proc.wait()


class Session:
    def __init__(self):
        self.raw = b""
        self.buf = b""  # received, not yet consumed
        self.commands = []
        self.envelopes = []
        self.tls = None
        self.auth = None
        self.pipelined = None
        self.closed = False


class _Drop(Exception):
    pass


class ScriptedMX(_Started):
    def __init__(self, host="127.0.0.2", port=None, replies=None, esmtp=True, pipelining=True,
                 size=None, starttls=None, auth=None, hold_for_data=False, name="mx.remote.test"):
        self.host = host
        self.port = port or free_port(host)
        self.replies = dict(replies or {})
        self.esmtp, self.pipelining, self.size = esmtp, pipelining, size
        self.starttls, self.auth, self.hold_for_data = starttls, auth, hold_for_data
        self.name = name
        self.sessions = []
        self._uses = {}
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()
        self.sock = None

    # -- life -----------------------------------------------------------------------------

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(10)
        if self.sock:
            self.sock.close()
            self.sock = None

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            s = Session()
            with self._lock:
                self.sessions.append(s)
            t = threading.Thread(target=self._serve, args=(conn, s), daemon=True)
            t.start()
            self._threads.append(t)

    # -- one connection -------------------------------------------------------------------

    def _reply_for(self, step, key=None):
        r = self.replies.get(step)
        if isinstance(r, dict):
            r = r.get(key)
        if isinstance(r, list):
            with self._lock:
                i = self._uses.get(step, 0)
                self._uses[step] = i + 1
            r = r[min(i, len(r) - 1)]
        return r

    def _serve(self, conn, s):
        conn.settimeout(0.2)
        try:
            self._session(conn, s)
        except (_Drop, OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _recv(self, conn, s, deadline=None):
        """More bytes into the buffer (False: none by deadline); _Drop when the client
        closed or we stop."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                continue
            if not data:
                s.closed = True
                raise _Drop()
            s.raw += data
            s.buf += data
            return True
        raise _Drop()

    def _line(self, conn, s):
        while b"\n" not in s.buf:
            self._recv(conn, s)
        line, s.buf = s.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def _send(self, conn, s, reply, default):
        """Send reply (or default when None); handle drop / stall."""
        reply = default if reply is None else reply
        if reply == "drop":
            raise _Drop()
        if reply == "stall":
            while True:  # until the client goes away or the server stops
                self._recv(conn, s)
        lines = reply.split("\n")
        code = lines[0][:3]
        out = "".join(f"{code}-{ln[4:]}\r\n" for ln in lines[:-1]) + lines[-1] + "\r\n"
        conn.sendall(out.encode())
        return reply

    def _ehlo_lines(self, tls_on):
        lines = [f"250-{self.name} hello"]
        if self.pipelining:
            lines.append("250-PIPELINING")
        if self.size is not None:
            lines.append(f"250-SIZE {self.size}")
        if self.starttls and not tls_on:
            lines.append("250-STARTTLS")
        if self.auth and tls_on:
            lines.append("250-AUTH PLAIN LOGIN")
        lines.append("250-ENHANCEDSTATUSCODES")
        lines.append("250 8BITMIME")
        return "\n".join(ln[:3] + " " + ln[4:] for ln in lines)

    def _session(self, conn, s):
        self._send(conn, s, self._reply_for("greeting"), f"220 {self.name} ESMTP scripted")
        tls_on = False
        mail, rcpts = None, []
        while True:
            line = self._line(conn, s)
            s.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb) + 1:]
            if verb == "EHLO":
                if not self.esmtp:
                    self._send(conn, s, None, "502 5.5.1 EHLO not implemented")
                else:
                    self._send(conn, s, self._reply_for("ehlo"), self._ehlo_lines(tls_on))
            elif verb == "HELO":
                self._send(conn, s, self._reply_for("helo"), f"250 {self.name}")
            elif verb == "STARTTLS" and self.starttls and not tls_on:
                r = self._reply_for("starttls")
                if r == "tlsfail":  # the go-ahead, then no handshake: the client's fails
                    self._send(conn, s, None, "220 2.0.0 go ahead")
                    return
                r = self._send(conn, s, r, "220 2.0.0 go ahead")
                if not r.startswith("220"):
                    continue
                sc = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                sc.load_cert_chain(*self.starttls)
                s.buf = b""
                conn.settimeout(10)
                conn = sc.wrap_socket(conn, server_side=True)
                conn.settimeout(0.2)
                tls_on = True
                s.tls = conn.version()
            elif verb == "AUTH" and self.auth and tls_on:
                s.auth = self._auth(conn, s, arg)
                ok = s.auth == tuple(self.auth)
                self._send(conn, s, self._reply_for("auth"),
                           "235 2.7.0 authenticated" if ok
                           else "535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                if self.hold_for_data and self.pipelining:
                    deadline = time.monotonic() + 5
                    while b"DATA\r\n" not in s.buf.upper():
                        if not self._recv(conn, s, deadline):
                            break
                    s.pipelined = b"DATA\r\n" in s.buf.upper()
                r = self._send(conn, s, self._reply_for("mail"), "250 2.1.0 ok")
                if r.startswith("2"):
                    mail, rcpts = arg, []
            elif verb == "RCPT":
                addr = arg.split(":", 1)[-1].strip().split(" ")[0].strip("<>")
                r = self._send(conn, s, self._reply_for("rcpt", addr), "250 2.1.5 ok")
                if r.startswith("2") and mail is not None:
                    rcpts.append(addr)
            elif verb == "DATA":
                if mail is None or not rcpts:
                    self._send(conn, s, None, "554 5.5.1 no valid recipients")
                    continue
                r = self._send(conn, s, self._reply_for("data"), "354 go ahead")
                if not r.startswith("354"):
                    continue
                while b"\r\n.\r\n" not in b"\r\n" + s.buf:
                    self._recv(conn, s)
                i = (b"\r\n" + s.buf).index(b"\r\n.\r\n")
                data, s.buf = s.buf[:i], s.buf[i + 3:]  # i: where ".\r\n" starts
                s.envelopes.append((mail, rcpts, data))
                self._send(conn, s, self._reply_for("dot"), "250 2.0.0 queued")
                mail, rcpts = None, []
            elif verb == "RSET":
                mail, rcpts = None, []
                self._send(conn, s, self._reply_for("rset"), "250 2.0.0 ok")
            elif verb == "NOOP":
                self._send(conn, s, None, "250 2.0.0 ok")
            elif verb == "QUIT":
                s.closed = True
                self._send(conn, s, self._reply_for("quit"), "221 2.0.0 bye")
                return
            else:
                self._send(conn, s, None, "502 5.5.2 unknown command")

    def _auth(self, conn, s, arg):
        """(user, password) from AUTH PLAIN [initial] or AUTH LOGIN."""
        parts = arg.split(" ")
        mech = parts[0].upper()

        def ask(prompt):
            self._send(conn, s, None, "334 " + prompt)
            return self._line(conn, s)

        if mech == "PLAIN":
            blob = parts[1] if len(parts) > 1 else ask("")
            fields = base64.b64decode(blob).decode("utf-8", "replace").split("\0")
            return (fields[1], fields[2]) if len(fields) == 3 else (None, None)
        if mech == "LOGIN":
            user = base64.b64decode(parts[1] if len(parts) > 1 else ask("VXNlcm5hbWU6"))
            pw = base64.b64decode(ask("UGFzc3dvcmQ6"))
            return user.decode("utf-8", "replace"), pw.decode("utf-8", "replace")
        return (None, None)


def unstuff(data):
    """The message of a DATA section as received (dot-stuffed): leading dots removed."""
    return b"".join(ln[1:] if ln.startswith(b".") else ln
                    for ln in data.splitlines(keepends=True))


class SmtpSink(_Started):
    """Postfix's smtp-sink on host:port as nobody, each transaction dumped into a file of its
    own (-d) in a directory of its own (nobody must be able to create files there)."""

    def __init__(self, host="127.0.0.2", port=None, options=()):
        self.host = host
        self.port = port or free_port(host)
        self.options = list(options)
        self.proc = None
        self.dir = None

    def start(self):
        addr = f"[{self.host}]" if ":" in self.host else self.host
        self.dir = tempfile.mkdtemp(prefix="pgmail-sink-")
        os.chown(self.dir, 65534, 65534)
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-d", os.path.join(self.dir, "m."), *self.options,
             f"{addr}:{self.port}", "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode("utf-8", "replace")
                self.stop()
                raise RuntimeError("smtp-sink exited: " + err)
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("smtp-sink did not listen")

    def stop(self):
        if self.proc:
            _end(self.proc)
            self.proc.stderr.close()
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def messages(self):
        """[(mail args, [rcpt args], message bytes with LF line ends)], oldest first, of
        the transactions whose dump is complete (ends in the empty line)."""
        out = []
        paths = [os.path.join(self.dir, n) for n in os.listdir(self.dir)]
        for path in sorted(paths, key=os.path.getmtime):
            with open(path, "rb") as f:
                text = f.read()
            if not text.endswith(b"\n\n"):
                continue  # still being written
            head, _, rest = text.partition(b"\nReceived: ")
            mail, rcpts = None, []
            for ln in head.split(b"\n"):
                if ln.startswith(b"X-Mail-Args: "):
                    mail = ln[13:].decode()
                elif ln.startswith(b"X-Rcpt-Args: "):
                    rcpts.append(ln[13:].decode())
            # smtp-sink's three-line Received:, the message, then one empty line
            out.append((mail, rcpts, rest.split(b"\n", 3)[3][:-1]))
        return out


class PostfixMX(_Started):
    """A private Postfix instance: its own configuration, queue and data directories under
    /tmp, master(8) in the foreground (-d, its own process group), smtpd on host:port. It
    relays the domains given to next_hop ("[ADDRESS]:PORT", an SmtpSink say), so what it
    received can be read at the sink; with tls=(cert, key) smtpd offers STARTTLS. Run as
    root (master needs it; the daemons run as the postfix user). stop() ends the group."""

    MASTER = "/usr/lib/postfix/sbin/master"
    SERVICES = """pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsmgr unix - - n 1000? 1 tlsmgr
postlog unix-dgram n - n - 1 postlogd
"""

    def __init__(self, host="127.0.0.5", port=None, domains=("pf.test",), next_hop=None,
                 tls=None, main=(), services=""):
        self.host = host
        self.port = port or free_port(host)
        self.domains, self.next_hop, self.tls = list(domains), next_hop, tls
        self.main_extra, self.services_extra = list(main), services
        self.dir = None
        self.proc = None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="pgmail-postfix-")
        os.chmod(self.dir, 0o755)
        etc, spool, data = (os.path.join(self.dir, d) for d in ("etc", "spool", "data"))
        for d in (etc, spool, data):
            os.makedirs(d)
        os.chown(data, *_ids("postfix"))
        self.maillog = os.path.join(self.dir, "maillog")
        routes = ",".join(f"{d}=smtp:{self.next_hop}" for d in self.domains)
        main = [
            "compatibility_level = 3.6",
            f"queue_directory = {spool}",
            f"data_directory = {data}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "inet_interfaces = all",  # smtpd's address is in master.cf
            "inet_protocols = ipv4",
            "myhostname = postfix.remote.test",
            "mydestination =",
            f"relay_domains = {' '.join(self.domains)}",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            f"transport_maps = inline:{{{routes}}}" if self.next_hop else "",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.dir}",
            "alias_maps =",
            "alias_database =",
            "smtp_dns_support_level = disabled",
        ]
        if self.tls:
            main += [f"smtpd_tls_cert_file = {self.tls[0]}", f"smtpd_tls_key_file = {self.tls[1]}",
                     "smtpd_tls_security_level = may"]
        main += self.main_extra
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write("\n".join(main) + "\n")
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write(f"{self.host}:{self.port} inet n - n - - smtpd\n" + self.services_extra
                    + self.SERVICES)
        # creates the queue's directories with their owners (postfix-script check)
        r = subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, timeout=60)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"postfix check failed: {r.stderr.decode()[-300:]}")
        self.proc = subprocess.Popen([self.MASTER, "-c", etc, "-d"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"postfix did not listen: {log[-500:]}")

    def log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc:
            _end(self.proc, group=True)  # master and its daemons
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _ids(user):
    import pwd
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


class TestCA:
    """A test CA (openssl) and server certificates signed by it."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "testca")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        if not os.path.exists(self.path):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-days", "2", "-subj", "/CN=pgmail test CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-keyout", self.key, "-out", self.path)

    def cert(self, name, address="127.0.0.2"):
        """(certificate path, key path) for name (and address), signed by this CA."""
        crt = os.path.join(self.dir, f"{name}-{address}.pem")
        key = os.path.join(self.dir, f"{name}-{address}.key")
        if not os.path.exists(crt):
            csr = crt + ".csr"
            ext = crt + ".ext"
            with open(ext, "w") as f:
                f.write(f"subjectAltName=DNS:{name},IP:{address}\n"
                        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
            _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
            _openssl("x509", "-req", "-in", csr, "-CA", self.path, "-CAkey", self.key,
                     "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
        return crt, key

