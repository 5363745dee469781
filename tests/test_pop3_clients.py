"""pop3_clients: real POP3 clients (Python's poplib, curl, fetchmail) against pgmail-pop3d
behind systemd-socket-activate on 127.0.0.1, and SMTP -> POP3 round trips: a message sent
with smtplib to pgmail-smtpd comes back from RETR byte for byte as stored (Return-Path:,
Received:, then the original), including lines starting with '.', 8-bit text and a 2 MiB
body.
"""

import os
import poplib
import random
import shutil
import smtplib
import subprocess
import tempfile

import harness
from harness import PASSWORDS, crlf, plain_blob
from pop3lib import SENDER, deliver, expect_ok, pop3_tcp, session, stat, stored_bodies

ALICE = "alice@example.test"
BOB = "bob@example.test"


def pop(port):
    return poplib.POP3("127.0.0.1", port, timeout=20)


def poplib_message(p, n):
    """RETR n through poplib, its lines joined back with CRLF (poplib unstuffs dots)."""
    resp, lines, octets = p.retr(n)
    assert resp.startswith(b"+OK"), resp
    return b"".join(ln + b"\r\n" for ln in lines)


def smtp_send(ctx, rcpts, message, eight_bit=False):
    """Send with smtplib through pgmail-smtpd on TCP; returns the stored body."""
    before = len(ctx.messages())
    with ctx.tcp() as srv, smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example",
                                        timeout=60) as s:
        opts = ["BODY=8BITMIME"] if eight_bit else []
        refused = s.sendmail(SENDER, rcpts, message, mail_options=opts)
        assert refused == {}, refused
    msgs = ctx.messages()
    assert len(msgs) == before + 1, f"SMTP stored {len(msgs) - before} messages, expected 1"
    harness.check_stored(msgs[-1].body, SENDER, message, "client.example")
    return msgs[-1].body


# -- poplib ---------------------------------------------------------------------------------

def test_poplib_user_pass_stat_list_uidl_top_retr_dele_quit(ctx):
    for i in range(3):
        deliver(ctx, SENDER, [ALICE], crlf(f"Subject: poplib {i}\n\nbody {i}\n.dot {i}\n"))
    stored = stored_bodies(ctx, ALICE)
    with pop3_tcp(ctx) as srv:
        p = pop(srv.port)
        caps = p.capa()
        for c in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL",
                  "IMPLEMENTATION"):
            assert c in caps, f"poplib capa() lacks {c}: {caps}"
        assert "PLAIN" in caps["SASL"], caps
        p.user(ALICE)
        p.pass_(PASSWORDS[ALICE])
        assert p.stat() == (3, sum(map(len, stored))), p.stat()
        resp, lines, _ = p.list()
        assert lines == [f"{i + 1} {len(b)}".encode() for i, b in enumerate(stored)], lines
        resp, uids, _ = p.uidl()
        assert len({u.split()[1] for u in uids}) == 3, uids
        assert p.uidl(2).split()[1:] == uids[1].split(), (p.uidl(2), uids)
        for n in (1, 2, 3):
            assert poplib_message(p, n) == stored[n - 1], f"poplib RETR {n} differs"
        resp, lines, _ = p.top(1, 0)
        header = stored[0][:stored[0].index(b"\r\n\r\n") + 4]
        assert b"".join(x + b"\r\n" for x in lines) == header, f"poplib top(1, 0): {lines}"
        p.dele(2)
        try:
            p.retr(2)
        except poplib.error_proto as e:
            assert "message 2 already deleted" in str(e).lower(), e
        else:
            raise AssertionError("RETR of a deleted message succeeded")
        assert p.noop().startswith(b"+OK")
        resp = p.quit()
        assert resp.startswith(b"+OK"), resp
    assert stored_bodies(ctx, ALICE) == [stored[0], stored[2]]


def test_poplib_wrong_password_gets_auth_response_code(ctx):
    with pop3_tcp(ctx) as srv:
        p = pop(srv.port)
        p.user(ALICE)
        try:
            p.pass_("not-her-password")
        except poplib.error_proto as e:
            assert str(e).startswith("b'-ERR [AUTH]"), e
        else:
            raise AssertionError("login with a wrong password succeeded")
        p.quit()


