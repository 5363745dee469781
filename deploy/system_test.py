#!/usr/bin/env python3
"""system_test.py - the checks of `make test-system` (deploy/test-system.sh runs this).

Starts the database container and the pgmail container from the images that test-system.sh
built, with the names it chose (so that it can remove them whatever happens here), then
drives real clients from the host over 127.0.0.1 through real systemd socket activation
inside the container, and looks inside the container for what only a real systemd shows:
per-connection units and cgroups, REMOTE_ADDR, the dynamic user, the sandbox of a live
session, the credential, the journal's structured fields, the connection limits; and
pgmail-relay.service (enabled, Type=notify, active, its start in the journal), with an
outbound delivery end to end: AUTH and submission on 587 to a remote domain, delivered by the
relay in the container to Postfix's smtp-sink on the host's 127.0.3.25 (the container shares
the host's network), the MX found through an unbound on the host (tests/bench/bench_unbound.py;
pgmail.conf's dns_resolver and relay_port point there).

  system_test.py --work DIR --name PREFIX --image IMAGE --db-image IMAGE --port-base N

Prints "PASS <check>" or "FAIL <check>: <why>" per check and a summary, and writes
"<passed> <failed>" to DIR/result. Exit status 0 when everything passed.
"""
import argparse
import base64
import glob
import hashlib
import json
import os
import poplib
import re
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PASSED = []
FAILED = []
NOTES = []
TIMES = []


def check(name, ok, why=""):
    if ok:
        PASSED.append(name)
        print("PASS " + name, flush=True)
    else:
        FAILED.append(name)
        print("FAIL %s%s" % (name, ": " + why if why else ""), flush=True)
    return ok


def note(text):
    NOTES.append(text)
    print("NOTE " + text, flush=True)


def free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(*args, input=None, check_rc=True, timeout=120):
    """Run a command on the host; return its stdout (text). Raises on failure if check_rc."""
    p = subprocess.run(args, input=input, capture_output=True, timeout=timeout,
                       text=isinstance(input, str) or input is None)
    if check_rc and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args[:4]), p.returncode,
                                                (p.stderr or p.stdout).strip()[-500:]))
    return p.stdout


class Env:
    """Names, ports and files of this run."""

    def __init__(self, a):
        self.work = a.work
        self.name = a.name
        self.image = a.image
        self.db_image = a.db_image
        self.mail = a.name + "-mail"
        self.db = a.name + "-db"
        self.vol_data = a.name + "-data"
        self.vol_run = a.name + "-run"
        self.secret_pgpass = a.name + "-pgpass"
        self.system_image = a.system_image
        self.deb, self.deb_prev = a.deb, a.deb_prev
        self.deb_host = a.name + "-deb"
        b = a.port_base
        self.ports = {"smtp": b + 25, "submission": b + 587, "submissions": b + 465,
                      "pop3": b + 110, "pop3s": b + 995}
        # The outbound check's remote MX (smtp-sink) and DNS (unbound), on the host: in
        # pgmail.conf before the container starts, because the relay reads it at start.
        self.sink_addr = "127.0.3.25"
        self.sink_port = free_port(self.sink_addr)
        self.dns_port = free_port("127.0.0.1")
        self.helpers = []  # processes started on the host, stopped at the end
        self.db_password = "pw-" + secrets.token_hex(12)
        self.users = {"alice@example.test": "alice-" + secrets.token_hex(4),
                      "bob@example.test": "bob-" + secrets.token_hex(4)}

    def mexec(self, *args, input=None, check_rc=True, timeout=120):
        opts = ["-i"] if input is not None else []
        return run("podman", "exec", *opts, self.mail, *args, input=input, check_rc=check_rc,
                   timeout=timeout)

    def dbsql(self, sql):
        return run("podman", "exec", "-u", "postgres", self.db, "psql", "-X", "-At", "-d", "pgmail",
                   "-c", sql).strip()


# --- Setup: files, secrets, volumes, the two containers. -------------------------------------

def write_files(e):
    """/etc/pgmail for the pgmail container, laid out as on a host (deploy/README.md): it is
    mounted read-only. The database container gets the same pgpass as a podman secret, the
    other way the README describes."""
    etc = os.path.join(e.work, "etc-pgmail")
    os.makedirs(etc)
    os.chmod(etc, 0o755)
    with open(os.path.join(e.work, "pgpass"), "w") as f:
        f.write("*:*:pgmail:pgmail:%s\n" % e.db_password)
    os.chmod(os.path.join(e.work, "pgpass"), 0o600)
    shutil.copy(os.path.join(e.work, "pgpass"), os.path.join(etc, "pgpass"))
    os.chmod(os.path.join(etc, "pgpass"), 0o600)
    # pgmail.conf: its hostname is overridden by the environment (-e), its size limit and
    # auth delay are not.
    with open(os.path.join(etc, "pgmail.conf"), "w") as f:
        f.write("# pgmail.conf mounted by make test-system\n"
                "hostname = conf.example.test\n"
                "message_size_limit = 10485760\n"
                "auth_failure_delay_ms = 200\n"
                "# pgmail-relay: MX hosts listen on this port; DNS from the test's unbound\n"
                "relay_port = %d\n"
                "dns_resolver = 127.0.0.1@%d\n" % (e.sink_port, e.dns_port))
    os.chmod(os.path.join(etc, "pgmail.conf"), 0o644)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=mx.example.test", "-keyout", os.path.join(etc, "tls.key"),
        "-out", os.path.join(etc, "tls.crt"))
    os.chmod(os.path.join(etc, "tls.key"), 0o600)
    os.chmod(os.path.join(etc, "tls.crt"), 0o644)
    # The drop-ins that move the five sockets to 127.0.0.1 and the test ports: nothing else of
    # the units changes (see test-system.sh for why).
    for unit, port in e.ports.items():
        d = os.path.join(e.work, "dropins", "pgmail-%s.socket.d" % unit)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "test-ports.conf"), "w") as f:
            f.write("# make test-system: loopback only, on a test port\n"
                    "[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n" % port)


