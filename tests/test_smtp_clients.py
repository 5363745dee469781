"""smtp_clients: real SMTP clients (Python's smtplib, curl, swaks) against pgmail-smtpd
behind systemd-socket-activate, as systemd runs it. Each test checks what landed in
PostgreSQL byte for byte: Return-Path: <sender>, one Received: header, then the message as
sent (CRLF line ends, dot-unstuffed).
"""

import os
import random
import re
import smtplib
import subprocess

from harness import HOST, PASSWORDS, check_stored, crlf

HELO = "client.example"
SENDER = "sender@remote.example"

SIMPLE = crlf("""From: Sender <sender@remote.example>
To: Bob <bob@example.test>
Subject: plain send
Message-ID: <plain-1@remote.example>

Hello Bob,
this is a plain message.
""")


def only_message(ctx, sender, recipients, original, helo=HELO):
    """Assert that exactly one message is stored, for these recipients, and check it."""
    msgs = ctx.messages()
    assert len(msgs) == 1, f"expected one stored message, found {msgs}"
    m = msgs[0]
    assert m.sender == sender, f"messages.sender is {m.sender!r}, expected {sender!r}"
    assert sorted(m.recipients) == sorted(recipients), (
        f"mailbox rows for {m.recipients}, expected {sorted(recipients)}")
    assert m.size == len(m.body), f"messages.size {m.size} but body has {len(m.body)} bytes"
    check_stored(m.body, sender, original, helo, peer="127.0.0.1", session=m.session_id)
    return m


def smtp(port):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=20)
    return s


# -- Python smtplib ----------------------------------------------------------------------

def test_smtplib_plain_send(ctx):
    with ctx.tcp() as srv, smtp(srv.port) as s:
        code, text = s.ehlo()
        assert code == 250, (code, text)
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "auth"):
            assert s.has_extn(ext), f"EHLO does not list {ext.upper()}: {text!r}"
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], s.esmtp_features
        assert s.esmtp_features["size"] == str(25 * 1024 * 1024), s.esmtp_features
        refused = s.sendmail(SENDER, ["bob@example.test"], SIMPLE)
        assert refused == {}, refused
    only_message(ctx, SENDER, ["bob@example.test"], SIMPLE)


def _auth_send(ctx, mech):
    msg = crlf(f"From: alice@example.test\nTo: bob@example.test\nSubject: {mech}\n\n"
               f"sent after AUTH {mech}\n")
    with ctx.tcp() as srv, smtp(srv.port) as s:
        s.ehlo()
        s.user, s.password = "alice@example.test", PASSWORDS["alice@example.test"]
        fn = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech]
        code, text = s.auth(mech, fn)
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        assert s.sendmail("alice@example.test", ["bob@example.test"], msg) == {}
    only_message(ctx, "alice@example.test", ["bob@example.test"], msg)


def test_smtplib_auth_plain(ctx):
    _auth_send(ctx, "PLAIN")


def test_smtplib_auth_login(ctx):
    # smtplib sends "AUTH LOGIN <base64 user>" (an initial response) and answers the
    # Password: challenge, as many clients do.
    _auth_send(ctx, "LOGIN")


def test_smtplib_login_wrong_password(ctx):
    with ctx.tcp() as srv, smtp(srv.port) as s:
        s.ehlo()
        try:
            s.login("alice@example.test", "not-her-password")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535 and e.smtp_error.startswith(b"5.7.8"), e
        else:
            raise AssertionError("login with a wrong password succeeded")


def test_smtplib_multi_recipient(ctx):
    msg = crlf("Subject: to three\n\nOne copy, three mailboxes.\n")
    rcpts = ["alice@example.test", "bob@example.test", "carol@example.test"]
    with ctx.tcp() as srv, smtp(srv.port) as s:
        assert s.sendmail(SENDER, rcpts, msg) == {}
    m = only_message(ctx, SENDER, rcpts, msg)
    assert ctx.mailbox_count() == 3
    sizes = ctx.psql("SELECT DISTINCT size FROM mailbox").split()
    assert sizes == [str(m.size)], f"mailbox sizes {sizes}, message size {m.size}"
    for a in rcpts:  # quotas count what each mailbox holds
        assert ctx.used_bytes(a) == m.size, f"{a} used_bytes {ctx.used_bytes(a)} != {m.size}"


def _big_body(size):
    """A message of about size bytes: lines of varied lengths (some over 1000 octets),
    some starting with '.', with CRLF ends."""
    rnd = random.Random(1870)
    lines = [b"Subject: big", b"From: sender@remote.example", b""]
    total = 0
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .,-"
    while total < size:
        n = rnd.choice([0, 1, 5, 72, 76, 200, 998, 1500])
        line = bytes(rnd.choice(alphabet) for _ in range(n))
        if rnd.random() < 0.05:
            line = b"." + line
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def test_smtplib_2mib_body(ctx):
    msg = _big_body(2 * 1024 * 1024)
    with ctx.tcp() as srv, smtp(srv.port) as s:
        assert s.sendmail(SENDER, ["bob@example.test"], msg) == {}
    only_message(ctx, SENDER, ["bob@example.test"], msg)