def test_poplib_auth_plain_and_second_login_in_use(ctx):
    deliver(ctx, SENDER, [ALICE], crlf("Subject: x\n\nx\n"))
    with pop3_tcp(ctx) as srv:
        p1 = pop(srv.port)
        resp = p1._shortcmd("AUTH PLAIN " + plain_blob(ALICE, PASSWORDS[ALICE]))
        assert resp.startswith(b"+OK"), resp
        p2 = pop(srv.port)
        p2.user(ALICE)
        try:
            p2.pass_(PASSWORDS[ALICE])
        except poplib.error_proto as e:
            assert str(e).startswith("b'-ERR [IN-USE]"), e
        else:
            raise AssertionError("a second concurrent login to the same mailbox succeeded")
        p2.quit()
        assert p1.stat()[0] == 1
        p1.quit()


# -- curl ----------------------------------------------------------------------------------------

def curl(port, path="", *args, user=ALICE, password=None):
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "-u", f"{user}:{password or PASSWORDS[user]}",
                        f"pop3://127.0.0.1:{port}/{path}", *args], capture_output=True,
                       timeout=60)
    return r


def test_curl_retr_message_1_byte_exact(ctx):
    original = crlf("Subject: curl\n\n.starts with a dot\n..two dots\n.\nend\n")
    deliver(ctx, SENDER, [ALICE], original)
    deliver(ctx, SENDER, [ALICE], crlf("Subject: second\n\nsecond\n"))
    stored = stored_bodies(ctx, ALICE)
    with pop3_tcp(ctx) as srv:
        r = curl(srv.port, "1")
        assert r.returncode == 0, f"curl exited {r.returncode}: {r.stderr.decode()[-300:]}"
        assert r.stdout == stored[0], f"curl got {r.stdout!r}, stored {stored[0]!r}"
        r = curl(srv.port, "2", "--sasl-ir")  # AUTH PLAIN with an initial response
        assert r.returncode == 0 and r.stdout == stored[1], (r.returncode, r.stdout[:200])
    assert ctx.mailbox_count(ALICE) == 2, "RETR removed mail"


def test_curl_list_uidl_top_and_dele_request(ctx):
    for i in range(2):
        deliver(ctx, SENDER, [ALICE], crlf(f"Subject: curl {i}\n\nbody {i}\n"))
    stored = stored_bodies(ctx, ALICE)
    with pop3_tcp(ctx) as srv:
        r = curl(srv.port)
        assert r.returncode == 0 and r.stdout == (
            f"1 {len(stored[0])}\r\n2 {len(stored[1])}\r\n".encode()), r
        r = curl(srv.port, "", "--request", "UIDL")
        assert r.returncode == 0 and len(r.stdout.split(b"\r\n")) == 3, r
        r = curl(srv.port, "", "--request", "TOP 2 0")
        assert r.returncode == 0, r
        assert r.stdout == stored[1][:stored[1].index(b"\r\n\r\n") + 4], r.stdout
        r = curl(srv.port, "", "--request", "DELE 1", "-I")
        assert r.returncode == 0, f"curl DELE exited {r.returncode}: {r.stderr.decode()[-300:]}"
    assert stored_bodies(ctx, ALICE) == [stored[1]], "curl's DELE 1 + QUIT did not remove message 1"


def test_curl_wrong_password_login_denied(ctx):
    with pop3_tcp(ctx) as srv:
        r = curl(srv.port, "", password="wrong")
        assert r.returncode == 67, f"curl exit {r.returncode} (67 = login denied): {r.stderr!r}"


# -- fetchmail ---------------------------------------------------------------------------------

