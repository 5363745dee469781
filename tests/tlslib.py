"""tlslib.py - what pgmail's TLS tests share: a certificate made at test time, client-side
TLS contexts that verify it, STARTTLS and STLS on the raw clients of harness.py and
pop3lib.py, and the handlers started with TLS configured.

  cert(ctx)                          (certificate, key) paths: a self-signed P-256
                                     certificate for mx.example.test and 127.0.0.1, made once
                                     per pass with `openssl req` in ctx.tmp
  other_key(ctx)                     a second private key that does not match cert(ctx)
  tls_env(ctx, extra)                PGMAIL_TLS_CERT / PGMAIL_TLS_KEY for cert(ctx), plus extra
  client_context(ctx, lo=, hi=)      an ssl.SSLContext that trusts only cert(ctx), optionally
                                     limited to TLS versions lo..hi
  smtp_server(ctx, env=)             pgmail-smtpd behind systemd-socket-activate, TLS set up
  pop3_server(ctx, env=)             pgmail-pop3d likewise
  starttls(c, sslctx) / stls(c, sslctx)    run the handshake on a harness.Client /
                                     pop3lib.Pop3Client whose STARTTLS / STLS was accepted
  smtp_implicit(port, sslctx) / pop3_implicit(port, sslctx)   clients that handshake first
  nothing_more(c, wait)              assert that the server sends nothing more for a while
  read_to_close(sock, timeout)       (closed?, bytes): read until the server closes
  tls_info(sslsock)                  (version, cipher) as the client negotiated them
  client_hello(ctx)                  the bytes of a TLS ClientHello (to send part of it)
  RecordClient(sock, sslctx)         TLS over a plain socket through memory BIOs: records()
                                     gives the bytes of the records for some plaintext, to
                                     send whole, in part or byte by byte; line() reads one
                                     decrypted line
  dribble(sock, chunks, gap)         send chunks one by one, gap seconds apart, until the
                                     server sends something: how many were sent by then
  unfolded_received(body)            the stored Received: header on one line
  log_lines(srv, event)              the handler log lines of one event (e.g. tls-failed)

REMOTE is the environment that makes a handler treat its loopback peer as the remote
192.0.2.1 (shared/peer.h), where passwords are refused without TLS.

Python 3 standard library only (plus the openssl program).
"""

import os
import re
import select
import socket
import ssl
import subprocess
import time

import harness
import pop3lib
from harness import HOST

REMOTE = {"PGMAIL_PEER_OVERRIDE": "192.0.2.1"}

_certs = {}  # ctx.tmp -> (cert, key, other key)


def _openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args[:2])} failed: "
                             f"{r.stderr.decode('utf-8', 'replace').strip()[-500:]}")


def _make(ctx):
    if ctx.tmp not in _certs:
        d = os.path.join(ctx.tmp, "tls")
        os.makedirs(d, exist_ok=True)
        crt, key, other = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "other.pem"))
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "2", "-subj", f"/CN={HOST}",
                 "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1",
                 "-keyout", key, "-out", crt)
        _openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-out", other)
        _certs[ctx.tmp] = (crt, key, other)
    return _certs[ctx.tmp]


def cert(ctx):
    """(certificate path, private key path) of this pass's test certificate."""
    crt, key, _ = _make(ctx)
    return crt, key


def other_key(ctx):
    """A private key (path) that is not the certificate's."""
    return _make(ctx)[2]


def tls_env(ctx, extra=None):
    """The handler environment with the test certificate configured, plus extra."""
    crt, key = cert(ctx)
    env = {"PGMAIL_TLS_CERT": crt, "PGMAIL_TLS_KEY": key}
    env.update(extra or {})
    return env


def client_context(ctx, lo=None, hi=None):
    """A client SSLContext that trusts only the test certificate and checks the host name;
    lo / hi limit the protocol versions (ssl.TLSVersion)."""
    c = ssl.create_default_context(cafile=cert(ctx)[0])
    if lo is not None:
        c.minimum_version = lo
    if hi is not None:
        c.maximum_version = hi
    return c


def smtp_server(ctx, env=None):
    """ctx.tcp() with the test certificate configured (env entries win; None removes)."""
    return ctx.tcp(env=tls_env(ctx, env))


def pop3_server(ctx, env=None):
    """pop3lib.pop3_tcp() with the test certificate configured."""
    return pop3lib.pop3_tcp(ctx, env=tls_env(ctx, env))


def _wrap(c, sslctx, what):
    # Anything already read past the server's go-ahead would have been sent in clear after
    # it, and would now be mistaken for TLS data: there must be none.
    assert not c.buf, f"{what}: bytes after the go-ahead, before the handshake: {bytes(c.buf)!r}"
    c.sock = sslctx.wrap_socket(c.sock, server_hostname=HOST)
    return c.sock