def start_db(e):
    run("podman", "run", "-d", "--name", e.db, "--network=none",
        "--secret", "%s,target=/etc/pgmail/pgpass,mode=0400" % e.secret_pgpass,
        "-v", e.vol_data + ":/var/lib/postgresql/data", "-v", e.vol_run + ":/run/postgresql",
        e.db_image)
    deadline = time.time() + 60
    while time.time() < deadline:
        p = subprocess.run(["podman", "exec", "-u", "postgres", e.db, "psql", "-XAtqc",
                            "SELECT 1", "-d", "pgmail"], capture_output=True, text=True)
        if p.stdout.strip() == "1":
            return True
        time.sleep(0.5)
    print(run("podman", "logs", e.db, check_rc=False))
    return False


def create_mail(e):
    """podman create + the port drop-ins + start; returns seconds until systemd runs."""
    run("podman", "create", "--name", e.mail, "--network=host", "--systemd=always",
        "-v", os.path.join(e.work, "etc-pgmail") + ":/etc/pgmail:ro",
        "-v", e.vol_run + ":/run/postgresql",
        "-e", "PGMAIL_HOSTNAME=mx.example.test",
        e.image)
    for unit in e.ports:
        run("podman", "cp", os.path.join(e.work, "dropins", "pgmail-%s.socket.d" % unit),
            e.mail + ":/etc/systemd/system/")
    t0 = time.time()
    run("podman", "start", e.mail)
    state = ""
    while time.time() < t0 + 90:
        p = subprocess.run(["podman", "exec", e.mail, "systemctl", "is-system-running"],
                           capture_output=True, text=True)
        state = p.stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.3)
    return state, time.time() - t0


# --- Small clients. ---------------------------------------------------------------------------

def connect(port, source="127.0.0.1", timeout=20):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_line(s):
    data = b""
    while not data.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        data += c
    return data


def units(e, pattern):
    out = e.mexec("systemctl", "list-units", "--all", "--plain", "--no-legend", pattern)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def session_unit(e, prefix, source, sport, wait=5.0):
    """The per-connection unit serving the client at source:sport."""
    deadline = time.time() + wait
    while time.time() < deadline:
        for u in units(e, prefix + "@*"):
            if u.endswith("-%s:%d.service" % (source, sport)):
                return u
        time.sleep(0.1)
    return None


def wait_idle(e, timeout=60):
    """Until no pgmail session unit is left (CollectMode= removes ended ones)."""
    deadline = time.time() + timeout
    left = []
    while time.time() < deadline:
        left = units(e, "pgmail-*@*")
        if not left:
            return []
        time.sleep(0.5)
    return left


MESSAGE = (b"From: Remote Sender <sender@remote.example>\r\n"
           b"To: Alice <alice@example.test>\r\n"
           b"Subject: system test \xc3\xa9t\xc3\xa9\r\n"
           b"Message-ID: <system-test-1@remote.example>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n"
           b"\r\n"
           b"Hello Alice,\r\n"
           b".a line that starts with a dot\r\n"
           b"..and one with two\r\n"
           b".\r\n"  # a lone dot inside: dot-stuffed by the client, unstuffed by both servers
           b"trailing spaces   \r\n"
           b"tab\tinside and 8-bit: \xe2\x82\xac \xf0\x9f\x93\xac\r\n"
           + b"x" * 990 + b"\r\n"
           b"\r\n"
           b"-- \r\n"
           b"the end\r\n")


# --- The checks. --------------------------------------------------------------------------------

def check_boot(e, state, secs):
    check("systemd is PID 1 and the system is running (%.1f s)" % secs, state == "running",
          "is-system-running: %r; failed units: %s" % (
              state, e.mexec("systemctl", "list-units", "--failed", "--plain", "--no-legend",
                             check_rc=False).strip()))
    comm = e.mexec("cat", "/proc/1/comm").strip()
    check("PID 1 is systemd", comm == "systemd", comm)
    for unit, port in e.ports.items():
        out = e.mexec("systemctl", "show", "-p", "ActiveState", "-p", "Listen", "-p",
                      "UnitFileState", "pgmail-%s.socket" % unit)
        ok = ("ActiveState=active" in out and "UnitFileState=enabled" in out
              and "127.0.0.1:%d" % port in out)
        check("pgmail-%s.socket enabled and listening on 127.0.0.1:%d" % (unit, port), ok,
              out.replace("\n", " "))
    env = e.mexec("cat", "/run/pgmail/environment", check_rc=False)
    check("container settings (-e) reach the services: /run/pgmail/environment",
          'PGMAIL_HOSTNAME="mx.example.test"' in env and "PGPASSFILE" not in env
          and "PGHOST=" in env, env.replace("\n", " "))


def check_admin(e):
    out = e.mexec("pgmailctl", "migrate")
    check("pgmailctl migrate inside the container", "001_initial.sql" in out, out.strip())
    again = e.mexec("pgmailctl", "migrate")
    check("pgmailctl migrate again is a no-op", again.strip() == "up to date", again.strip())
    e.mexec("pgmailctl", "domain", "add", "example.test")
    for user, pw in e.users.items():
        e.mexec("pgmailctl", "user", "add", user, input=pw + "\n")
    listed = e.mexec("pgmailctl", "user", "list")
    check("pgmailctl user add (two accounts)", all(u in listed for u in e.users), listed.strip())


def check_smtp_delivery(e):
    port = e.ports["smtp"]
    s = smtplib.SMTP(local_hostname="client.example", timeout=30)
    code, banner = s.connect("127.0.0.1", port)
    banner = b"%d %s" % (code, banner)
    check("SMTP greeting names PGMAIL_HOSTNAME from the container environment",
          banner.startswith(b"220 mx.example.test "), banner.decode(errors="replace"))
    s.ehlo()
    check("EHLO: SIZE from pgmail.conf in the mounted /etc/pgmail", s.esmtp_features.get("size") == "10485760",
          str(s.esmtp_features))
    check("EHLO: STARTTLS offered (tls.crt/tls.key from /etc/pgmail, as credentials)",
          "starttls" in s.esmtp_features, str(s.esmtp_features))
    refused = s.sendmail("sender@remote.example", ["alice@example.test"], MESSAGE)
    last = s.noop()
    s.quit()
    check("SMTP delivery to alice on port 25 (smtplib)", refused == {}, str(refused))
    return last


def pop3(e, user, port=None):
    p = poplib.POP3("127.0.0.1", port or e.ports["pop3"], timeout=30)
    p.user(user)
    p.pass_(e.users[user])
    return p