def test_fetchmail_keep_twice_fetches_once_then_flush_empties_mailbox(ctx):
    for i in range(2):
        deliver(ctx, SENDER, [ALICE], crlf(f"Subject: fetchmail {i}\n\n.dot {i}\nbody {i}\n"))
    stored = stored_bodies(ctx, ALICE)
    d = tempfile.mkdtemp(prefix="fetchmail-", dir=ctx.tmp)
    out = os.path.join(d, "out")
    os.mkdir(out)
    mda = os.path.join(d, "mda.sh")
    with open(mda, "w") as f:
        f.write('#!/bin/sh\n# one file per message\nexec cat > "$(mktemp "$1/msg.XXXXXX")"\n')
    os.chmod(mda, 0o755)

    def got():
        res = []
        for fn in sorted(os.listdir(out)):
            with open(os.path.join(out, fn), "rb") as f:
                res.append(f.read())
        return sorted(res)

    def lf(b):  # fetchmail hands the MDA LF line ends
        return b.replace(b"\r\n", b"\n")

    try:
        with pop3_tcp(ctx) as srv:
            rc = os.path.join(d, "fetchmailrc")
            with open(rc, "w") as f:
                f.write(f'set no syslog\nset invisible\nset idfile "{d}/idfile"\n'
                        f"poll 127.0.0.1 with proto POP3 port {srv.port} uidl\n"
                        f'  user "{ALICE}" there with password "{PASSWORDS[ALICE]}"\n'
                        f'  sslproto "" mda "{mda} {out}"\n')
            os.chmod(rc, 0o600)
            env = dict(os.environ, FETCHMAILHOME=d, HOME=d)

            def fetch(*args):
                r = subprocess.run(["fetchmail", "-f", rc, "--nodetach", "-v", *args],
                                   capture_output=True, env=env, timeout=60)
                return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")

            code, log = fetch("--keep")
            assert code == 0, f"first fetchmail --keep exited {code}:\n{log[-1500:]}"
            assert got() == sorted(map(lf, stored)), f"fetched {got()}, stored {stored}"
            code, log = fetch("--keep")
            assert code == 1, f"second fetchmail --keep exited {code} (1 = no new mail):" \
                              f"\n{log[-1500:]}"
            assert len(got()) == 2, f"second run fetched again: {len(got())} files"
            assert ctx.mailbox_count(ALICE) == 2, "--keep runs removed mail"
            deliver(ctx, SENDER, [ALICE], crlf("Subject: fetchmail new\n\nnew\n"))
            new = stored_bodies(ctx, ALICE)[2]
            code, log = fetch("--flush")
            assert code == 0, f"fetchmail --flush exited {code}:\n{log[-1500:]}"
            assert got() == sorted(map(lf, stored + [new])), "third run: wrong messages"
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert ctx.mailbox_count(ALICE) == 0, "fetchmail without --keep left mail in the mailbox"
    assert ctx.message_count() == 0 and ctx.used_bytes(ALICE) == 0


# -- SMTP -> POP3 round trips ----------------------------------------------------------------

def _roundtrip(ctx, message, eight_bit=False):
    stored = smtp_send(ctx, [ALICE], message, eight_bit)
    with pop3_tcp(ctx) as srv:
        p = pop(srv.port)
        p.user(ALICE)
        p.pass_(PASSWORDS[ALICE])
        assert poplib_message(p, 1) == stored, "poplib RETR differs from the stored message"
        p.quit()
        with session(srv.port) as c:
            n, size = stat(c)
            assert (n, size) == (1, len(stored)), (n, size, len(stored))
            st, body = c.retr(1)
            expect_ok(st, "RETR 1")
            assert body == stored, "raw RETR differs from the stored message"
            expect_ok(c.cmd("QUIT"), "QUIT")
    harness.check_stored(body, SENDER, message, "client.example")


def test_roundtrip_smtp_to_pop3_lines_starting_with_dot(ctx):
    _roundtrip(ctx, crlf("Subject: dots\n\n.\n..\n...\n.leading\n..double\nx.\n . space\n"
                         ".\nlast\n"))


def test_roundtrip_smtp_to_pop3_8bit_text(ctx):
    text = ("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\nGrüße aus Köln – naïve café ☕ 日本語\n"
            "Latin-1 byte: ").encode() + b"\xe9\xff\x80 raw\n"
    _roundtrip(ctx, crlf(text), eight_bit=True)


def test_roundtrip_smtp_to_pop3_2mib_body(ctx):
    rnd = random.Random(1939)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .,-"
    lines = [b"Subject: two MiB", b"From: sender@remote.example", b""]
    total = 0
    while total < 2 * 1024 * 1024:
        n = rnd.choice([0, 1, 5, 72, 76, 200, 998])
        line = bytes(rnd.choice(alphabet) for _ in range(n))
        if rnd.random() < 0.05:
            line = b"." + line[1:]
        lines.append(line)
        total += len(line) + 2
    _roundtrip(ctx, b"\r\n".join(lines) + b"\r\n")
