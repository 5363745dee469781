#!/usr/bin/env python3
"""tls.py - a TLS session of pgmail-smtpd with and without resumption, in one run.

    python3 tests/bench/tls.py            # make bench        (~1 minute, 3 runs each)
    python3 tests/bench/tls.py --quick    # make bench-quick  (1 run each)

What runs, on 127.0.0.1 and free ports, under one temporary directory, stopped by PID and
removed at the end (the machinery of bench.py): PostgreSQL (tests/lib/pg.sh), and
pgmail-smtpd behind systemd-socket-activate --inetd -a, straight to PostgreSQL, with a
P-256 certificate made here, twice: with tls_ticket_keys (a key file from `pgmailctl tls
rotate-ticket-keys`: every handler process issues and accepts the same tickets) and without
(every session a full handshake, as before issue 15 part 5).
The client (Python's ssl, in this process, one session after the other): connect, EHLO,
STARTTLS, the TLS 1.3 handshake (offering the last session's ticket when resuming; a
resumption that does not happen counts as an error), EHLO, then 1 or 10 messages of 4 KiB
(MAIL, RCPT, DATA) to one account, QUIT. No certificate check on the client, so that its
own cost does not hide the server's.

Figures (RESULT lines as bench.py prints them; ratio > 1: resumption better):
  tls_starttls_1msg      sessions/s, 1 message per session: pgmail= with resumption,
                         anchor= the same handler without it
  tls_starttls_10msg     the same with 10 messages per session
  tls_handshake_ms       the client's wall time from STARTTLS's 220 to the end of the
                         handshake (1-message sessions), resumed against full
Per figure the PROFILE line gives the handlers' CPU ms per session (cpu), which is where the
handshake's cost shows (ECDHE + an ECDSA signature in a full handshake; ECDHE only, and no
certificate, when resumed). A note gives the handshake's share of a session.
Options of bench.py (--quick, --runs, --seconds, --keep, --json, --bin, --limit).
"""

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402  (the shared machinery of tests/bench/)

RCPT = f"t00@{B.DOMAIN}"
PACKAGES = ["postgresql", "systemd", "openssl"]