def check_pop3_exact(e):
    p = pop3(e, "alice@example.test")
    count, size = p.stat()
    resp, lines, octets = p.retr(1)
    uidl = p.uidl(1)
    p.quit()
    got = b"\r\n".join(lines) + b"\r\n"
    check("POP3: one message for alice", count == 1, "STAT %d %d" % (count, size))
    check("POP3: RETR ends with the message sent, byte for byte", got.endswith(MESSAGE),
          "got %d octets, sent %d" % (len(got), len(MESSAGE)))
    head = got[: len(got) - len(MESSAGE)]
    check("POP3: only Return-Path: and Received: were prepended",
          head.startswith(b"Return-Path: <sender@remote.example>\r\nReceived: from client.example")
          and all(l.startswith((b"Return-Path:", b"Received:", b"\t", b" "))
                  for l in head.split(b"\r\n")[:-1]),
          repr(head[:300]))
    check("POP3: size in STAT is the octets retrieved", size == len(got), "%d vs %d" % (size, len(got)))
    digest = e.dbsql("SELECT encode(sha256(body), 'hex') FROM messages ORDER BY id LIMIT 1")
    check("PostgreSQL holds exactly the octets POP3 returned (sha256)",
          digest == hashlib.sha256(got).hexdigest(), digest)
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-s", "-u", "alice@example.test:" + e.users["alice@example.test"],
                              "pop3://127.0.0.1:%d/1" % e.ports["pop3"]], capture_output=True).stdout
        check("POP3: curl retrieves the same octets", out == got, "%d octets" % len(out))
    m = re.search(rb"with ESMTP id ([0-9a-f]+)", got)
    return got, (m.group(1).decode() if m else ""), uidl


def check_pooler(e):
    """The image's default topology: the handlers reach PostgreSQL through PgBouncer
    (transaction pooling, a Unix socket), pgmail-relay straight (it LISTENs: check_relay and
    check_outbound show it working). Without the pooler a handler's backend ends with its
    session; through it the pool's server connections stay after every session ended."""
    state = e.mexec("systemctl", "is-active", "pgbouncer.service", check_rc=False).strip()
    check("PgBouncer runs in the pgmail container", state == "active", state)
    left = wait_idle(e)
    rows = e.dbsql("SELECT application_name || ':' || count(*) FROM pg_stat_activity"
                   " WHERE usename = 'pgmail' GROUP BY application_name ORDER BY 1")
    check("the handlers' transactions went through PgBouncer (server connections of the pool"
          " stay after the sessions ended)",
          not left and re.search(r"^pgmail-(smtpd|pop3d):[1-9]", rows, re.M) is not None,
          "sessions left: %s; backends: %s" % (left, rows.replace("\n", ", ")))


def check_auth(e):
    port = e.ports["submission"]
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
    s.ehlo()
    code, msg = s.mail("bob@example.test")
    check("port 587: MAIL before AUTH is refused (530 5.7.0)",
          code == 530 and msg.startswith(b"5.7.0"), "%d %s" % (code, msg))
    s.rset()
    try:
        s.login("bob@example.test", "wrong-password")
        bad = (0, b"accepted")
    except smtplib.SMTPAuthenticationError as err:
        bad = (err.smtp_code, err.smtp_error)
    check("port 587: a wrong password gets 535", bad[0] == 535, str(bad))
    s.quit()
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
    s.ehlo()
    code, msg = s.login("bob@example.test", e.users["bob@example.test"])
    check("port 587: AUTH PLAIN/LOGIN with bob's password (235)", code == 235, "%d %s" % (code, msg))
    refused = s.sendmail("bob@example.test", ["alice@example.test"],
                         b"Subject: from bob\r\n\r\nsubmitted\r\n")
    s.quit()
    check("port 587: bob submits a message to alice", refused == {}, str(refused))
    p = pop3(e, "alice@example.test")
    count = p.stat()[0]
    p.quit()
    check("POP3: alice now has two messages", count == 2, "STAT %d" % count)


def check_in_use(e):
    first = pop3(e, "alice@example.test")
    second = poplib.POP3("127.0.0.1", e.ports["pop3"], timeout=30)
    second.user("alice@example.test")
    try:
        second.pass_(e.users["alice@example.test"])
        got = "+OK: logged in twice"
    except poplib.error_proto as err:
        got = err.args[0].decode(errors="replace")
    second.close()
    check("POP3: a second login while the first holds the mailbox gets -ERR [IN-USE]",
          got.startswith("-ERR [IN-USE]"), got)
    first.quit()
    third = pop3(e, "alice@example.test")
    ok = third.stat()[0] == 2
    third.quit()
    check("POP3: after QUIT the mailbox opens again", ok)


def check_per_source(e):
    port = e.ports["smtp"]
    limit = int(e.mexec("systemctl", "show", "-p", "MaxConnectionsPerSource", "--value",
                        "pgmail-smtp.socket").strip())
    held = []
    try:
        greeted = 0
        for _ in range(limit):
            s = connect(port, "127.0.0.2")
            held.append(s)
            if read_line(s).startswith(b"220 "):
                greeted += 1
        over = connect(port, "127.0.0.2", timeout=10)
        held.append(over)
        try:
            extra = read_line(over)
        except (ConnectionResetError, socket.timeout) as err:
            extra = repr(err).encode()
        other = connect(port, "127.0.0.3")
        held.append(other)
        other_line = read_line(other)
        check("MaxConnectionsPerSource=%d: %d sessions from 127.0.0.2 are served" % (limit, limit),
              greeted == limit, "greeted %d" % greeted)
        check("MaxConnectionsPerSource: connection %d from 127.0.0.2 is closed unanswered" % (limit + 1),
              not extra.startswith(b"220"), repr(extra))
        check("MaxConnectionsPerSource: meanwhile 127.0.0.3 is served",
              other_line.startswith(b"220 "), repr(other_line))
    finally:
        for s in held:
            s.close()


