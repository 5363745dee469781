"""tls_resume: TLS session resumption across handler processes (issue 15, part 5), and
`pgmailctl tls rotate-ticket-keys`.

Every connection is a new handler process; with tls_ticket_keys naming a key file
(shared/tickets.h) every process issues and accepts the same tickets. A real client,
`openssl s_client`, saves its session (-sess_out) from one connection and offers it
(-sess_in) on the next, which a new process serves: s_client must report "Reused, TLSv1.x"
and the handler log resumed=yes, for SMTP STARTTLS, implicit TLS (the 465 unit's setting),
POP3 STLS and implicit TLS (995), in TLS 1.2 and 1.3. After one rotation the previous key
still resumes; after two (the key is gone) the client gets a full handshake that succeeds,
as it does under an unknown key (another host's file). A key file others can read is
refused: no tickets, logged, TLS unharmed. Without tls_ticket_keys nothing resumes (as
before).

The rotate command: 0600 whatever the umask, one key first, then the current one kept as
the previous (the older one dropped), replaced by rename (a new inode, no file left beside
it), the keys of a file others could read not kept (with a warning), something that is not
a key file left alone (exit 1), and no database needed.
"""

import os
import re
import stat
import subprocess

from tlslib import cert, pop3_server, smtp_server

HELO = "client.example"
SMTP_LINES = [f"EHLO {HELO}", "QUIT"]
POP3_LINES = ["CAPA", "QUIT"]
VERSIONS = ("tls1_2", "tls1_3")
NAMES = {"tls1_2": "TLSv1.2", "tls1_3": "TLSv1.3"}


def keyfile(ctx, name="ticket-keys"):
    """A fresh key file made by pgmailctl (one key) in ctx.tmp."""
    path = os.path.join(ctx.tmp, name)
    if os.path.exists(path):
        os.unlink(path)
    ctx.ctl("tls", "rotate-ticket-keys", path)
    return path


def rotate(ctx, path):
    return ctx.ctl("tls", "rotate-ticket-keys", path)