def test_smtplib_long_lines(ctx):
    # pgmail reads DATA lines longer than its buffer (LIM_DATA_PIECE, 64 KiB) in pieces: a
    # CRLF or a leading dot must mean the same wherever a piece ends. Lines of lengths
    # around the piece size put the CR, the LF and the (stuffed) dots on every side of it.
    lines = [b"Subject: long lines", b""]
    for n in range(65530, 65542):
        lines.append(b"a" * n + b".x")
        lines.append(b"." + b"b" * n)
        lines.append(b"c" * n)
    lines.append(b"d" * 200000)
    msg = b"\r\n".join(lines) + b"\r\n"
    with ctx.tcp() as srv, smtp(srv.port) as s:
        assert s.sendmail(SENDER, ["bob@example.test"], msg) == {}
    only_message(ctx, SENDER, ["bob@example.test"], msg)


def test_smtplib_dot_lines(ctx):
    # smtplib doubles a leading dot (RFC 5321 4.5.2); pgmail must store the original.
    msg = crlf("Subject: dots\n\n.\n..\n...\n.hidden\n. \nend.\n.x.\n")
    with ctx.tcp() as srv, smtp(srv.port) as s:
        assert s.sendmail(SENDER, ["bob@example.test"], msg) == {}
    only_message(ctx, SENDER, ["bob@example.test"], msg)


def test_smtplib_8bitmime(ctx):
    msg = (b"Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           + "Grüße aus Köln, 日本語, emoji 📬\r\n".encode()
           + bytes(range(0x80, 0x100)) + b"\r\n"
           + b"latin-1: \xe9t\xe9\r\n")
    with ctx.tcp() as srv, smtp(srv.port) as s:
        s.ehlo()
        assert s.has_extn("8bitmime")
        assert s.sendmail(SENDER, ["bob@example.test"], msg, mail_options=["BODY=8BITMIME"]) == {}
    only_message(ctx, SENDER, ["bob@example.test"], msg)


def test_smtplib_bounce_unknown_recipient(ctx):
    # Authenticated alice writes to a local user who does not exist: accepted at RCPT, and
    # after DATA alice gets the error as mail in her own mailbox.
    msg = crlf("From: alice@example.test\nTo: nobody@example.test\nSubject: Lunch\n\n"
               "Are you free today\n")
    with ctx.tcp() as srv, smtp(srv.port) as s:
        s.ehlo()
        s.login("alice@example.test", PASSWORDS["alice@example.test"])
        code, text = s.mail("alice@example.test")
        assert code == 250, (code, text)
        code, text = s.rcpt("nobody@example.test")
        assert code == 250, f"RCPT nobody@example.test (authenticated): {code} {text!r}"
        code, text = s.data(msg)
        assert code == 250, f"after DATA: {code} {text!r}"
    msgs = ctx.messages()
    assert len(msgs) == 1, f"expected one bounce, found {msgs}"
    m = msgs[0]
    assert m.recipients == ["alice@example.test"], m
    # RFC 5321 4.5.5 / 6.1: notifications go out with the null reverse-path.
    assert m.sender == "", f"bounce envelope sender {m.sender!r}, expected the null sender"
    assert m.size == len(m.body)
    head, sep, body = m.body.partition(b"\r\n\r\n")
    assert sep, f"bounce has no header/body separator: {m.body[:300]!r}"
    assert head.startswith(b"Return-Path: <>\r\n"), (
        f"bounce does not start with Return-Path: <>: {head[:100]!r}")
    headers = re.sub(rb"\r\n[ \t]+", b" ", head).split(b"\r\n")
    frm = [h for h in headers if h.lower().startswith(b"from:")]
    subj = [h for h in headers if h.lower().startswith(b"subject:")]
    assert len(frm) == 1 and b"MAILER-DAEMON@" + HOST.encode() in frm[0], (
        f"From: header {frm}")
    assert subj == [b"Subject: ERROR - Your email was not sent"], f"Subject: header {subj}"
    assert any(h.lower().startswith(b"date:") for h in headers), "bounce has no Date: header"
    assert b"\n" not in body.replace(b"\r\n", b""), "bounce body has a bare LF"
    text = " ".join(body.decode("utf-8", "replace").split())
    want = ("Recipient nobody@example.test was not found. "
            "Email with subject Lunch, body: Are you free today was not sent. "
            "Please try again with another recipient.")
    assert text.startswith(want), f"bounce body is {body[:400]!r}, expected it to start {want!r}"
    assert body.startswith(b"Recipient nobody@example.test was not found.\r\n"), body[:200]


