"""dsn: delivery status notifications. relay/dsn.c's output (printed by tests/dsn_drive.c,
built here) parsed with Python's email package as an independent reader: the multipart/report
structure, the per-recipient fields and codes, no header injection from a hostile remote
reply, line lengths. Then migrations/008's pgmail_store_dsn against the real PostgreSQL: a
local sender's DSN lands in their mailbox whatever the quota, an unknown local sender gets
nothing, a remote sender's DSN is queued from the null sender.
"""

import email
import email.policy
import os
import subprocess

HOST = "mx.example.test"
ARRIVAL = 1764000000      # 2025-11-24 16:00:00 UTC
UNTIL = 1764432000        # five days later: Sat, 29 Nov 2025 16:00:00 UTC
ORIGINAL = (b"Return-Path: <alice@example.test>\r\n"
            b"From: Alice <alice@example.test>\r\n"
            b"To: bob@remote.example\r\n"
            b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= \xc3\xa4 raw\r\n"
            b"Message-ID: <orig.1@example.test>\r\n"
            b"\r\n"
            b"the body, which a DSN does not return\r\n")


def driver(ctx):
    """Build tests/dsn_drive.c with relay/dsn.c (with the sanitizers in the san pass)."""
    out = os.path.join(ctx.tmp, "dsn_drive")
    if not os.path.exists(out):
        flags = ["-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
                 "-I" + os.path.join(ctx.root, "shared")]
        if ctx.san:
            flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        subprocess.run(["cc", *flags, "-o", out, os.path.join(ctx.root, "tests", "dsn_drive.c"),
                        os.path.join(ctx.root, "relay", "dsn.c")], check=True, timeout=120)
    return out


def h(b):
    return (b.encode() if isinstance(b, str) else b).hex()


def compose(ctx, rcpts, to="alice@example.test", message=ORIGINAL, mid=42, host=HOST):
    """rcpts: (recipient, delayed, status, remote_mta, code, reply, last_attempt) tuples."""
    lines = [f"{h(host)} {h(to)} {mid} {ARRIVAL} {UNTIL} {h(message)}"]
    for r, delayed, status, mta, code, reply, last in rcpts:
        lines.append(f"{h(r)} {delayed} {h(status)} {h(mta)} {code} {h(reply)} {last}")
    p = subprocess.run([driver(ctx)], input=("\n".join(lines) + "\n").encode(),
                       capture_output=True, timeout=30)
    if ctx.san:
        ctx.check_san(p.stderr, "dsn_drive")
    assert p.returncode == 0, p.stderr
    return p.stdout


def check_lines(raw):
    """Every line ends in CRLF, has no other CR or LF and is at most 998 octets."""
    assert raw.endswith(b"\r\n")
    for ln in raw[:-2].split(b"\r\n"):
        assert b"\r" not in ln and b"\n" not in ln, ln[:80]
        assert len(ln) <= 998, (len(ln), ln[:80])