def check_hardening(e):
    """A live SMTP session, seen from inside the container through /proc."""
    port = e.ports["smtp"]
    s = connect(port, "127.0.0.4")
    sport = s.getsockname()[1]
    banner = read_line(s)
    unit = session_unit(e, "pgmail-smtp", "127.0.0.4", sport)
    check("a unit per connection: pgmail-smtp@N-127.0.0.1:%d-127.0.0.4:%d.service" % (port, sport),
          unit is not None and banner.startswith(b"220"), str(unit))
    if not unit:
        s.close()
        return
    pid = e.mexec("systemctl", "show", "-p", "MainPID", "--value", unit).strip()
    status = e.mexec("cat", "/proc/%s/status" % pid)
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    uids = fields.get("Uid", "0").split()
    name = e.mexec("getent", "passwd", uids[0], check_rc=False).split(":")[0]
    check("handler %s (pid %s) runs as the dynamic user %s (uid %s, not 0)"
          % (fields.get("Name"), pid, name or "?", uids[0]),
          all(u != "0" for u in uids) and 61184 <= int(uids[0]) <= 65519 and name == "pgmail",
          fields.get("Uid", ""))
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        check("handler has no capabilities: %s %s" % (cap, fields.get(cap)),
              int(fields.get(cap, "1"), 16) == 0)
    check("handler: NoNewPrivs 1, Seccomp 2 (SystemCallFilter=)",
          fields.get("NoNewPrivs") == "1" and fields.get("Seccomp") == "2",
          "NoNewPrivs %s Seccomp %s" % (fields.get("NoNewPrivs"), fields.get("Seccomp")))
    uid_map = e.mexec("cat", "/proc/%s/uid_map" % pid).split("\n")
    check("handler: private user namespace (PrivateUsers=: only root and itself mapped)",
          len([l for l in uid_map if l.strip()]) == 2, " | ".join(uid_map))
    ns = e.mexec("sh", "-c", "readlink /proc/1/ns/mnt /proc/%s/ns/mnt; "
                 "findmnt -N %s -no OPTIONS /; findmnt -N %s -no OPTIONS /tmp" % (pid, pid, pid))
    lines = ns.split("\n")
    check("handler: own mount namespace, / read-only (ProtectSystem=strict), private /tmp",
          len(lines) >= 4 and lines[0] != lines[1] and lines[2].startswith("ro")
          and lines[3].startswith("rw"), " | ".join(lines))
    cg = e.mexec("cat", "/proc/%s/cgroup" % pid)
    check("handler: a cgroup of its own (system-pgmail\\x2dsmtp.slice/%s)" % unit,
          ("/system.slice/system-pgmail\\x2dsmtp.slice/" + unit) in cg, cg.strip().split("\n")[0])
    env = e.mexec("sh", "-c", "tr '\\0' '\\n' </proc/%s/environ" % pid)
    check("handler: REMOTE_ADDR=127.0.0.4 set by systemd (Accept=yes)",
          "REMOTE_ADDR=127.0.0.4\n" in env, " ".join(l for l in env.split("\n") if "REMOTE" in l))
    check("handler: the database password is not in its environment",
          e.db_password not in env and "PGPASSWORD" not in env)
    cred = e.mexec("sh", "-c", "cat '/run/credentials/%s/pgpass'" % unit, check_rc=False)
    check("LoadCredential=pgpass: /run/credentials/%s/pgpass holds the secret" % unit,
          e.db_password in cred, "credential: %d octets" % len(cred))
    cfg = e.mexec("systemctl", "show", "-p", "MemoryMax", "-p", "TasksMax", "-p",
                  "RuntimeMaxUSec", unit).replace("\n", " ")
    note("limits configured for %s: %s (cgroup v1 hybrid here: MemoryMax= is not enforced)"
         % (unit, cfg.strip()))
    s.sendall(b"QUIT\r\n")
    s.close()


def check_journal(e, delivery_session_prefix):
    out = e.mexec("journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=pgmail-smtpd",
                  "+", "SYSLOG_IDENTIFIER=pgmail-pop3d", timeout=60)
    entries = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    pg = [x for x in entries if "PGMAIL_EVENT" in x]
    check("journal: %d entries with PGMAIL_EVENT from pgmail-smtpd and pgmail-pop3d" % len(pg),
          len(pg) > 10 and any(x.get("SYSLOG_IDENTIFIER") == "pgmail-pop3d" for x in pg))
    check("journal: every pgmail entry has PGMAIL_SESSION and PGMAIL_PEER",
          all("PGMAIL_SESSION" in x and "PGMAIL_PEER" in x for x in pg))
    stored = [x for x in pg if x["PGMAIL_EVENT"] == "message-stored"
              and x["PGMAIL_SESSION"].startswith(delivery_session_prefix or "-")]
    ok = len(stored) == 1
    check("journal: the delivery's message-stored event, by the session id in Received:",
          ok and stored[0].get("PGMAIL_PEER") == "127.0.0.1",
          "session prefix %r, %d found" % (delivery_session_prefix, len(stored)))
    if ok:
        sess = stored[0]["PGMAIL_SESSION"]
        events = [x["PGMAIL_EVENT"] for x in pg if x["PGMAIL_SESSION"] == sess]
        unit = stored[0].get("_SYSTEMD_UNIT", "")
        check("journal: that session's events (%s) come from its own unit %s"
              % (",".join(events), unit),
              events[0] == "connect" and events[-1] == "disconnect"
              and re.match(r"pgmail-smtp@\d+-127\.0\.0\.1:\d+-127\.0\.0\.1:\d+\.service$", unit)
              is not None)
        dbsess = e.dbsql("SELECT session_id FROM messages ORDER BY id LIMIT 1")
        check("journal: PGMAIL_SESSION is the session_id stored with the message", dbsess == sess,
              "%s vs %s" % (dbsess, sess))
    logins = [x for x in pg if x["PGMAIL_EVENT"] == "login"
              and x.get("SYSLOG_IDENTIFIER") == "pgmail-pop3d"]
    check("journal: POP3 login events", len(logins) >= 3, "%d" % len(logins))
    secrets_seen = [pw for pw in list(e.users.values()) + [e.db_password] if pw in out]
    check("journal: no password appears in it", not secrets_seen)