def starttls(c, sslctx):
    """Handshake on a harness.Client whose STARTTLS got its 220; returns the SSLSocket."""
    return _wrap(c, sslctx, "STARTTLS")


def stls(c, sslctx):
    """Handshake on a pop3lib.Pop3Client whose STLS got its +OK; returns the SSLSocket."""
    return _wrap(c, sslctx, "STLS")


def smtp_implicit(port, sslctx, timeout=10):
    """A harness.Client that runs the TLS handshake at once (RFC 8314), before reading the
    greeting."""
    c = harness.Client(port, timeout)
    c.sock = sslctx.wrap_socket(c.sock, server_hostname=HOST)
    return c


def pop3_implicit(port, sslctx, timeout=15):
    """A pop3lib.Pop3Client over implicit TLS, past its +OK greeting."""
    c = pop3lib.Pop3Client(port, timeout, greet=False)
    c.sock = sslctx.wrap_socket(c.sock, server_hostname=HOST)
    c.greeting = pop3lib.expect_ok(c.status(), "greeting over TLS")
    return c


def nothing_more(c, wait=0.3):
    """Assert that the server has sent nothing beyond what was read, and sends nothing
    within wait seconds (a reply to a command the client never sent would show here)."""
    assert not c.buf, f"unexpected bytes from the server: {bytes(c.buf)[:200]!r}"
    old = c.sock.gettimeout()
    c.sock.settimeout(wait)
    try:
        extra = c.sock.recv(4096)
    except (socket.timeout, ssl.SSLWantReadError):
        extra = None
    finally:
        c.sock.settimeout(old)
    assert extra is None, f"unexpected bytes from the server: {extra[:200]!r}"


def read_to_close(sock, timeout):
    """Read from a plain socket until the server closes it or timeout seconds pass: (True
    when it closed, everything read). A reset counts as closed."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, data
        except ConnectionError:
            return True, data
        if not chunk:
            return True, data
        data += chunk


def tls_info(sslsock):
    """(protocol version, cipher name) of an open SSLSocket, e.g. ('TLSv1.3',
    'TLS_AES_256_GCM_SHA384'): OpenSSL's names, as the server writes them into Received:."""
    return sslsock.version(), sslsock.cipher()[0]


def client_hello(ctx):
    """The first flight of a TLS client (a ClientHello record), made with an in-memory
    SSLObject: send part of it to play a client that stalls mid-handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(ctx).wrap_bio(incoming, outgoing, server_hostname=HOST)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, f"not a ClientHello: {hello[:20]!r}"
    return hello


class RecordClient:
    """A TLS client on a connected plain socket (after STARTTLS/STLS, or on an implicit-TLS
    port) that keeps the TLS records in its hands: records(data) returns the encrypted bytes
    for data without sending them, so a test can send part of a record and stall, or dribble
    it. line(timeout) reads one decrypted CRLF line (bytes), None when the server closed."""

    def __init__(self, sock, sslctx):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = sslctx.wrap_bio(self.inc, self.out, server_hostname=HOST)
        self.buf = b""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("server closed during the handshake")
                self.inc.write(data)
        self.sock.sendall(self.out.read())

    def records(self, data):
        """The TLS record bytes that carry data (not sent)."""
        self.obj.write(data)
        return self.out.read()

    def send(self, data):
        self.sock.sendall(self.records(data))

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            try:
                data = self.obj.read(65536)
                if not data:
                    return None  # close_notify, or the end of the stream
                self.buf += data
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the server within {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                self.inc.write_eof()
                if not self.buf:
                    return None
                continue
            self.inc.write(data)
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln


def dribble(sock, chunks, gap=0.5):
    """Send chunks (e.g. single bytes) on a plain socket gap seconds apart, as a client
    that trickles a command, and stop as soon as the server sends anything or closes (the
    data stays unread). Returns the number of chunks sent by then; len(chunks) means the
    server stayed silent throughout."""
    for i, chunk in enumerate(chunks):
        try:
            sock.sendall(chunk)
        except ConnectionError:
            return i
        r, _, _ = select.select([sock], [], [], gap)
        if r:
            return i + 1
    return len(chunks)


def unfolded_received(body):
    """The Received: header of a stored body, continuation lines joined with one space."""
    _, received, _ = harness.split_stored(body)
    return re.sub(r"\r\n[ \t]+", " ", received.decode("utf-8", "replace")).rstrip("\r\n")


def log_lines(srv, event):
    """The lines of the server log (handlers' stderr) that carry event=<event>."""
    return [ln for ln in srv.log().splitlines() if re.search(rf"\bevent={re.escape(event)}\b", ln)]