def parse(raw):
    check_lines(raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.defects == [], msg.defects
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == \
        ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    for p in parts:
        assert p.defects == [], p.defects
    return msg, parts


def groups(part):
    """The delivery-status part's field groups: [per-message, per-recipient...]."""
    return [dict(g.items()) for g in part.get_payload()]


BOUNCE = ("bob@remote.example", 0, "5.1.1", "mx.remote.example", 550,
          "5.1.1 <bob@remote.example>: Recipient address rejected: User unknown", ARRIVAL + 60)
DELAY = ("carol@slow.example", 1, "4.4.1", "mx.slow.example", 451,
         "4.4.1 try again later", ARRIVAL + 120)
NOMX = ("dave@gone.example", 0, "5.1.2", "", 0, "Host or domain name not found", ARRIVAL + 5)


def test_dsn_structure_and_fields(ctx):
    raw = compose(ctx, [BOUNCE, DELAY, NOMX])
    msg, (text, status, headers) = parse(raw)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.test>"
    assert msg["To"] == "<alice@example.test>" or msg["To"].addresses[0].addr_spec == \
        "alice@example.test"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime is not None and msg["Date"].datetime.utcoffset().seconds == 0
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@mx.example.test>")
    assert "42" in msg["Message-ID"]

    words = text.get_content().replace("\r\n", "\n")
    assert "Your email to bob@remote.example was not delivered.\n" in words
    assert "The address does not exist there." in words
    assert ("The remote server mx.remote.example said: 550 5.1.1 <bob@remote.example>: "
            "Recipient address rejected: User unknown") in words
    assert ("Your email to carol@slow.example has not been delivered yet. We will keep trying"
            " until Sat, 29 Nov 2025 16:00:00 +0000.") in words
    assert "Your email to dave@gone.example was not delivered." in words
    assert "What went wrong: Host or domain name not found" in words
    assert "queue id at mx.example.test is 42" in words

    g = groups(status)
    assert g[0] == {"Reporting-MTA": "dns; mx.example.test",
                    "Arrival-Date": "Mon, 24 Nov 2025 16:00:00 +0000"}
    assert len(g) == 4
    assert g[1] == {"Final-Recipient": "rfc822; bob@remote.example", "Action": "failed",
                    "Status": "5.1.1", "Remote-MTA": "dns; mx.remote.example",
                    "Diagnostic-Code": "smtp; 550 " + BOUNCE[5],
                    "Last-Attempt-Date": "Mon, 24 Nov 2025 16:01:00 +0000"}
    assert g[2] == {"Final-Recipient": "rfc822; carol@slow.example", "Action": "delayed",
                    "Status": "4.4.1", "Remote-MTA": "dns; mx.slow.example",
                    "Diagnostic-Code": "smtp; 451 4.4.1 try again later",
                    "Last-Attempt-Date": "Mon, 24 Nov 2025 16:02:00 +0000",
                    "Will-Retry-Until": "Sat, 29 Nov 2025 16:00:00 +0000"}
    # No remote answered: no Remote-MTA, no Diagnostic-Code, the reason only in the text.
    assert g[3] == {"Final-Recipient": "rfc822; dave@gone.example", "Action": "failed",
                    "Status": "5.1.2",
                    "Last-Attempt-Date": "Mon, 24 Nov 2025 16:00:05 +0000"}

    # The original headers, 8-bit octets kept (and declared), the body not returned.
    assert headers["Content-Transfer-Encoding"] == "8bit"
    hraw = headers.get_payload(decode=True)
    assert hraw.startswith(b"Return-Path: <alice@example.test>\r\nFrom: Alice")
    assert b"Message-ID: <orig.1@example.test>" in hraw
    assert b"\xc3\xa4 raw" in hraw
    assert b"the body" not in raw


def test_dsn_delay_only(ctx):
    raw = compose(ctx, [DELAY], message=b"Subject: plain ascii\r\n\r\nbody\r\n")
    msg, (text, status, headers) = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert "has not been delivered yet" in text.get_content()
    assert "was not delivered" not in text.get_content()
    assert [x.get("Action") for x in groups(status)[1:]] == ["delayed"]
    assert headers["Content-Transfer-Encoding"] is None
    assert headers.get_payload(decode=True).strip() == b"Subject: plain ascii"


def test_dsn_hostile_reply_injects_nothing(ctx):
    # The remote reply, host name and status try to end the header field, add fields,
    # end the part and open a new one, with the boundary guessed.
    evil = ("5.7.1 no\r\nBcc: victim@example.org\r\n\r\n--=_pgmail-dsn-42\r\n"
            "Content-Type: text/html\r\n\r\n<script>\x1b[31m\xff\x00 (a C string ends here)")
    evil_host = "mx.evil.example\r\nX-Injected: yes"
    raw = compose(ctx, [("bob@remote.example", 0, "5.7.1\r\nX-Injected: 1", evil_host, 554,
                         evil, ARRIVAL)])
    msg, (text, status, headers) = parse(raw)
    assert b"\r\nBcc:" not in raw and b"\r\nX-Injected" not in raw
    assert b"\r\nContent-Type: text/html" not in raw and b"\x00" not in raw
    assert all(b < 0x80 for b in raw.split(b"text/rfc822-headers")[0]), \
        "8-bit octets from the remote reply in the DSN"
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    g = groups(status)
    assert len(g) == 2, g
    assert g[1]["Status"] == "5.0.0"  # not a status code: the generic one
    assert g[1]["Remote-MTA"] == "dns; mx.evil.example  X-Injected: yes"
    diag = g[1]["Diagnostic-Code"]
    assert diag.startswith("smtp; 554 5.7.1 no  Bcc: victim@example.org    --=_pgmail-dsn-42")
    assert diag.endswith("<script>?[31m??")  # ESC and the two octets of U+00FF
    assert "The remote server mx.evil.example  X-Injected: yes said: 554 5.7.1 no" in \
        text.get_content()


def test_dsn_long_lines_and_boundary_in_headers(ctx):
    # A remote reply of 3000 octets without a space, another with spaces, a header line of
    # 5000 octets, and original headers holding strings that look like the boundary.
    long_reply = "5.2.2 " + "x" * 3000
    spaced = " ".join(["word"] * 700)
    guesses = b"".join(b"X-Guess: --=_pgmail-dsn-42-" + str(t).encode() + b"\r\n"
                       for t in range(10))
    message = (b"Subject: long\r\nX-Long: " + b"y" * 5000 + b"\r\n" + guesses + b"\r\nbody\r\n")
    raw = compose(ctx, [("bob@remote.example", 0, "5.2.2", "mx.remote.example", 552,
                         long_reply, ARRIVAL),
                        ("carol@remote.example", 0, "5.0.0", "mx.remote.example", 550, spaced,
                         ARRIVAL)], message=message)
    msg, (text, status, headers) = parse(raw)  # checks every line's length
    boundary = msg.get_boundary()
    assert raw.count(boundary.encode()) == 5
    g = groups(status)
    # The folded fields unfold to the reply as given (folding inserts one space at a cut
    # without white space).
    assert g[1]["Diagnostic-Code"].replace(" ", "") == ("smtp;552" + long_reply).replace(" ", "")
    assert g[2]["Diagnostic-Code"] == "smtp; 550 " + spaced
    hraw = headers.get_payload(decode=True)
    assert hraw.replace(b"\r\n ", b"").count(b"y" * 5000) == 1
    assert b"X-Guess: --=_pgmail-dsn-42-9" in hraw


def test_dsn_many_recipients(ctx):
    rcpts = [(f"user{i}@remote.example", i % 2, "5.1.1" if i % 2 == 0 else "4.2.0",
              "mx.remote.example", 550 if i % 2 == 0 else 450, f"reply {i}", ARRIVAL)
             for i in range(60)]
    msg, (text, status, headers) = parse(compose(ctx, rcpts))
    g = groups(status)
    assert len(g) == 61
    assert [x["Final-Recipient"] for x in g[1:]] == \
        [f"rfc822; user{i}@remote.example" for i in range(60)]
    assert [x["Action"] for x in g[1:]] == ["failed", "delayed"] * 30
    assert text.get_content().count("Your email to user") == 60


# ---- migrations/008: pgmail_store_dsn ------------------------------------------------------

def store(ctx, recipient, body, extra=""):
    """SELECT pgmail_store_dsn(...): the message id, or None for SQL NULL."""
    rec = "NULL" if recipient is None else "'" + recipient.replace("'", "''") + "'"
    out = ctx.psql(f"SELECT pgmail_store_dsn({rec}, decode('{body.hex()}', 'hex'),"
                   f" 'dsn-test'{extra})").strip()
    return int(out) if out else None


def clean_queue(ctx):
    ctx.psql("TRUNCATE queue, queue_attempts RESTART IDENTITY")


def stored(ctx, mid):
    """(sender, body bytes, [account addresses of its mailbox rows])."""
    for m in ctx.messages():
        if m.id == mid:
            return m.sender, m.body, m.recipients
    raise AssertionError(f"message {mid} is not stored")


def test_store_dsn_local_sender_gets_it_in_the_mailbox(ctx):
    clean_queue(ctx)
    body = compose(ctx, [BOUNCE])
    mid = store(ctx, "alice@example.test", body)
    sender, got, rcpts = stored(ctx, mid)
    assert sender == "" and rcpts == ["alice@example.test"]
    assert got == b"Return-Path: <>\r\n" + body
    msg, parts = parse(got)  # still a well-formed DSN with the Return-Path
    assert msg["Return-Path"] == "<>"
    assert ctx.psql("SELECT count(*) FROM queue").strip() == "0"
    assert ctx.used_bytes("alice@example.test") == len(got)


def test_store_dsn_resolves_case_alias_and_extension(ctx):
    clean_queue(ctx)
    ctx.ctl("alias", "add", "team@example.test", "alice@example.test")
    ctx.ctl("alias", "add", "team@example.test", "bob@example.test")
    try:
        for rcpt, want in (("Alice@EXAMPLE.test", ["alice@example.test"]),
                           ("info@example.test", ["alice@example.test"]),
                           ("bob+lists@example.test", ["bob@example.test"]),
                           ("team@example.test", ["alice@example.test", "bob@example.test"])):
            mid = store(ctx, rcpt, b"Subject: dsn\r\n\r\nx\r\n")
            assert mid is not None, rcpt
            assert sorted(stored(ctx, mid)[2]) == want, rcpt
        # Another delimiter, as recipient_delimiter may name: "-" here, "+" not.
        mid = store(ctx, "bob-x@example.test", b"x\r\n", ", '-'")
        assert stored(ctx, mid)[2] == ["bob@example.test"]
        assert store(ctx, "bob+x@example.test", b"x\r\n", ", '-'") is None
        assert store(ctx, "bob+x@example.test", b"x\r\n", ", ''") is None
    finally:
        ctx.ctl("alias", "del", "team@example.test", check=False)
    assert ctx.psql("SELECT count(*) FROM queue").strip() == "0"


def test_store_dsn_ignores_quota(ctx):
    clean_queue(ctx)
    ctx.psql(f"UPDATE accounts SET used_bytes = {10000} WHERE address = 'carol@example.test'")
    body = compose(ctx, [BOUNCE], to="carol@example.test")
    mid = store(ctx, "carol@example.test", body)
    assert stored(ctx, mid)[2] == ["carol@example.test"]
    assert ctx.used_bytes("carol@example.test") == 10000 + len(body) + len("Return-Path: <>\r\n")


def test_store_dsn_unknown_local_or_null_stores_nothing(ctx):
    clean_queue(ctx)
    before = ctx.message_count()
    for rcpt in ("nobody@example.test", "nobody+x@example.test", "+alice@example.test",
                 "", "no-domain", "trailing@", None):
        assert store(ctx, rcpt, b"x\r\n") is None, rcpt
    assert ctx.message_count() == before
    assert ctx.psql("SELECT count(*) FROM queue").strip() == "0"


def test_store_dsn_remote_sender_is_queued(ctx):
    from faultlib import PsqlSession
    clean_queue(ctx)
    body = compose(ctx, [BOUNCE], to="Sender@Remote.Example")
    with PsqlSession(ctx.pgdir) as listener:
        listener.run("LISTEN pgmail_queue")
        mid = store(ctx, "Sender@Remote.Example", body)
        heard = listener.run("SELECT 1")
    assert 'notification "pgmail_queue"' in heard, heard
    sender, got, rcpts = stored(ctx, mid)
    assert sender == "" and got == body and rcpts == []  # sent as composed, no Return-Path
    row = ctx.psql("SELECT message_id, sender, recipient, domain, account_id IS NULL, state,"
                   " attempts, next_attempt <= now(), dsn IS NULL FROM queue").strip()
    assert row == f"{mid}||Sender@Remote.Example|remote.example|t|queued|0|t|t", row
    assert ctx.psql(f"SELECT pgmail_message_needed({mid})").strip() == "t"
    assert ctx.psql(f"SELECT relay_to IS NULL FROM messages WHERE id = {mid}").strip() == "t"
    clean_queue(ctx)