def relay_journal(e, *match):
    out = e.mexec("journalctl", "-o", "json", "--no-pager", *match, check_rc=False, timeout=60)
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def check_relay(e):
    """pgmail-relay.service under systemd: enabled, Type=notify, active (it was started at
    boot, before `pgmailctl migrate`: it must wait for the schema, not give up), running as
    the dynamic user, and its start in the journal."""
    deadline = time.time() + 30
    state = ""
    while time.time() < deadline:
        state = e.mexec("systemctl", "is-active", "pgmail-relay.service", check_rc=False).strip()
        if state == "active":
            break
        time.sleep(0.5)
    props = dict(l.split("=", 1) for l in e.mexec(
        "systemctl", "show", "-p", "UnitFileState", "-p", "Type", "-p", "MainPID", "-p",
        "NRestarts", "-p", "Result", "pgmail-relay.service").splitlines() if "=" in l)
    check("pgmail-relay.service enabled (systemctl enable in the image), Type=notify",
          props.get("UnitFileState") == "enabled" and props.get("Type") == "notify", str(props))
    check("pgmail-relay.service active after migrate (systemctl is-active)", state == "active",
          "%s; %s; journal: %s" % (state, props, e.mexec(
              "journalctl", "--no-pager", "-n", "15", "-u", "pgmail-relay.service",
              check_rc=False).strip()[-1200:]))
    note("pgmail-relay: %s restarts before it stayed up" % props.get("NRestarts"))
    pid = props.get("MainPID", "0")
    status = e.mexec("cat", "/proc/%s/status" % pid, check_rc=False) if pid != "0" else ""
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    uid = fields.get("Uid", "0").split()[0]
    check("pgmail-relay (pid %s, %s) runs as a dynamic user (uid %s), no capabilities"
          % (pid, fields.get("Name"), uid),
          fields.get("Name") == "pgmail-relay" and uid != "0" and
          int(fields.get("CapEff", "1"), 16) == 0, str({k: fields.get(k) for k in
                                                        ("Name", "Uid", "CapEff")}))
    started = relay_journal(e, "UNIT=pgmail-relay.service",
                            "MESSAGE_ID=39f53479d3a045ac8e11786248231fbf")
    check("journal: systemd's \"Started\" for pgmail-relay.service (after READY=1)",
          any(x.get("JOB_RESULT") == "done" for x in started),
          "%d start entries" % len(started))
    own = [x for x in relay_journal(e, "_SYSTEMD_UNIT=pgmail-relay.service")
           if x.get("SYSLOG_IDENTIFIER") == "pgmail-relay"]
    events = [x.get("PGMAIL_EVENT") for x in own if "PGMAIL_EVENT" in x]
    check("journal: pgmail-relay's own entries at start (%d; events %s)"
          % (len(own), ",".join(events[:5]) or "none"), len(own) > 0)


