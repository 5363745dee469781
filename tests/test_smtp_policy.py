"""smtp_policy: who may send what to whom, and every limit, over TCP (systemd-socket-activate)
with a raw SMTP client, so that each exact reply and what got stored can be checked.
"""

import base64
import os
import subprocess
import time

from harness import (PASSWORDS, CAROL_QUOTA, Client, crlf, dot_stuff, expect, plain_blob,
                     send_mail, session)
from tlslib import REMOTE, client_context, log_lines, smtp_server, starttls

SENDER = "sender@remote.example"
ALICE = "alice@example.test"


def small(subject="small", body="hello\n"):
    return crlf(f"From: {SENDER}\nSubject: {subject}\n\n{body}")


def sized(n, subject="sized"):
    """A CRLF message of exactly n bytes (n >= 100)."""
    head = crlf(f"Subject: {subject}\n\n")
    rem = n - len(head)
    body = b""
    while rem >= 80:
        body += b"x" * 76 + b"\r\n"
        rem -= 78
    msg = head + body + b"y" * (rem - 2) + b"\r\n"
    assert len(msg) == n, (len(msg), n)
    return msg


# -- recipients and relaying -------------------------------------------------------------

def test_unknown_local_user(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250 2.1.0", "MAIL")
        expect(c.cmd("RCPT TO:<nobody@example.test>"), "550 5.1.1", "RCPT unknown user")
        expect(c.cmd("RCPT TO:<nobody+tag@example.test>"), "550 5.1.1", "RCPT unknown+tag")
        expect(c.cmd("QUIT"), "221")
    assert ctx.message_count() == 0


def test_relay_denied_unauthenticated(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250", "MAIL")
        expect(c.cmd("RCPT TO:<x@elsewhere.invalid>"), "554 5.7.1", "RCPT to a foreign domain")
        expect(c.cmd("QUIT"), "221")


def test_relay_authenticated(ctx):
    # Submission: an authenticated sender reaches other domains (tests/test_smtp_outbound.py
    # covers the queue rows, the outbound limit and the open-relay forms).
    with ctx.tcp() as srv, session(srv.port, auth="alice@example.test") as c:
        expect(c.cmd("MAIL FROM:<alice@example.test>"), "250", "MAIL")
        expect(c.cmd("RCPT TO:<x@elsewhere.invalid>"), "250 2.1.5",
               "authenticated RCPT to a foreign domain")
        expect(c.cmd("QUIT"), "221")


def test_sender_login_match(ctx):
    with ctx.tcp() as srv, session(srv.port, auth="alice@example.test") as c:
        expect(c.cmd("MAIL FROM:<bob@example.test>"), "553 5.7.1", "alice as bob")
        expect(c.cmd("MAIL FROM:<alice@example.test>"), "250 2.1.0", "alice as herself")
        expect(c.cmd("QUIT"), "221")


def test_plus_addressing(ctx):
    msg = small("plus")
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(send_mail(c, SENDER, ["alice+tag@example.test"], msg), "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1 and msgs[0].recipients == ["alice@example.test"], msgs


def test_postmaster_deliverable(ctx):
    # RFC 5321 4.5.1: every domain must accept mail for postmaster (and <postmaster>).
    msg = small("to postmaster")
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(send_mail(c, SENDER, ["postmaster@example.test"], msg), "250 2.0.0",
               "final dot")
        expect(send_mail(c, SENDER, ["postmaster"], msg), "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 2, f"expected 2 stored messages, found {msgs}"
    for m in msgs:
        assert m.recipients, f"postmaster mail accepted but in no mailbox: {m}"


# -- limits ------------------------------------------------------------------------------

LIMIT = 4096  # PGMAIL_MESSAGE_SIZE_LIMIT for these tests (config minimum is 1024)


def test_size_limit_at_mail(ctx):
    with ctx.tcp({"PGMAIL_MESSAGE_SIZE_LIMIT": LIMIT}) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ")
        ehlo = expect(c.cmd("EHLO client.example"), "250", "EHLO")
        assert f"250-SIZE {LIMIT}" in ehlo.split("\n"), f"EHLO does not say SIZE {LIMIT}: {ehlo}"
        expect(c.cmd(f"MAIL FROM:<{SENDER}> SIZE={LIMIT + 1}"), "552 5.3.4", "SIZE over limit")
        expect(c.cmd(f"MAIL FROM:<{SENDER}> SIZE={LIMIT}"), "250", "SIZE at the limit")
        expect(c.cmd("QUIT"), "221")


def test_size_limit_after_data(ctx):
    with ctx.tcp({"PGMAIL_MESSAGE_SIZE_LIMIT": LIMIT}) as srv, session(srv.port) as c:
        r = send_mail(c, SENDER, ["bob@example.test"], sized(LIMIT + 2000))
        expect(r, "552 5.3.4", "message over the size limit")
        # the session goes on, and a small message still goes through
        expect(send_mail(c, SENDER, ["bob@example.test"], small()), "250 2.0.0", "small one")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1 and b"Subject: small" in msgs[0].body, msgs


def test_max_recipients(ctx):
    with ctx.tcp({"PGMAIL_MAX_RECIPIENTS": 3}) as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        for r in ("alice@example.test", "bob@example.test", "carol@example.test"):
            expect(c.cmd(f"RCPT TO:<{r}>"), "250", f"RCPT {r}")
        expect(c.cmd("RCPT TO:<alice+four@example.test>"), "452 4.5.3", "4th RCPT")
        expect(c.cmd("DATA"), "354")
        c.send(small() + b".\r\n")
        expect(c.reply(), "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    assert ctx.mailbox_count() == 3


def test_reply_names_the_stored_message(ctx):
    # "stored as N": N is the messages row, which records its accounts (alias and account
    # both named: one copy), and each mailbox row points at it.
    with ctx.tcp() as srv, session(srv.port) as c:
        r = send_mail(c, SENDER, ["info@example.test", "bob@example.test", "alice@example.test"],
                      small("named"))
        expect(r, "250 2.0.0 OK: message stored as ", "three recipients, two accounts")
        mid = int(r.split()[-1])
        expect(c.cmd("QUIT"), "221")
    rows = ctx.psql(f"SELECT a.address FROM messages m, accounts a"
                    f" WHERE m.id = {mid} AND a.id = ANY (m.deliver_to) ORDER BY 1").split()
    assert rows == ["alice@example.test", "bob@example.test"], rows
    [msg] = ctx.messages()
    assert msg.id == mid and sorted(msg.recipients) == rows, msg


def test_quota_at_rcpt_with_size(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}> SIZE={CAROL_QUOTA * 2}"), "250", "MAIL SIZE=")
        expect(c.cmd("RCPT TO:<carol@example.test>"), "452 4.2.2", "carol over quota")
        expect(c.cmd("RCPT TO:<bob@example.test>"), "250", "bob has no quota")
        expect(c.cmd("QUIT"), "221")


def test_quota_after_data(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        r = send_mail(c, SENDER, ["carol@example.test"], sized(CAROL_QUOTA + 2000))
        expect(r, "552 5.2.2", "message over carol's quota")
        expect(c.cmd("QUIT"), "221")
    assert ctx.message_count() == 0, ctx.messages()
    assert ctx.used_bytes("carol@example.test") == 0


def test_quota_fills_up(ctx):
    # 6000 bytes fit in 10000; a second 6000 do not; used_bytes counts what is stored.
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(send_mail(c, SENDER, ["carol@example.test"], sized(6000, "one")), "250 2.0.0")
        used = ctx.used_bytes("carol@example.test")
        stored = int(ctx.psql("SELECT sum(size) FROM mailbox").strip())
        assert used == stored and used >= 6000, f"used_bytes {used}, stored {stored}"
        expect(send_mail(c, SENDER, ["carol@example.test"], sized(6000, "two")), "552 5.2.2")
        expect(c.cmd(f"MAIL FROM:<{SENDER}> SIZE=6000"), "250")
        expect(c.cmd("RCPT TO:<carol@example.test>"), "452 4.2.2", "SIZE over what is left")
        expect(c.cmd("QUIT"), "221")
    assert ctx.message_count() == 1


def test_quota_race(ctx):
    # Four sessions at once, each past RCPT for carol with 6000 bytes (no SIZE=), end their
    # data together: only one fits in her 10000-byte quota; the others are refused (552
    # 5.2.2, or a temporary 4xx), and used_bytes is what her mailbox holds.
    msg = dot_stuff(sized(6000, "race")) + b".\r\n"
    with ctx.tcp() as srv:
        clients = [session(srv.port, timeout=20) for _ in range(4)]
        try:
            for c in clients:
                expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
                expect(c.cmd("RCPT TO:<carol@example.test>"), "250")
                expect(c.cmd("DATA"), "354")
            for c in clients:
                c.send(msg[:-5])
            for c in clients:
                c.send(msg[-5:])
            replies = [c.reply() for c in clients]
        finally:
            for c in clients:
                c.close()
    ok = [r for r in replies if r.startswith("250")]
    assert len(ok) == 1, f"{len(ok)} of 4 accepted: {replies}"
    for r in replies:
        assert r.startswith(("250", "552 5.2.2", "4")), f"unexpected reply {r!r}"
    used = ctx.used_bytes("carol@example.test")
    stored = int(ctx.psql("SELECT coalesce(sum(size), 0) FROM mailbox").strip())
    assert used == stored and used <= CAROL_QUOTA, f"used_bytes {used}, stored {stored}"


def test_concurrent_sessions(ctx):
    # 20 sessions at once, each with its own message: all stored, none mixed up.
    import smtplib
    import threading
    errors = []

    def one(i):
        try:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
                s.sendmail(f"s{i}@remote.example", ["bob@example.test"],
                           crlf(f"Subject: {i}\n\nmessage {i}\n" + f"{i}" * (i * 500) + "\n"))
        except Exception as e:  # collected, reported below
            errors.append(f"{i}: {e!r}")

    with ctx.tcp() as srv:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
    msgs = ctx.messages()
    assert len(msgs) == 20, f"{len(msgs)} stored"
    for m in msgs:
        i = int(m.sender[1:].split("@")[0])
        want = crlf(f"Subject: {i}\n\nmessage {i}\n" + f"{i}" * (i * 500) + "\n")
        assert m.body.endswith(b"\r\n" + want), f"message from {m.sender} is not its own"
    assert len({m.session_id for m in msgs}) == 20, "session ids are not unique"


def test_command_line_too_long(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd("NOOP " + "x" * 3000), "500 5.5.2", "3005-octet command line")
        expect(c.cmd(f"MAIL FROM:<{SENDER}> " + "X" * 2100), "500 5.5.2", "long MAIL line")
        expect(c.cmd("NOOP"), "250", "in step after long lines")
        expect(c.cmd("QUIT"), "221")


def test_idle_timeout(ctx):
    with ctx.tcp({"PGMAIL_SMTP_TIMEOUT": 2}) as srv, session(srv.port) as c:
        t0 = time.monotonic()
        r = c.reply()
        took = time.monotonic() - t0
        expect(r, "421 4.4.2", "after idling")
        assert 1.5 <= took <= 6, f"421 came after {took:.1f}s with a 2s timeout"
        assert c.closed(), "connection still open after 421"


def test_idle_timeout_in_data(ctx):
    with ctx.tcp({"PGMAIL_SMTP_TIMEOUT": 2}) as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd("RCPT TO:<bob@example.test>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(b"Subject: half\r\n\r\nhalf a message\r\n")
        expect(c.reply(), "421 4.4.2", "idle inside DATA")
        assert c.closed(), "connection still open after 421"
        assert srv.wait_handlers(10), "handler still running after the 421"
        ends = log_lines(srv, "disconnect")
    assert ctx.message_count() == 0
    # It was logged "reason=quit" (issue 12, point 16): a timeout is a timeout.
    assert len(ends) == 1 and "reason=timeout" in ends[0], ends


def test_error_tarpit(ctx):
    # shared/mail_limits.h: from LIM_ERRORS_SOFT (10) errors on, each reply waits
    # error_delay_ms; the LIM_ERRORS_HARD-th (20th) error is answered and then the session
    # ends with 421. One command at a time, so that each reply is flushed before the next
    # read and its delay can be seen (a lower bound: the delay is the behaviour).
    delay = 0.2
    with ctx.tcp({"PGMAIL_ERROR_DELAY_MS": int(delay * 1000)}) as srv, \
            Client(srv.port, timeout=15) as c:
        expect(c.reply(), "220 ")
        took = []
        for n in range(1, 21):
            t0 = time.monotonic()
            expect(c.cmd("XYZZY"), "500 5.5.1", f"error {n}")
            took.append(time.monotonic() - t0)
        expect(c.reply(), "421 4.7.0", "after the 20th error")
        assert c.closed(), "connection still open after 421"
    slow = [f"{t:.3f}" for t in took[10:] if t < delay * 0.95]
    assert not slow, f"replies after the 10th error came after {slow}s, not {delay}s"


# -- what the session offers, and in which order ----------------------------------------

def test_help_lists_what_the_session_offers(ctx):
    # HELP listed STARTTLS without a certificate (issue 12, point 16); it names what this
    # session offers now: STARTTLS with a certificate until TLS is on, AUTH where a password
    # may be sent (a remote peer: only over TLS).
    every = "EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
    with ctx.tcp(REMOTE) as srv, session(srv.port) as c:
        assert c.cmd("HELP") == f"214 2.0.0 {every}", "remote, no certificate"
        expect(c.cmd("STARTTLS"), "454 4.7.0", "STARTTLS without a certificate")
    with smtp_server(ctx, REMOTE) as srv, session(srv.port) as c:
        assert c.cmd("HELP") == f"214 2.0.0 {every} STARTTLS", "remote, with a certificate"
        expect(c.cmd("STARTTLS"), "220 2.0.0")
        starttls(c, client_context(ctx))
        assert c.cmd("HELP") == f"214 2.0.0 {every} AUTH", "over TLS"
        expect(c.cmd("STARTTLS"), "503 5.5.1", "STARTTLS twice")
        expect(c.cmd("EHLO client.example"), "250")
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0")
        assert c.cmd("HELP") == f"214 2.0.0 {every}", "authenticated over TLS"
        expect(c.cmd("QUIT"), "221")


def test_require_auth_checked_before_the_arguments(ctx):
    # The command table says MAIL needs AUTH when require_auth is set: 530 whatever follows.
    with ctx.tcp({"PGMAIL_REQUIRE_AUTH": "yes"}) as srv, session(srv.port) as c:
        expect(c.cmd("MAIL FROM:<bad"), "530 5.7.0", "bad path, not authenticated")
        expect(c.cmd(f"MAIL FROM:<{SENDER}> SIZE=999999999999"), "530 5.7.0", "too big")
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0")
        expect(c.cmd("MAIL FROM:<bad"), "501 5.1.7", "bad path once authenticated")
        expect(c.cmd("MAIL FROM:<alice@example.test>"), "250 2.1.0")
        expect(c.cmd(f"AUTH PLAIN {plain_blob('alice@example.test', 'x')}"), "503 5.5.1",
               "AUTH inside a transaction")
        expect(c.cmd("RSET"), "250")
        expect(c.cmd(f"AUTH PLAIN {plain_blob('alice@example.test', 'x')}"),
               "503 5.5.1 Already authenticated")
        expect(c.cmd("QUIT"), "221")


# -- exit status (handler.h, pgmail-smtpd(8) EXIT STATUS) ----------------------------------

def test_exit_status_normal_end(ctx):
    r = ctx.smtpd(b"EHLO client.example\r\nQUIT\r\n")
    assert r.rc == 0, f"QUIT: exit {r.rc}"
    r = ctx.smtpd(b"EHLO client.example\r\n")
    assert r.rc == 0, f"the client went away: exit {r.rc}"
    r = ctx.smtpd(b"XYZZY\r\n" * 20)
    assert r.rc == 0 and b"421 4.7.0" in r.out, f"too many errors (the client's): exit {r.rc}"


def test_exit_status_temporary(ctx):
    empty = os.path.join(ctx.tmp, "no-postgres-here")
    os.makedirs(empty, exist_ok=True)
    r = ctx.smtpd(b"EHLO client.example\r\nMAIL FROM:<a@remote.example>\r\n"
                  b"RCPT TO:<bob@example.test>\r\n", env={"PGHOST": empty})
    assert b"421 4.3.0" in r.out and r.rc == 111, f"database down: exit {r.rc}, {r.out!r}"
    # A timeout: the client keeps the connection open and says nothing.
    p = subprocess.Popen([ctx.smtpd_bin], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ctx.env({"PGMAIL_SMTP_TIMEOUT": 1}))
    try:
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    if ctx.san:
        ctx.check_san(err, "pgmail-smtpd")
    assert b"421 4.4.2" in out and p.returncode == 111, f"timeout: exit {p.returncode}, {out!r}"


def test_exit_status_permanent(ctx):
    conf = os.path.join(ctx.tmp, "bad.conf")
    with open(conf, "w") as f:
        f.write("bogus_key = 1\n")
    r = ctx.smtpd(b"QUIT\r\n", env={"PGMAIL_CONFIG": conf})
    assert r.out.startswith(b"421 4.3.5") and r.rc == 100, f"bad config: exit {r.rc}, {r.out!r}"
    r = ctx.smtpd(b"QUIT\r\n", env={"PGMAIL_TLS_IMPLICIT": "yes"})
    assert r.out == b"" and r.rc == 100, f"implicit TLS, no certificate: exit {r.rc}, {r.out!r}"


# -- authentication ----------------------------------------------------------------------

def _auth_reply(c, user, password):
    t0 = time.monotonic()
    r = c.cmd(f"AUTH PLAIN {plain_blob(user, password)}")
    return r, time.monotonic() - t0


def test_auth_wrong_password(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        r, took = _auth_reply(c, "alice@example.test", "wrong")
        expect(r, "535 5.7.8", "wrong password")
        assert took >= 0.09, f"failed AUTH answered after {took:.3f}s, delay is 100 ms"
        r, _ = _auth_reply(c, "alice@example.test", PASSWORDS["alice@example.test"])
        expect(r, "235 2.7.0", "right password after a wrong one")


def test_auth_unknown_user_same_reply(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        wrong, t1 = _auth_reply(c, "alice@example.test", "wrong")
        unknown, t2 = _auth_reply(c, "nobody@example.test", "wrong")
    expect(wrong, "535 5.7.8")
    assert unknown == wrong, f"unknown user got {unknown!r}, wrong password {wrong!r}"
    assert t2 >= 0.09, f"unknown user answered after {t2:.3f}s, delay is 100 ms"
    assert abs(t1 - t2) < 0.5, f"wrong password took {t1:.3f}s, unknown user {t2:.3f}s"


def test_auth_three_failures_close(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(_auth_reply(c, "alice@example.test", "wrong1")[0], "535 5.7.8", "1st")
        expect(_auth_reply(c, "bob@example.test", "wrong2")[0], "535 5.7.8", "2nd")
        r = c.cmd(f"AUTH PLAIN {plain_blob('alice@example.test', 'wrong3')}")
        if r and r.startswith("535"):
            r = c.reply()
        expect(r, "421", "after the 3rd failure")
        assert c.closed(), "connection still open after 421"


def test_auth_login_failure(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6")
        expect(c.cmd(base64.b64encode(b"alice@example.test").decode()), "334 UGFzc3dvcmQ6")
        expect(c.cmd(base64.b64encode(b"wrong").decode()), "535 5.7.8", "LOGIN wrong password")
        expect(c.cmd("QUIT"), "221")


def test_auth_nul_refused_both_mechanisms(ctx):
    # A NUL inside a user name or password must not cut it short (issue 12: LOGIN with the
    # password "alice-Secret-1\0garbage" logged in as alice). PLAIN refuses an extra NUL
    # as malformed; LOGIN must refuse it too, with the same 535 5.7.8 as a wrong password.
    pw = PASSWORDS["alice@example.test"].encode()
    user = b"alice@example.test"

    def b(raw):
        return base64.b64encode(raw).decode()

    with ctx.tcp() as srv:
        with session(srv.port) as c:
            expect(c.cmd("AUTH PLAIN " + b(b"\0" + user + b"\0" + pw + b"\0garbage")),
                   "535 5.7.8", "PLAIN, NUL after the password")
            expect(c.cmd("AUTH PLAIN " + b(b"\0" + user + b"\0x\0" + pw)),
                   "535 5.7.8", "PLAIN, NUL inside the password")
        with session(srv.port) as c:
            expect(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6")
            expect(c.cmd(b(user)), "334 UGFzc3dvcmQ6")
            expect(c.cmd(b(pw + b"\0garbage")), "535 5.7.8", "LOGIN, NUL after the password")
            expect(c.cmd("AUTH LOGIN " + b(user + b"\0garbage")), "334 UGFzc3dvcmQ6")
            expect(c.cmd(b(pw)), "535 5.7.8", "LOGIN, NUL after the user name")
        with session(srv.port) as c:
            expect(c.cmd("AUTH LOGIN " + b(user)), "334 UGFzc3dvcmQ6")
            expect(c.cmd(b(pw)), "235 2.7.0", "LOGIN without a NUL still works")
            expect(c.cmd("QUIT"), "221")


# -- what gets refused at the final dot --------------------------------------------------

def test_mail_loop(ctx):
    hops = [f"Received: from hop{i}.example by hop{i + 1}.example; "
            f"Thu, 1 Jan 2025 00:00:{i % 60:02d} +0000\n" for i in range(100)]
    looping = crlf("".join(hops) + "Subject: loop\n\nround and round\n")
    fine = crlf("".join(hops[:30]) + "Subject: 30 hops\n\nok\n")
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(send_mail(c, SENDER, ["bob@example.test"], looping), "554 5.4.6",
               "100 Received: headers")
        expect(send_mail(c, SENDER, ["bob@example.test"], fine), "250 2.0.0",
               "30 Received: headers")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1 and b"Subject: 30 hops" in msgs[0].body, msgs


def test_bare_newline_reject(ctx):
    with ctx.tcp({"PGMAIL_BARE_NEWLINE": "reject"}) as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd("RCPT TO:<bob@example.test>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
        expect(c.reply(), "550 5.5.2", "bare LF with bare_newline = reject")
        expect(c.cmd("QUIT"), "221")
    assert ctx.message_count() == 0


def _long_line_then_dot(ctx, env):
    # The line's CR is the 65536th byte, its LF the next: a CRLF that straddles two pieces
    # of a long DATA line (LIM_DATA_PIECE) is still a CRLF, and the "." line after it ends
    # the data.
    msg = b"Subject: long\r\n\r\n" + b"z" * 65535 + b"\r\n"
    env = dict(env, PGMAIL_SMTP_TIMEOUT=5)
    with ctx.tcp(env) as srv, session(srv.port, timeout=4) as c:
        try:
            r = send_mail(c, SENDER, ["bob@example.test"], msg)
        except TimeoutError:
            raise AssertionError("no reply to the final dot that follows a 65535-octet line: "
                                 "the end of the data was not recognised")
        expect(r, "250 2.0.0", "final dot after a 65535-octet line")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1, msgs
    assert msgs[0].body.endswith(msg), f"stored ends {msgs[0].body[-20:]!r}"


def test_long_line_then_final_dot(ctx):
    _long_line_then_dot(ctx, {})


def test_bare_newline_reject_long_line(ctx):
    _long_line_then_dot(ctx, {"PGMAIL_BARE_NEWLINE": "reject"})


SMUGGLED = (b"MAIL FROM:<x@y>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")


def _smuggle(ctx, seq):
    # RFC 5321 4.1.1.4: only CRLF.CRLF ends the data. A server that also takes seq for the
    # end would run the smuggled commands and store a second message, to bob.
    data = b"Subject: outer\r\n\r\nbefore" + seq + SMUGGLED
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd("RCPT TO:<alice@example.test>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(data + b"QUIT\r\n")
        replies = c.replies_until_close(limit=20)
    codes = [r[:3] for r in replies]
    msgs = ctx.messages()
    assert len(msgs) <= 1 and ctx.mailbox_count("bob@example.test") == 0, (
        f"smuggling with {seq!r} worked: replies {codes}, stored {msgs}")
    assert codes in (["250", "221"], ["550", "221"]), f"replies after DATA: {replies}"
    if codes[0] == "250":
        assert len(msgs) == 1 and msgs[0].recipients == ["alice@example.test"], msgs
        assert b"smuggled" in msgs[0].body, "the smuggled text is not in the one message"
    else:
        assert not msgs


def test_smuggling_lf_dot_lf(ctx):
    _smuggle(ctx, b"\n.\n")


def test_smuggling_crlf_dot_lf(ctx):
    _smuggle(ctx, b"\r\n.\n")


def test_smuggling_lf_dot_crlf(ctx):
    _smuggle(ctx, b"\n.\r\n")


def test_smuggling_cr_dot_crlf(ctx):
    _smuggle(ctx, b"\r.\r\n")


def test_smuggling_reject_mode(ctx):
    # with bare_newline = reject the whole message is refused, and still nothing is smuggled
    data = b"Subject: outer\r\n\r\nbefore\n.\n" + SMUGGLED
    with ctx.tcp({"PGMAIL_BARE_NEWLINE": "reject"}) as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd("RCPT TO:<alice@example.test>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(data + b"QUIT\r\n")
        replies = c.replies_until_close(limit=20)
    assert [r[:9] for r in replies] == ["550 5.5.2", "221 2.0.0"], replies
    assert ctx.message_count() == 0


# -- going away, and the database going away ---------------------------------------------

def test_disconnect_before_final_dot(ctx):
    with ctx.tcp() as srv:
        with session(srv.port) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
            expect(c.cmd("RCPT TO:<bob@example.test>"), "250")
            expect(c.cmd("DATA"), "354")
            c.send(dot_stuff(small("cut")) + b"almost done\r\n")
        assert srv.wait_handlers(10), "handler still running after the client left"
    assert ctx.message_count() == 0, ctx.messages()


def test_database_down(ctx):
    empty = os.path.join(ctx.tmp, "no-postgres-here")
    os.makedirs(empty, exist_ok=True)
    with ctx.tcp({"PGHOST": empty}) as srv, Client(srv.port) as c:
        replies = [c.reply()]
        for cmd in ("EHLO client.example", f"MAIL FROM:<{SENDER}>", "RCPT TO:<bob@example.test>"):
            if replies[-1] is None or replies[-1].startswith("421"):
                break
            replies.append(c.cmd(cmd))
        last = replies[-1]
        assert not any(r and r[0] == "5" for r in replies), (
            f"a database outage must never give a permanent error: {replies}")
        assert last and last.startswith("421 4.3.0"), (
            f"expected 421 4.3.0 while the database is down, got {replies}")
        assert c.closed(), "connection still open after 421"