class Session:
    """One SMTP session over STARTTLS (see the header); raises B.BenchError on any
    unexpected reply."""

    def __init__(self, port, ctx, ticket, data):
        self.data = data  # the message and its final dot, one write
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # Each write is a whole command or message: Nagle's wait for the server's delayed
        # ACK (40 ms) would measure the kernel, not the server.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.expect("220")
        self.cmd("EHLO client.bench.test", "250")
        self.cmd("STARTTLS", "220")
        t0 = time.monotonic()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=f"mx.{B.DOMAIN}", session=ticket)
        self.handshake = time.monotonic() - t0
        self.resumed = self.sock.session_reused
        self.cmd("EHLO client.bench.test", "250")  # RFC 3207 4.2: again, under TLS

    def reply(self):
        while True:
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                if line[3:4] != b"-":
                    return line.decode("ascii", "replace")
                i = self.buf.find(b"\r\n")
            data = self.sock.recv(65536)
            if not data:
                raise B.BenchError("the server closed the connection")
            self.buf += data

    def expect(self, code):
        r = self.reply()
        if not r.startswith(code):
            raise B.BenchError(f"expected {code}, got {r!r}")

    def cmd(self, line, code):
        self.sock.sendall(line.encode() + b"\r\n")
        self.expect(code)

    def mail(self):
        self.sock.sendall(f"MAIL FROM:<{B.SENDER}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
        for code in ("250", "250", "354"):
            self.expect(code)
        self.sock.sendall(self.data)
        self.expect("250")

    def quit(self):
        self.cmd("QUIT", "221")
        ticket = self.sock.session  # TLS 1.3: the newest ticket, read with the replies
        self.sock.close()
        return ticket


class TlsBench(B.Bench):
    def setup(self):
        for prog in ("smtp/pgmail-smtpd", "admin/pgmailctl"):
            if not os.access(os.path.join(self.bin, prog), os.X_OK):
                raise B.BenchError(f"{prog} is not built under {self.bin}: run make first")
        B.ensure_packages(PACKAGES, [])
        if not B.shutil.which("systemd-socket-activate"):
            raise B.BenchError("systemd-socket-activate not found")
        self.perf = B.perf_works()
        self.tmp = tempfile.mkdtemp(prefix="pgmail-tls-bench-")
        os.chmod(self.tmp, 0o755)
        os.makedirs(os.path.join(self.tmp, "logs"))
        crt, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        B.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
               f"/CN=mx.{B.DOMAIN}", "-keyout", key, "-out", crt])
        keys = os.path.join(self.tmp, "ticket-keys")
        log("starting PostgreSQL, pgmail-smtpd with and without ticket keys")
        self.pg = B.Postgres(self)
        self.new_db("pgmail")
        self.ctl("user", "add", RCPT, stdin=B.PASSWORD + "\n",
                 env_extra={"PGMAIL_PASSWORD_SCHEME": "sha512crypt"})
        self.ctl("tls", "rotate-ticket-keys", keys)
        sm = [os.path.join(self.bin, "smtp", "pgmail-smtpd")]
        tls = {"PGMAIL_TLS_CERT": crt, "PGMAIL_TLS_KEY": key}
        self.smtpd = {
            "resumed": B.Spawner(self, "smtpd-tickets", sm,
                                 dict(self.pgmail_env(), PGMAIL_TLS_TICKET_KEYS=keys, **tls)),
            "full": B.Spawner(self, "smtpd-no-tickets", sm, dict(self.pgmail_env(), **tls)),
        }
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.data = B.message(B.MSG_SIZE, "tls-bench") + b".\r\n"
        self.handshakes = {"resumed": [], "full": []}
        self.session_s = {"resumed": [], "full": []}

    def sessions(self, key, per, seconds, counted):
        """Sessions one after the other for seconds: (sessions, seconds, errors)."""
        port = self.smtpd[key].port
        ticket = None
        ops = errors = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            s0 = time.monotonic()
            try:
                s = Session(port, self.ctx, ticket if key == "resumed" else None, self.data)
                for _ in range(per):
                    s.mail()
                new = s.quit()
            except (OSError, ssl.SSLError, B.BenchError) as e:
                log(f"  {key}: {e}")
                errors += 1
                ticket = None
                continue
            # The first session of a run has no ticket yet; after it, each must resume.
            if key == "resumed" and ticket is not None and not s.resumed:
                errors += 1
            ticket = new
            ops += 1
            if counted and per == 1:
                self.handshakes[key].append(s.handshake * 1000)
                self.session_s[key].append(time.monotonic() - s0)
        return ops, time.monotonic() - t0, errors

    def system(self, key, per):
        def once(seconds, counted=True):
            fn = lambda: self.sessions(key, per, seconds, counted)
            if not counted:
                return self.measure(fn, [], [])
            return self.measure(fn, self.smtpd[key].pids(), self.db_pids())

        label = "with resumption" if key == "resumed" else "full handshakes"
        return B.System(key, label, lambda: once(self.seconds),
                        lambda: once(self.warm_seconds, counted=False))

    def figures(self):
        for per in (1, 10):
            s = self.compete(f"STARTTLS, {per} message(s) per session",
                             [self.system("resumed", per), self.system("full", per)])
            self.result(f"tls_starttls_{per}msg", "sessions/s", "rate", s["resumed"],
                        s["full"], "no resumption")
            r, f = s["resumed"].median("cpu"), s["full"].median("cpu")
            self.notes.append(f"tls {per} message(s) per session: the handler's CPU per session "
                              f"{r:.2f} ms resumed, {f:.2f} ms full ({f - r:+.2f} ms for the "
                              f"full handshake)")
        hs = {k: B.System(k, k, None) for k in ("resumed", "full")}
        for k, sys_ in hs.items():
            sys_.samples = [B.Sample(v) for v in self.handshakes[k]]
        self.result("tls_handshake_ms", "ms", "time", hs["resumed"], hs["full"],
                    "full handshake")
        for k in ("resumed", "full"):
            h, t = B.med(self.handshakes[k]), B.med(self.session_s[k]) * 1000
            self.notes.append(f"tls {k}: handshake {h:.2f} ms of a {t:.2f} ms session with 1 "
                              f"message ({100 * h / t if t else float('nan'):.0f}%, client's "
                              f"wall clock, medians)")

    def main(self):
        t0 = time.monotonic()
        self.setup()
        log(f"set up in {time.monotonic() - t0:.0f} s")
        self.figures()
        log(f"done in {time.monotonic() - t0:.0f} s")


log = B.log


def main():
    args = B.arg_parser("a TLS session of pgmail-smtpd with and without resumption",
                        300, 120).parse_args()
    B.run_bench(TlsBench(args), args)


if __name__ == "__main__":
    main()