def s_client(ctx, port, version, starttls, lines, sess_out=None, sess_in=None):
    """One openssl s_client session; returns ("New" or "Reused", protocol, whole output).
    -ign_eof keeps it reading after stdin ends, until the server closes after QUIT: the
    TLS 1.3 ticket, sent after the handshake, is then read and saved."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}",
           "-CAfile", cert(ctx)[0], "-verify_return_error", "-servername", "mx.example.test",
           "-ign_eof", "-crlf"]
    if starttls:
        cmd += ["-starttls", starttls]
    if sess_out:
        cmd += ["-sess_out", sess_out]
    if sess_in:
        cmd += ["-sess_in", sess_in]
    r = subprocess.run(cmd, input="".join(ln + "\n" for ln in lines).encode(),
                       capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, f"s_client exited {r.returncode}:\n{out[-1500:]}"
    m = re.search(r"^(New|Reused), (TLSv1\.[23]), Cipher is ", out, re.M)
    assert m, f"no 'New/Reused, TLSv1.x' line from s_client:\n{out[-1500:]}"
    return m.group(1), m.group(2), out


def session_works(out, protocol):
    """The session ran under TLS to its end: EHLO / CAPA and QUIT answered."""
    wants = [r"^250[ -]", r"^221 "] if protocol == "smtp" else [r"^USER\r?$", r"^\+OK"]
    for want in wants:
        assert re.search(want, out, re.M), f"no {want!r} from the server:\n{out[-1500:]}"


def never_resumed(ctx, srv, tag):
    """Two connections per version, the second offering the first's session: neither
    resumes. A server that issues no ticket (and keeps no cache) may leave s_client nothing
    to save at all, which is the same answer."""
    for v in VERSIONS:
        sess = os.path.join(ctx.tmp, f"sess-{tag}-{v}")
        _, _, out = s_client(ctx, srv.port, v, "smtp", SMTP_LINES, sess_out=sess)
        session_works(out, "smtp")
        if not os.path.exists(sess):
            continue
        kind, _, out = s_client(ctx, srv.port, v, "smtp", SMTP_LINES, sess_in=sess)
        assert kind == "New", f"{v}: resumed ({tag})"
        session_works(out, "smtp")
    assert srv.wait_handlers(10)
    flags = resumed_flags(srv)
    assert flags and set(flags) == {"no"}, srv.log()[-2000:]


def resumed_flags(srv):
    """resumed=yes/no of every event=tls line of the server log, in order."""
    return re.findall(r"\bevent=tls\b.*\bresumed=(yes|no)\b", srv.log())


def check_resumes(ctx, srv, starttls, lines, protocol):
    for v in VERSIONS:
        sess = os.path.join(ctx.tmp, f"sess-{protocol}-{starttls}-{v}")
        kind, proto, out = s_client(ctx, srv.port, v, starttls, lines, sess_out=sess)
        assert (kind, proto) == ("New", NAMES[v]), (kind, proto)
        session_works(out, protocol)
        kind, proto, out = s_client(ctx, srv.port, v, starttls, lines, sess_in=sess)
        assert (kind, proto) == ("Reused", NAMES[v]), (
            f"{protocol} {starttls or 'implicit'} {v}: second connection {kind}:\n{out[-1500:]}")
        session_works(out, protocol)
    assert srv.wait_handlers(10)
    pids = srv.pids()
    assert len(pids) == 4 and len(set(pids)) == 4, f"not one process per connection: {pids}"
    assert resumed_flags(srv) == ["no", "yes", "no", "yes"], srv.log()[-2000:]


# -- resumption on each port ------------------------------------------------------------------

def test_smtp_starttls_resumes_in_a_new_process(ctx):
    with smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": keyfile(ctx)}) as srv:
        check_resumes(ctx, srv, "smtp", SMTP_LINES, "smtp")


def test_smtp_implicit_tls_resumes_in_a_new_process(ctx):
    env = {"PGMAIL_TLS_TICKET_KEYS": keyfile(ctx), "PGMAIL_TLS_IMPLICIT": "yes",
           "PGMAIL_REQUIRE_AUTH": "yes"}
    with smtp_server(ctx, env) as srv:
        check_resumes(ctx, srv, None, SMTP_LINES, "smtp")


def test_pop3_stls_resumes_in_a_new_process(ctx):
    with pop3_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": keyfile(ctx)}) as srv:
        check_resumes(ctx, srv, "pop3", POP3_LINES, "pop3")


def test_pop3_implicit_tls_resumes_in_a_new_process(ctx):
    env = {"PGMAIL_TLS_TICKET_KEYS": keyfile(ctx), "PGMAIL_TLS_IMPLICIT": "yes"}
    with pop3_server(ctx, env) as srv:
        check_resumes(ctx, srv, None, POP3_LINES, "pop3")


# -- rotation, expiry, other hosts ------------------------------------------------------------

def test_previous_key_resumes_expired_key_full_handshake(ctx):
    keys = keyfile(ctx)
    with smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": keys}) as srv:
        for v in VERSIONS:
            sess = os.path.join(ctx.tmp, f"sess-rot-{v}")
            s_client(ctx, srv.port, v, "smtp", SMTP_LINES, sess_out=sess)
        rotate(ctx, keys)  # the ticket's key is now the previous one: still accepted
        for v in VERSIONS:
            sess = os.path.join(ctx.tmp, f"sess-rot-{v}")
            kind, _, out = s_client(ctx, srv.port, v, "smtp", SMTP_LINES, sess_in=sess)
            assert kind == "Reused", f"{v} after one rotation: {kind}\n{out[-1500:]}"
        rotate(ctx, keys)  # and now it is gone: a full handshake, and the session goes on
        for v in VERSIONS:
            sess = os.path.join(ctx.tmp, f"sess-rot-{v}")
            kind, proto, out = s_client(ctx, srv.port, v, "smtp", SMTP_LINES, sess_in=sess)
            assert (kind, proto) == ("New", NAMES[v]), f"{v} after two rotations: {kind}"
            session_works(out, "smtp")
        assert srv.wait_handlers(10)
    assert resumed_flags(srv) == ["no", "no", "yes", "yes", "no", "no"], srv.log()[-2000:]
    assert "tls-failed" not in srv.log() and "tls-tickets-off" not in srv.log()


def test_servers_sharing_the_file_resume_each_others_sessions(ctx):
    # Two servers, as two handler hosts with a copy of one file; a third with its own file
    # (another installation) cannot open the ticket and does a full handshake.
    keys = keyfile(ctx)
    copy = os.path.join(ctx.tmp, "ticket-keys-copy")
    with open(keys, "rb") as f, open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                                     "wb") as g:
        g.write(f.read())
    other = keyfile(ctx, "ticket-keys-other")
    with smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": keys}) as a, \
            smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": copy}) as b, \
            smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": other}) as c:
        for v in VERSIONS:
            sess = os.path.join(ctx.tmp, f"sess-share-{v}")
            s_client(ctx, a.port, v, "smtp", SMTP_LINES, sess_out=sess)
            kind, _, _ = s_client(ctx, b.port, v, "smtp", SMTP_LINES, sess_in=sess)
            assert kind == "Reused", f"{v}: the second host did not resume"
            kind, _, out = s_client(ctx, c.port, v, "smtp", SMTP_LINES, sess_in=sess)
            assert kind == "New", f"{v}: a foreign key file resumed"
            session_works(out, "smtp")


def test_key_file_others_can_read_is_refused_tls_goes_on(ctx):
    keys = keyfile(ctx)
    os.chmod(keys, 0o644)
    with smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": keys}) as srv:
        never_resumed(ctx, srv, "unsafe")
    off = [ln for ln in srv.log().splitlines() if "event=tls-tickets-off" in ln]
    spawned = len(srv.pids())
    assert spawned >= 2 and len(off) == spawned and all("mode 0644" in ln for ln in off), (
        srv.log()[-2000:])


def test_no_ticket_keys_no_resumption(ctx):
    with smtp_server(ctx, {"PGMAIL_TLS_TICKET_KEYS": None}) as srv:
        never_resumed(ctx, srv, "none")
    assert "tls-tickets-off" not in srv.log(), "an unset tls_ticket_keys is no problem to log"


# -- pgmailctl tls rotate-ticket-keys ---------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_rotate_permissions_atomic_replace_current_becomes_previous(ctx):
    d = os.path.join(ctx.tmp, "rot")
    os.makedirs(d)
    path = os.path.join(d, "keys")
    env = ctx.env({"PGMAIL_DATABASE": "host=/nonexistent dbname=none"})  # no database needed
    for i in range(3):
        r = subprocess.run([ctx.ctl_bin, "tls", "rotate-ticket-keys", path], env=env,
                           capture_output=True, timeout=30, preexec_fn=lambda: os.umask(0))
        if ctx.san:
            ctx.check_san(r.stderr, "pgmailctl tls rotate-ticket-keys")
        assert r.returncode == 0, r.stderr
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert os.listdir(d) == ["keys"], f"left beside the key file: {os.listdir(d)}"
        data = read(path)
        if i == 0:
            assert len(data) == 80, len(data)
            assert b"no previous key" in r.stdout, r.stdout
        else:
            assert len(data) == 160, len(data)
            assert data[80:] == prev[:80], "the current key did not become the previous one"
            assert data[:80] not in (prev[:80], prev[80:]), "no new current key"
            assert st.st_ino != prev_ino, "replaced in place, not by rename"
        if i == 2:
            assert first[:80] not in data, "a key older than the previous one was kept"
        if i == 0:
            first = data
        prev, prev_ino = data, st.st_ino


def test_rotate_drops_keys_others_could_read_and_keeps_non_key_files(ctx):
    path = os.path.join(ctx.tmp, "keys-unsafe")
    ctx.ctl("tls", "rotate-ticket-keys", path)
    old = read(path)
    os.chmod(path, 0o640)
    r = ctx.ctl("tls", "rotate-ticket-keys", path)
    assert b"warning" in r.err and b"not kept" in r.err and b"0640" in r.err, r.err
    data = read(path)
    assert len(data) == 80 and old[:80] not in data, "keys others could read were carried over"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    other = os.path.join(ctx.tmp, "not-keys")
    with open(os.open(other, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("hostname = mx.example.test\n")
    r = ctx.ctl("tls", "rotate-ticket-keys", other, check=False)
    assert r.rc == 1 and b"not replaced" in r.err, (r.rc, r.err)
    assert read(other) == b"hostname = mx.example.test\n"


def test_rotate_file_from_configuration(ctx):
    path = os.path.join(ctx.tmp, "keys-conf")
    r = ctx.ctl("tls", "rotate-ticket-keys", env={"PGMAIL_TLS_TICKET_KEYS": ""}, check=False)
    assert r.rc == 1 and b"tls_ticket_keys" in r.err, r.err
    ctx.ctl("tls", "rotate-ticket-keys", env={"PGMAIL_TLS_TICKET_KEYS": path})
    assert len(read(path)) == 80