# -- curl --------------------------------------------------------------------------------

def _curl(ctx, port, msgfile, sender, rcpts, extra=()):
    cmd = ["curl", "-sS", "--max-time", "30", f"smtp://127.0.0.1:{port}/{HELO}",
           "--mail-from", sender]
    for r in rcpts:
        cmd += ["--mail-rcpt", r]
    cmd += ["--upload-file", msgfile, *extra]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, f"curl exited {r.returncode}: {r.stderr.decode().strip()}"


def _write(ctx, name, data):
    path = os.path.join(ctx.tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_curl_send(ctx):
    msg = crlf("From: sender@remote.example\nTo: bob@example.test, carol@example.test\n"
               "Subject: curl\n\nsent by curl\n.with a leading dot\n")
    path = _write(ctx, "curl.eml", msg)
    with ctx.tcp() as srv:
        _curl(ctx, srv.port, path, SENDER, ["bob@example.test", "carol@example.test"])
    only_message(ctx, SENDER, ["bob@example.test", "carol@example.test"], msg)


def _curl_auth(ctx, mech):
    msg = crlf(f"From: bob@example.test\nTo: alice@example.test\nSubject: curl {mech}\n\nhi\n")
    path = _write(ctx, f"curl-{mech}.eml", msg)
    with ctx.tcp() as srv:
        _curl(ctx, srv.port, path, "bob@example.test", ["alice@example.test"],
              ["--user", "bob@example.test:" + PASSWORDS["bob@example.test"],
               "--login-options", f"AUTH={mech}"])
    only_message(ctx, "bob@example.test", ["alice@example.test"], msg)


def test_curl_auth_plain(ctx):
    _curl_auth(ctx, "PLAIN")


def test_curl_auth_login(ctx):
    _curl_auth(ctx, "LOGIN")


# -- swaks -------------------------------------------------------------------------------

def _swaks(port, *args):
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", HELO,
           "--timeout", "30", *args]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, f"swaks exited {r.returncode}:\n{out[-1500:]}"
    return out


# swaks sends --data as given, with CRLF line ends and leading dots doubled, and adds CRLF
# before the final dot (so the file it reads lacks the last line end); no tokens (%...%) and
# no backslashes here, so that it sends exactly this.
SWAKS_MSG = crlf("From: sender@remote.example\nTo: bob@example.test\nSubject: swaks\n\n"
                 "sent by swaks\n..two dots\n")


def test_swaks_send(ctx):
    path = _write(ctx, "swaks.eml", SWAKS_MSG[:-2])
    with ctx.tcp() as srv:
        _swaks(srv.port, "--from", SENDER, "--to", "bob@example.test", "--data", "@" + path)
    only_message(ctx, SENDER, ["bob@example.test"], SWAKS_MSG)


def test_swaks_pipeline(ctx):
    path = _write(ctx, "swaks.eml", SWAKS_MSG[:-2])
    with ctx.tcp() as srv:
        out = _swaks(srv.port, "--pipeline", "--from", SENDER,
                     "--to", "bob@example.test,alice@example.test", "--data", "@" + path)
    assert "PIPELINING" in out, f"swaks did not see PIPELINING:\n{out[-1500:]}"
    only_message(ctx, SENDER, ["bob@example.test", "alice@example.test"], SWAKS_MSG)


def _swaks_auth(ctx, mech):
    path = _write(ctx, "swaks.eml", SWAKS_MSG[:-2])
    with ctx.tcp() as srv:
        out = _swaks(srv.port, "-a", mech, "-au", "carol@example.test",
                     "-ap", PASSWORDS["carol@example.test"], "--from", "carol@example.test",
                     "--to", "bob@example.test", "--data", "@" + path)
    assert re.search(r"^<[-~ ]*235 2\.7\.0", out, re.M), (
        f"no 235 2.7.0 in swaks output:\n{out[-1500:]}")
    only_message(ctx, "carol@example.test", ["bob@example.test"], SWAKS_MSG)


def test_swaks_auth_plain(ctx):
    _swaks_auth(ctx, "PLAIN")


def test_swaks_auth_login(ctx):
    _swaks_auth(ctx, "LOGIN")


def test_swaks_pipeline_auth_multi(ctx):
    path = _write(ctx, "swaks.eml", SWAKS_MSG[:-2])
    with ctx.tcp() as srv:
        _swaks(srv.port, "--pipeline", "-a", "PLAIN", "-au", "alice@example.test",
               "-ap", PASSWORDS["alice@example.test"], "--from", "alice@example.test",
               "--to", "bob@example.test,carol@example.test,info@example.test",
               "--data", "@" + path)
    only_message(ctx, "alice@example.test",
                 ["bob@example.test", "carol@example.test", "alice@example.test"], SWAKS_MSG)