def start_remote(e, dump):
    """On the host: unbound with dest.example's MX, and smtp-sink dumping what arrives."""
    sys.path.insert(0, os.path.join(TOP, "tests", "bench"))
    from bench_unbound import Unbound  # until tests/lib/dnsserver.py is on main
    dns = Unbound(e.work, ["dest.example. MX 10 mx.dest.example.",
                           "mx.dest.example. A %s" % e.sink_addr], e.dns_port)
    e.helpers.append(dns)
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-h", "mx.dest.example", "-d",
                             os.path.join(dump, "%H%M%S."), "%s:%d" % (e.sink_addr, e.sink_port),
                             "10"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    e.helpers.append(sink)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection((e.sink_addr, e.sink_port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def check_outbound(e):
    """bob submits on 587 to carol@dest.example; pgmail-relay, inside the container, finds the
    MX through the host's unbound and delivers to smtp-sink on the host."""
    missing = [t for t in ("smtp-sink", "unbound") if not shutil.which(t)]
    if missing:
        note("outbound delivery not checked: %s not installed on this host (Debian: postfix, "
             "unbound)" % " ".join(missing))
        return
    dump = tempfile.mkdtemp(prefix="pgmail-test-sink-")
    try:
        os.chown(dump, 65534, 65534)  # smtp-sink -u nobody writes there
        check("outbound: smtp-sink on %s:%d and unbound on 127.0.0.1:%d (host)"
              % (e.sink_addr, e.sink_port, e.dns_port), start_remote(e, dump))
        marker = "outbound-" + secrets.token_hex(6)
        s = smtplib.SMTP("127.0.0.1", e.ports["submission"], local_hostname="client.example",
                         timeout=30)
        s.ehlo()
        s.login("bob@example.test", e.users["bob@example.test"])
        try:
            refused = s.sendmail("bob@example.test", ["carol@dest.example"],
                                 ("Subject: %s\r\nTo: carol@dest.example\r\n\r\n"
                                  "to the world\r\n" % marker).encode())
        except smtplib.SMTPRecipientsRefused as err:
            refused = err.recipients
        t250 = time.time()
        s.quit()
        if not check("port 587: bob's message to carol@dest.example accepted (remote "
                     "recipient, AUTH)", refused == {}, str(refused)):
            return
        got, deadline = "", time.time() + 60
        while time.time() < deadline and marker not in got:
            for f in glob.glob(os.path.join(dump, "*")):
                with open(f, errors="replace") as fh:
                    text = fh.read()
                if marker in text and text.rstrip().endswith("to the world"):
                    got = text
            time.sleep(0.05)
        secs = time.time() - t250
        check("outbound: the relay delivered it to smtp-sink in %.2f s (MX via dns_resolver, "
              "relay_port)" % secs,
              "X-Mail-Args: <bob@example.test>" in got
              and "X-Rcpt-Args: <carol@dest.example>" in got, got[:400] or "nothing arrived")
        row = ""
        deadline = time.time() + 15
        while time.time() < deadline and not row.startswith("delivered|"):
            row = e.dbsql("SELECT state, last_code, last_host, last_address FROM queue "
                          "WHERE recipient = 'carol@dest.example'")
            time.sleep(0.2)
        check("outbound: its queue row is delivered, 250 from mx.dest.example (%s)" % row,
              re.match(r"delivered\|250\|mx\.dest\.example\.?\|127\.0\.3\.25$", row)
              is not None, row)
        ev = [x for x in relay_journal(e, "PGMAIL_EVENT=relay-delivered")
              if "carol@dest.example" in json.dumps(x)]
        check("journal: relay-delivered for carol@dest.example from pgmail-relay.service",
              len(ev) == 1 and ev[0].get("_SYSTEMD_UNIT") == "pgmail-relay.service",
              "%d entries" % len(ev))
    finally:
        stop_helpers(e)
        shutil.rmtree(dump, ignore_errors=True)


def stop_helpers(e):
    for h in reversed(e.helpers):
        if isinstance(h, subprocess.Popen):
            if h.poll() is None:
                h.terminate()
                try:
                    h.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    h.kill()
                    h.wait()
        else:
            h.stop()
    e.helpers.clear()


def check_tls(e):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = smtplib.SMTP("127.0.0.1", e.ports["smtp"], local_hostname="client.example", timeout=30)
    s.starttls(context=ctx)
    s.ehlo()
    version = s.sock.version()
    s.quit()
    check("port 25: STARTTLS (%s)" % version, version in ("TLSv1.2", "TLSv1.3"))
    s = smtplib.SMTP_SSL("127.0.0.1", e.ports["submissions"], local_hostname="client.example",
                         timeout=30, context=ctx)
    s.ehlo()
    code, _ = s.login("bob@example.test", e.users["bob@example.test"])
    s.quit()
    check("port 465: implicit TLS, AUTH accepted", code == 235, str(code))
    p = poplib.POP3_SSL("127.0.0.1", e.ports["pop3s"], timeout=30, context=ctx)
    p.user("alice@example.test")
    p.pass_(e.users["alice@example.test"])
    count = p.stat()[0]
    p.quit()
    check("port 995: implicit TLS, POP3 login and STAT", count == 2, str(count))


def check_burst(e):
    port = e.ports["smtp"]
    before = e.mexec("systemctl", "show", "-p", "NAccepted", "--value", "pgmail-smtp.socket").strip()
    errors = 0
    t0 = time.time()
    for i in range(500):
        s = socket.socket()
        try:
            s.bind(("127.%d.%d.%d" % (10 + i // 62500, (i // 250) % 250, 1 + i % 250), 0))
            s.connect(("127.0.0.1", port))
        except OSError:
            errors += 1
        s.close()
    secs = time.time() - t0
    check("burst: 500 connections from 500 addresses in %.2f s (at most 2)" % secs,
          secs <= 2.0 and errors == 0, "%d connect errors" % errors)
    time.sleep(1)
    out = e.mexec("systemctl", "show", "-p", "ActiveState", "-p", "Result", "-p", "NAccepted",
                  "-p", "NRefused", "pgmail-smtp.socket")
    props = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
    accepted = int(props.get("NAccepted", 0)) - int(before or 0)
    check("burst: pgmail-smtp.socket still active, result success (TriggerLimit off)",
          props.get("ActiveState") == "active" and props.get("Result") == "success",
          out.replace("\n", " "))
    note("burst: %d accepted, NRefused %s (over MaxConnections, closed at once)"
         % (accepted, props.get("NRefused")))
    left = wait_idle(e, 90)
    check("burst: every session ended and left no unit behind (CollectMode=)", not left,
          "%d left: %s" % (len(left), " ".join(left[:3])))
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
    code = s.noop()[0]
    s.quit()
    check("after the burst a new SMTP session is served", code == 250, str(code))


def check_restart(e):
    """The upgrade path of deploy/README.md: stop and remove the pgmail container, replace the
    database container too (the volumes stay), migrate with a one-off container of the pgmail
    image, start a new pgmail container; the mail is still there."""
    t0 = time.time()
    run("podman", "stop", e.mail, timeout=60)
    secs = time.time() - t0
    check("podman stop of the systemd container is clean and quick (%.1f s)" % secs, secs < 9)
    run("podman", "rm", e.mail)
    run("podman", "stop", e.db, timeout=60)
    run("podman", "rm", e.db)
    check("a new database container starts on the same volume (cluster kept, password set again)",
          start_db(e))
    out = run("podman", "run", "--rm", "--network=none", "-v", e.vol_run + ":/run/postgresql",
              "-v", os.path.join(e.work, "etc-pgmail") + ":/etc/pgmail:ro", e.image,
              "pgmailctl", "migrate")
    check("pgmailctl migrate in a one-off container of the image (nothing to apply)",
          out.strip() == "up to date", out.strip())
    state, secs = create_mail(e)
    check("a new pgmail container starts (%.1f s)" % secs, state == "running", state)
    deadline = time.time() + 30
    count = -1
    while time.time() < deadline:
        try:
            p = pop3(e, "alice@example.test")
            count = p.stat()[0]
            p.quit()
            break
        except (OSError, poplib.error_proto):
            time.sleep(0.5)
    check("mail survives replacing both containers (alice: 2 messages)", count == 2, str(count))
    state = ""
    while time.time() < deadline + 30 and state != "active":
        state = e.mexec("systemctl", "is-active", "pgmail-relay.service", check_rc=False).strip()
        time.sleep(0.3)
    check("pgmail-relay.service active in the new container", state == "active", state)


def check_save_load(e):
    """deploy/README.md's way to hosts without a registry: `podman save -m` writes both images
    into one archive (without -m, podman 4.3 writes only the first and gives it both names)."""
    archive = os.path.join(e.work, "images.tar")
    run("podman", "save", "-m", "-o", archive, e.image, e.db_image, timeout=300)
    manifest = json.loads(subprocess.run(["tar", "-xOf", archive, "manifest.json"],
                                         capture_output=True, check=True).stdout)
    os.unlink(archive)
    ids = {}
    for name in (e.image, e.db_image):
        ids[name] = run("podman", "image", "inspect", "--format", "{{.Id}}", name).strip()
    got = {tag: m["Config"].split("/")[-1].split(".")[0].replace("sha256:", "")
           for m in manifest for tag in m.get("RepoTags") or []}
    check("podman save -m: one archive holds both images under their names",
          all(got.get(n) == ids[n] for n in ids) and ids[e.image] != ids[e.db_image],
          "archive %s, images %s" % (got, ids))


# --- The Debian package on a Debian 12 system: install, purge, upgrade. ------------------------

def dexec(e, *args, check_rc=True, timeout=300):
    return run("podman", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", e.deb_host, *args,
               check_rc=check_rc, timeout=timeout)


def wait_running(container, timeout=90):
    state, deadline = "", time.time() + timeout
    while time.time() < deadline and state not in ("running", "degraded"):
        state = subprocess.run(["podman", "exec", container, "systemctl", "is-system-running"],
                               capture_output=True, text=True).stdout.strip()
        time.sleep(0.3)
    return state


def fresh_database(e):
    """An empty database pgmail, as README.Debian's step 1 leaves it."""
    for sql in ("DROP DATABASE IF EXISTS pgmail WITH (FORCE)", "CREATE DATABASE pgmail OWNER pgmail"):
        run("podman", "exec", "-u", "postgres", e.db, "psql", "-X", "-q", "-d", "postgres", "-c", sql)


def tree_files():
    """What the package must carry, read from the tree: the programs (the Makefile's
    PROGRAMS), every unit, migration and manual page."""
    with open(os.path.join(TOP, "Makefile")) as f:
        # the make variable, continuation lines included
        programs = re.search(r"^PROGRAMS := ((?:.*\\\n)*.*)$", f.read(), re.M).group(1)
        programs = programs.replace("\\\n", " ").split()
    want = ["/usr/sbin/" + os.path.basename(p) for p in programs]
    want += ["/lib/systemd/system/" + u for u in sorted(os.listdir(os.path.join(TOP, "units")))]
    want += ["/usr/share/pgmail/migrations/" + m for m in migrations_in_tree()]
    for page in sorted(glob.glob(os.path.join(TOP, "admin", "man", "*.[58]"))):
        want.append("/usr/share/man/man%s/%s.gz" % (page[-1], os.path.basename(page)))
    return want + ["/etc/pgmail/pgmail.conf", "/usr/share/doc/pgmail/README.Debian"]


def migrations_in_tree():
    return sorted(m for m in os.listdir(os.path.join(TOP, "migrations")) if m.endswith(".sql"))


def deb_setup(e, deb, hostname):
    """apt install DEB, then README.Debian's steps 2 to 4 as an administrator types them:
    pgmail.conf's database and hostname lines, /etc/pgmail/pgpass, migrate, a domain and
    alice, the sockets and the relay enabled. Returns (seconds for apt, migrate's output)."""
    t = time.time()
    dexec(e, "apt-get", "install", "-y", "-qq", "-o", "Dpkg::Options::=--force-confold",
          "/root/" + os.path.basename(deb))
    secs = time.time() - t
    dexec(e, "sh", "-ec",
          "sed -i -e 's|^#database =$|database = host=/run/postgresql dbname=pgmail user=pgmail|' "
          "-e 's|^#hostname =$|hostname = %s|' /etc/pgmail/pgmail.conf\n"
          "install -m 0600 /dev/null /etc/pgmail/pgpass\n"
          "echo '*:*:pgmail:pgmail:%s' >/etc/pgmail/pgpass" % (hostname, e.db_password))
    return secs


def ctl(e, *args, input=None):
    opts = ["-i"] if input is not None else []
    return run("podman", "exec", *opts, e.deb_host, "env",
               "PGPASSFILE=/etc/pgmail/pgpass", "pgmailctl", *args, input=input)


def deb_enable(e):
    return dexec(e, "systemctl", "enable", "--now", *["pgmail-%s.socket" % u for u in e.ports],
                 "pgmail-relay.service")


def deb_mail(e, marker):
    """A message to alice on port 25; returns (greeting, what POP3 holds for alice)."""
    s = smtplib.SMTP(local_hostname="client.example", timeout=30)
    code, banner = s.connect("127.0.0.1", e.ports["smtp"])
    s.sendmail("sender@remote.example", ["alice@example.test"],
               ("Subject: %s\r\n\r\n%s\r\n" % (marker, marker)).encode())
    s.quit()
    p = pop3(e, "alice@example.test")
    got = [b"\r\n".join(p.retr(i + 1)[1]) for i in range(p.stat()[0])]
    p.quit()
    return banner.decode(errors="replace"), got


def check_package(e):
    """README.Debian on a Debian 12 system with systemd and without pgmail (the image's first
    stage), against the database container: apt install ./pgmail_*.deb (dependencies from
    apt), nothing enabled or listening, configure, migrate, enable, a mail in and out;
    apt purge: the configuration goes, the database stays. Then the previous build of the
    package with mail in its database, upgraded to this one: the mail kept, migrate applies
    exactly the migrations the previous package lacked.

    The database container lets role pgmail in without a password (trust) for this part:
    in a container without CAP_SYS_ADMIN systemd hands the pgpass credential over with
    group bits, which libpq refuses (deploy/container/pgpass-private works around that in
    the image; this system is left as the package makes it)."""
    run("podman", "rm", "-f", "-t", "3", e.mail)  # the test ports are this system's now
    run("podman", "exec", "-u", "postgres", e.db, "sh", "-ec",
        "sed -i 's/^local   pgmail   pgmail .*/local pgmail pgmail trust/' \"$PGDATA/pg_hba.conf\"; "
        "psql -X -q -d postgres -c 'SELECT pg_reload_conf()'")
    fresh_database(e)
    run("podman", "run", "-d", "--name", e.deb_host, "--network=host", "--systemd=always",
        "-v", e.vol_run + ":/run/postgresql", e.system_image, "/sbin/init")
    state = wait_running(e.deb_host)
    check("package: a Debian 12 system without pgmail boots (systemd: %s)" % state,
          state in ("running", "degraded"), state)
    for unit in e.ports:
        run("podman", "cp", os.path.join(e.work, "dropins", "pgmail-%s.socket.d" % unit),
            e.deb_host + ":/etc/systemd/system/")
    for deb in (e.deb, e.deb_prev):
        run("podman", "cp", deb, e.deb_host + ":/root/")
    dexec(e, "apt-get", "update", "-qq")

    # --- A fresh installation.
    secs = deb_setup(e, e.deb, "deb.example.test")
    version = dexec(e, "dpkg-query", "-W", "-f", "${Version}", "pgmail").strip()
    listed = set(dexec(e, "dpkg-query", "-L", "pgmail").split())
    missing = [f for f in tree_files() if f not in listed]
    check("package: apt install ./%s (%.1f s, dependencies resolved by apt) installs the "
          "programs, units, migrations and manual pages" % (os.path.basename(e.deb), secs),
          version and not missing, "version %r, missing %s" % (version, missing))
    conffiles = dexec(e, "dpkg-query", "-W", "-f", "${Conffiles}", "pgmail")
    check("package: /etc/pgmail/pgmail.conf is a conffile", "/etc/pgmail/pgmail.conf " in conffiles,
          conffiles)
    # (list-unit-files exits 1 when nothing matches)
    active = dexec(e, "systemctl", "list-units", "--all", "--state=active", "--plain",
                   "--no-legend", "pgmail*", check_rc=False).strip()
    enabled = dexec(e, "systemctl", "list-unit-files", "--state=enabled", "--plain",
                    "--no-legend", "pgmail*", check_rc=False).strip()
    check("package: nothing enabled, nothing started or listening after installation",
          not active and not enabled, "active: %r, enabled: %r" % (active, enabled))
    out = ctl(e, "migrate")
    applied = re.findall(r"^applied (\S+)$", out, re.M)
    check("package: pgmailctl migrate applies every migration (%d)" % len(applied),
          applied == migrations_in_tree(), out.strip())
    ctl(e, "domain", "add", "example.test")
    ctl(e, "user", "add", "alice@example.test", input=e.users["alice@example.test"] + "\n")
    deb_enable(e)
    banner, got = deb_mail(e, "deb-fresh")
    check("package: sockets enabled, a mail in on port 25 and out over POP3 (greeting %s)"
          % (banner.split() or ["?"])[0],
          banner.startswith("deb.example.test ") and len(got) == 1 and got[0].endswith(
              b"\r\n\r\ndeb-fresh"), "%r, %d messages" % (banner, len(got)))
    t = time.time()
    dexec(e, "apt-get", "purge", "-y", "-qq", "pgmail")
    left = dexec(e, "sh", "-c", "ls -A /etc/pgmail 2>&1; systemctl list-unit-files --plain "
                 "--no-legend 'pgmail*'; systemctl list-units --plain --no-legend "
                 "--state=active 'pgmail*'", check_rc=False).strip()
    stored = e.dbsql("SELECT count(*) FROM messages")
    check("package: apt purge (%.1f s) removes /etc/pgmail and every unit, stops the sockets "
          "and leaves the database alone (%s messages)" % (time.time() - t, stored),
          left == "ls: cannot access '/etc/pgmail': No such file or directory"
          and stored == "1", left)

    # --- The previous build with mail, upgraded to this one.
    fresh_database(e)
    deb_setup(e, e.deb_prev, "prev.example.test")
    prev_version = dexec(e, "dpkg-query", "-W", "-f", "${Version}", "pgmail").strip()
    prev_migrations = dexec(e, "ls", "/usr/share/pgmail/migrations").split()
    out = ctl(e, "migrate")
    ctl(e, "domain", "add", "example.test")
    ctl(e, "user", "add", "alice@example.test", input=e.users["alice@example.test"] + "\n")
    deb_enable(e)
    banner, before = deb_mail(e, "deb-prev")
    check("package: the previous build %s, migrated (%d), receives and serves mail"
          % (prev_version, len(re.findall(r"^applied ", out, re.M))),
          banner.startswith("prev.example.test ") and len(before) == 1, "%r, %d" % (banner, len(before)))
    t = time.time()
    deb_setup(e, e.deb, "ignored.example.test")  # the conffile keeps its edit: no #hostname line
    now = dexec(e, "dpkg-query", "-W", "-f", "${Version}", "pgmail").strip()
    units = ["pgmail-%s.socket" % u for u in e.ports] + ["pgmail-relay.service"]
    enabled = dexec(e, "systemctl", "is-enabled", *units, check_rc=False).split()
    active = dexec(e, "systemctl", "is-active", *units, check_rc=False).split()
    check("package: upgrade %s -> %s with apt install (%.1f s): the sockets and the relay stay "
          "enabled and running through it" % (prev_version, now, time.time() - t),
          now == version and enabled == ["enabled"] * len(units)
          and active == ["active"] * len(units), "%s, %s, %s" % (now, enabled, active))
    out = ctl(e, "migrate")
    applied = re.findall(r"^applied (\S+)$", out, re.M)
    expected = [m for m in migrations_in_tree() if m not in prev_migrations]
    recorded = e.dbsql("SELECT count(*) FROM pgmail_migrations")
    check("package: migrate after the upgrade applies only what %s lacked (%s)"
          % (prev_version, ", ".join(expected) or "nothing new"),
          applied == expected and (out.strip() == "up to date") == (not expected)
          and recorded == str(len(migrations_in_tree())),
          "%s; %s recorded" % (out.strip(), recorded))
    dexec(e, "systemctl", "try-restart", "pgmail-relay.service")
    banner, after = deb_mail(e, "deb-upgraded")
    relay = dexec(e, "systemctl", "is-active", "pgmail-relay.service", check_rc=False).strip()
    check("package: after the upgrade the mail is kept byte for byte and new mail arrives "
          "(pgmail.conf's edit kept, relay %s)" % relay,
          len(after) == 2 and after[0] == before[0] and after[1].endswith(b"deb-upgraded")
          and banner.startswith("prev.example.test ") and relay == "active",
          "%r, %d messages" % (banner, len(after)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--db-image", required=True)
    ap.add_argument("--port-base", type=int, default=20000)
    ap.add_argument("--system-image", required=True)
    ap.add_argument("--deb", required=True)
    ap.add_argument("--deb-prev", required=True)
    e = Env(ap.parse_args())
    t_start = time.time()
    try:
        write_files(e)
        run("podman", "secret", "create", e.secret_pgpass, os.path.join(e.work, "pgpass"))
        run("podman", "volume", "create", e.vol_data)
        run("podman", "volume", "create", e.vol_run)
        if not check("database container up (PostgreSQL on its Unix socket, no network)",
                     start_db(e)):
            raise RuntimeError("no database")
        state, secs = create_mail(e)
        check_boot(e, state, secs)
        if state not in ("running", "degraded"):
            raise RuntimeError("the pgmail container did not boot")
        received_id = ""
        for step in (check_admin, check_relay, check_smtp_delivery, check_pop3_exact,
                     check_pooler, check_auth, check_outbound, check_in_use, check_per_source,
                     check_hardening, check_tls, check_journal, check_burst, check_restart,
                     check_save_load, check_package):
            t = time.time()
            if step is check_journal:
                step(e, received_id)
            elif step is check_pop3_exact:
                received_id = step(e)[1]
            else:
                step(e)
            TIMES.append((step.__name__[6:], time.time() - t))
    except Exception as err:  # a broken step fails the run, and says where
        check("no unexpected error", False, "%s: %s" % (type(err).__name__, err))
        try:
            print("--- journal of %s (last 40 lines)" % e.mail)
            print(e.mexec("journalctl", "--no-pager", "-n", "40", check_rc=False))
        except Exception:
            pass
    finally:
        stop_helpers(e)
    print("\nsystem test: %d checks in %.0f s" % (len(PASSED) + len(FAILED), time.time() - t_start))
    print("  seconds per step: " + ", ".join("%s %.1f" % t for t in TIMES))
    for n in NOTES:
        print("  note: " + n)
    for f in FAILED:
        print("  FAILED: " + f)
    with open(os.path.join(e.work, "result"), "w") as f:
        f.write("%d %d\n" % (len(PASSED), len(FAILED)))
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
