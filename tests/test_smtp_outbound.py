"""smtp_outbound: the submission side of outbound mail (issue 13) in pgmail-smtpd and the
message lifecycle in the database (migrations/007).

Real clients (smtplib, swaks, curl, poplib) and a raw client for exact replies, against the
real handlers behind systemd-socket-activate and the real PostgreSQL:
  - an authenticated sender reaches other domains (250 2.1.5); the queue rows are written by
    the message's own commit (same transaction time), with their domain, sender, account and
    state; quoted local parts survive the array literal byte for byte;
  - no open relay: without AUTH (or after a failed one) every form of a foreign address is
    554 5.7.1, local-looking ones included;
  - the per-account outbound limit (pgmailctl user limit N|none|default, and
    max_outbound_per_hour): 450 4.7.1 at RCPT, logged;
  - partial delivery at the end of DATA: a full or deleted mailbox gets a bounced queue row
    (5.2.2 / 5.1.1, a DSN owed unless the sender is null) and the others get the message;
    552 5.2.2 / 550 5.1.1 only when nobody could take it; the same on the statement_timeout
    path (SQL_DELIVER_LATER);
  - a message is kept while its queue needs it (POP3 QUIT, pgmailctl user del and check).
"""

import base64
import poplib
import smtplib
import subprocess

from harness import PASSWORDS, Client, crlf, dot_stuff, expect, session
from pop3lib import pop3_tcp

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"


def q(ctx, sql):
    return ctx.psql(sql).strip()


def queue(ctx):
    """Every queue row, oldest first, as a dict."""
    cols = ["message_id", "sender", "recipient", "domain", "account_id", "state", "dsn",
            "last_status", "last_code", "finished", "same_tx"]
    out = []
    rows = q(ctx, "SELECT q.message_id, translate(encode(convert_to(q.sender, 'UTF8'), 'base64'),"
                  " E'\\n', ''), translate(encode(convert_to(q.recipient, 'UTF8'), 'base64'),"
                  " E'\\n', ''), q.domain, coalesce(q.account_id::text, '-'), q.state,"
                  " coalesce(q.dsn, '-'), coalesce(q.last_status, '-'),"
                  " coalesce(q.last_code::text, '-'), q.finished_at IS NOT NULL,"
                  " q.arrived_at = m.received_at"
                  " FROM queue q LEFT JOIN messages m ON m.id = q.message_id ORDER BY q.id")
    for line in rows.splitlines():
        r = dict(zip(cols, line.split("|")))
        r["sender"] = base64.b64decode(r["sender"]).decode()
        r["recipient"] = base64.b64decode(r["recipient"]).decode()
        out.append(r)
    return out


def account_id(ctx, address):
    return q(ctx, f"SELECT id FROM accounts WHERE address = '{address}'")


def msg(subject):
    return crlf(f"From: {ALICE}\nTo: someone\nSubject: {subject}\n\nhello\n")


def transaction(c, sender, rcpts, message, before_data=None):
    """MAIL, the RCPTs (each must be 250), before_data(), DATA: the reply to the final dot."""
    expect(c.cmd(f"MAIL FROM:<{sender}>"), "250", "MAIL")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), "250 2.1.5", f"RCPT {r}")
    if before_data:
        before_data()
    expect(c.cmd("DATA"), "354", "DATA")
    c.send(dot_stuff(message) + b".\r\n")
    return c.reply()


# -- accepted for relaying --------------------------------------------------------------

def test_remote_rcpt_smtplib(ctx):
    alice = account_id(ctx, ALICE)
    with ctx.tcp() as srv:
        s = smtplib.SMTP("127.0.0.1", srv.port, timeout=20)
        try:
            s.ehlo("client.example")
            s.login(ALICE, PASSWORDS[ALICE])
            code, _ = s.mail(ALICE)
            assert code == 250
            for r in (BOB, "Friend@Remote.Example", "other@sub.remote.example"):
                code, text = s.rcpt(r)
                assert (code, text[:5]) == (250, b"2.1.5"), (r, code, text)
            code, text = s.data(msg("to the world"))
            assert code == 250 and text.startswith(b"2.0.0"), (code, text)
            # a message for remote recipients only
            s.sendmail(ALICE, ["x@remote.example"], msg("remote only"))
            s.quit()
        except BaseException:
            s.close()
            raise
    rows = queue(ctx)
    assert [(r["recipient"], r["domain"], r["sender"], r["account_id"], r["state"], r["dsn"],
             r["finished"], r["same_tx"]) for r in rows] == [
        ("Friend@Remote.Example", "remote.example", ALICE, alice, "queued", "-", "f", "t"),
        ("other@sub.remote.example", "sub.remote.example", ALICE, alice, "queued", "-", "f",
         "t"),
        ("x@remote.example", "remote.example", ALICE, alice, "queued", "-", "f", "t"),
    ], rows
    msgs = ctx.messages()
    assert len(msgs) == 2 and msgs[0].recipients == [BOB] and msgs[1].recipients == [], msgs
    assert [r["message_id"] for r in rows] == [str(msgs[0].id)] * 2 + [str(msgs[1].id)], rows
    got = q(ctx, "SELECT coalesce(deliver_to::text, '-'), relay_to, submitted_by FROM messages"
                 " ORDER BY id").splitlines()
    assert got == [f"{{{account_id(ctx, BOB)}}}|"
                   "{Friend@Remote.Example,other@sub.remote.example}|" + alice,
                   f"-|{{x@remote.example}}|{alice}"], got
    assert "rcpt-accepted" in srv.log() and "remote=yes" in srv.log()


def test_remote_rcpt_swaks_and_curl(ctx):
    with ctx.tcp() as srv:
        r = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(srv.port), "--ehlo",
             "client.example", "--auth", "PLAIN", "--auth-user", BOB, "--auth-password",
             PASSWORDS[BOB], "--from", BOB, "--to", "someone@remote.example",
             "--header", "Subject: by swaks", "--body", "hello"],
            capture_output=True, timeout=30)
        out = r.stdout.decode("utf-8", "replace")
        assert r.returncode == 0, out[-1500:]
        assert "<-  250 2.1.5" in out, out[-1500:]
        r = subprocess.run(
            ["curl", "-sS", "-v", f"smtp://127.0.0.1:{srv.port}/client.example",
             "--mail-from", BOB, "--mail-rcpt", "other@remote.example", "--user",
             f"{BOB}:{PASSWORDS[BOB]}", "--upload-file", "-"],
            input=msg("by curl"), capture_output=True, timeout=30)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 0, err[-1500:]
        assert "< 250 2.1.5" in err, err[-1500:]
    rows = queue(ctx)
    assert [(r["recipient"], r["sender"], r["state"]) for r in rows] == [
        ("someone@remote.example", BOB, "queued"), ("other@remote.example", BOB, "queued")], rows


ODD = r'"a\"b\\c, {d}"@Remote.Example'


def test_quoted_local_part_relayed_exactly(ctx):
    # A quoted local part with a quote, a backslash, a comma and braces: the text[] literal
    # inside the COPY row must carry it byte for byte.
    odd = ODD
    with ctx.tcp() as srv, session(srv.port, auth=ALICE) as c:
        expect(transaction(c, ALICE, [odd, "plain@remote.example", odd], msg("quoted")),
               "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    rows = queue(ctx)
    assert [(r["recipient"], r["domain"]) for r in rows] == [
        (odd, "remote.example"), ("plain@remote.example", "remote.example")], rows


# -- no open relay ----------------------------------------------------------------------

FOREIGN = [
    "x@elsewhere.invalid",
    "x@Elsewhere.Invalid",
    "x@example.test.elsewhere.invalid",       # a local domain as a prefix
    "x@elsewhere.example.test",                # a subdomain of a local domain
    '"bob@example.test"@elsewhere.invalid',   # a local address inside a quoted local part
    '"x"@elsewhere.invalid',
    "bob%example.test@elsewhere.invalid",     # the percent hack
    "@example.test:x@elsewhere.invalid",      # a source route through a local domain
    "bob@[127.0.0.1]",                        # address literals
    "bob@[IPv6:::1]",
]


def test_no_open_relay(ctx):
    with ctx.tcp() as srv:
        with session(srv.port) as c:
            expect(c.cmd("MAIL FROM:<sender@remote.example>"), "250", "MAIL")
            for a in FOREIGN:
                expect(c.cmd(f"RCPT TO:<{a}>"), "554 5.7.1", f"unauthenticated RCPT {a}")
            expect(c.cmd("RCPT TO:<bob@example.test@elsewhere.invalid>"), "501 5.1.3")
            expect(c.cmd(f"RCPT TO:<{BOB}>"), "250 2.1.5", "a local recipient still")
            expect(c.cmd("RSET"), "250")
            # a failed AUTH grants nothing
            blob = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
            expect(c.cmd(f"AUTH PLAIN {blob}"), "535 5.7.8", "AUTH with a wrong password")
            expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250", "MAIL")
            expect(c.cmd("RCPT TO:<x@elsewhere.invalid>"), "554 5.7.1", "after failed AUTH")
            expect(c.cmd("QUIT"), "221")
        # smtplib as an unauthenticated client: every remote recipient refused
        s = smtplib.SMTP("127.0.0.1", srv.port, timeout=20)
        try:
            try:
                s.sendmail("sender@remote.example", ["x@elsewhere.invalid"], msg("relay?"))
                raise AssertionError("an unauthenticated client relayed")
            except smtplib.SMTPRecipientsRefused as e:
                code, text = e.recipients["x@elsewhere.invalid"]
                assert code == 554 and text.startswith(b"5.7.1"), e.recipients
            s.quit()
        finally:
            s.close()
    assert queue(ctx) == [] and ctx.message_count() == 0
    assert "reason=relay auth=no" in srv.log()


# -- the outbound limit -----------------------------------------------------------------

def test_outbound_limit(ctx):
    try:
        ctx.ctl("user", "limit", ALICE, "2")
        assert q(ctx, f"SELECT outbound_limit FROM accounts WHERE address = '{ALICE}'") == "2"
        with ctx.tcp() as srv:
            with session(srv.port, auth=ALICE) as c:
                expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250")
                expect(c.cmd("RCPT TO:<a@remote.example>"), "250 2.1.5")
                expect(c.cmd("RCPT TO:<b@remote.example>"), "250 2.1.5")
                expect(c.cmd("RCPT TO:<c@remote.example>"), "450 4.7.1", "third remote RCPT")
                expect(c.cmd(f"RCPT TO:<{BOB}>"), "250 2.1.5", "local RCPTs do not count")
                expect(c.cmd("DATA"), "354")
                c.send(dot_stuff(msg("limited")) + b".\r\n")
                expect(c.reply(), "250 2.0.0")
                # the hour is not over: the two queued rows count
                expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250")
                expect(c.cmd("RCPT TO:<d@remote.example>"), "450 4.7.1", "next transaction")
                expect(c.cmd("QUIT"), "221")
            assert "rcpt-rejected" in srv.log() and "reason=outbound-limit" in srv.log()
            # bob has his own count
            with session(srv.port, auth=BOB) as c:
                expect(c.cmd(f"MAIL FROM:<{BOB}>"), "250")
                expect(c.cmd("RCPT TO:<d@remote.example>"), "250 2.1.5", "bob")
                expect(c.cmd("QUIT"), "221")
        ctx.ctl("user", "limit", ALICE, "none")
        assert q(ctx, f"SELECT outbound_limit FROM accounts WHERE address = '{ALICE}'") == "-1"
        with ctx.tcp({"PGMAIL_MAX_OUTBOUND_PER_HOUR": 1}) as srv, \
                session(srv.port, auth=ALICE) as c:
            expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250")
            for i in range(5):
                expect(c.cmd(f"RCPT TO:<n{i}@remote.example>"), "250 2.1.5", "no limit")
            expect(c.cmd("QUIT"), "221")
        ctx.ctl("user", "limit", ALICE, "default")
        assert q(ctx, f"SELECT outbound_limit IS NULL FROM accounts"
                      f" WHERE address = '{ALICE}'") == "t"
        # the default from the configuration: alice has 2 rows within the hour
        for limit, want in ((2, "450 4.7.1"), (3, "250 2.1.5")):
            with ctx.tcp({"PGMAIL_MAX_OUTBOUND_PER_HOUR": limit}) as srv, \
                    session(srv.port, auth=ALICE) as c:
                expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250")
                expect(c.cmd("RCPT TO:<e@remote.example>"), want, f"default limit {limit}")
                expect(c.cmd("QUIT"), "221")
        # rows older than an hour no longer count
        ctx.psql("UPDATE queue SET arrived_at = now() - interval '61 minutes'")
        with ctx.tcp({"PGMAIL_MAX_OUTBOUND_PER_HOUR": 2}) as srv, \
                session(srv.port, auth=ALICE) as c:
            expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250")
            expect(c.cmd("RCPT TO:<f@remote.example>"), "250 2.1.5", "after an hour")
            expect(c.cmd("QUIT"), "221")
        bad = ctx.ctl("user", "limit", ALICE, "-3", check=False)
        assert bad.rc != 0 and b"invalid limit" in bad.err, bad
        bad = ctx.ctl("user", "limit", "nobody@example.test", "5", check=False)
        assert bad.rc != 0 and b"unknown user" in bad.err, bad
        assert b"user limit ADDRESS N|none|default" in ctx.ctl("user", "--help").out
    finally:
        ctx.psql(f"UPDATE accounts SET outbound_limit = NULL")


# -- partial delivery at the end of DATA ------------------------------------------------

def fill(ctx, address):
    """Make address's mailbox full now (after its RCPT was accepted)."""
    def run():
        ctx.psql("UPDATE accounts SET quota_bytes = coalesce(quota_bytes, 100),"
                 f" used_bytes = coalesce(quota_bytes, 100) WHERE address = '{address}'")
    return run


def unfill(ctx, address):
    ctx.psql(f"UPDATE accounts SET used_bytes = 0 WHERE address = '{address}'")


def test_partial_quota(ctx):
    sender = "sender@remote.example"
    try:
        with ctx.tcp() as srv, session(srv.port) as c:
            r = transaction(c, sender, [ALICE, BOB, CAROL], msg("three"), fill(ctx, CAROL))
            expect(r, "250 2.0.0", "one of three mailboxes full")
            # null sender: the bounce row owes no DSN
            unfill(ctx, CAROL)
            r = transaction(c, "", [BOB, CAROL], msg("null sender"), fill(ctx, CAROL))
            expect(r, "250 2.0.0", "null sender, one full")
            # nobody has room: 552 as before, nothing stored
            unfill(ctx, CAROL)

            def both():
                fill(ctx, BOB)()
                fill(ctx, CAROL)()
            r = transaction(c, sender, [BOB, CAROL], msg("all full"), both)
            expect(r, "552 5.2.2", "every mailbox full")
            expect(c.cmd("QUIT"), "221")
    finally:
        ctx.psql(f"UPDATE accounts SET quota_bytes = NULL WHERE address = '{BOB}'")
    msgs = ctx.messages()
    assert [sorted(m.recipients) for m in msgs] == [[ALICE, BOB], [BOB]], msgs
    rows = queue(ctx)
    assert [(r["message_id"], r["sender"], r["recipient"], r["domain"], r["account_id"],
             r["state"], r["dsn"], r["last_status"], r["last_code"], r["finished"],
             r["same_tx"]) for r in rows] == [
        (str(msgs[0].id), sender, CAROL, "example.test", "-", "bounced", "failed", "5.2.2",
         "552", "t", "t"),
        (str(msgs[1].id), "", CAROL, "example.test", "-", "bounced", "-", "5.2.2", "552", "t",
         "t"),
    ], rows
    assert "message-failed" in srv.log() and "reason=quota" in srv.log()


def add_user(ctx, address):
    ctx.ctl("user", "del", address, check=False)  # left over by a failed run
    ctx.ctl("user", "add", address, stdin=b"dave-Secret-4\n")


def test_account_gone(ctx):
    sender = "sender@remote.example"
    with ctx.tcp() as srv, session(srv.port) as c:
        add_user(ctx, "dave@example.test")
        r = transaction(c, sender, ["Dave@example.test", ALICE], msg("dave goes"),
                        lambda: ctx.ctl("user", "del", "dave@example.test"))
        expect(r, "250 2.0.0", "one of two accounts deleted")
        add_user(ctx, "dave@example.test")
        r = transaction(c, sender, ["dave+tag@example.test"], msg("all gone"),
                        lambda: ctx.ctl("user", "del", "dave@example.test"))
        expect(r, "550 5.1.1", "the only account deleted")
        # gone and full: the quota decides the code
        add_user(ctx, "dave@example.test")

        def both():
            ctx.ctl("user", "del", "dave@example.test")
            fill(ctx, CAROL)()
        r = transaction(c, sender, ["dave@example.test", CAROL], msg("gone and full"), both)
        expect(r, "552 5.2.2", "one gone, one full")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1 and msgs[0].recipients == [ALICE], msgs
    rows = queue(ctx)
    # named by what the sender wrote at RCPT
    assert [(r["recipient"], r["domain"], r["state"], r["dsn"], r["last_status"],
             r["last_code"]) for r in rows] == [
        ("Dave@example.test", "example.test", "bounced", "failed", "5.1.1", "550")], rows
    assert "reason=gone" in srv.log()


def test_statement_timeout_path(ctx):
    # With a server statement_timeout the row is stored without recipients and delivered
    # by SQL_DELIVER_LATER after the COPY: the same partial delivery and queue rows.
    alice = account_id(ctx, ALICE)
    env = {"PGOPTIONS": "-c statement_timeout=60s"}
    with ctx.tcp(env) as srv, session(srv.port, auth=ALICE) as c:
        r = transaction(c, ALICE, [BOB, CAROL, "far@remote.example", ODD], msg("timeout path"),
                        fill(ctx, CAROL))
        expect(r, "250 2.0.0")
        unfill(ctx, CAROL)
        r = transaction(c, ALICE, [CAROL], msg("timeout path, full"), fill(ctx, CAROL))
        expect(r, "552 5.2.2")
        expect(c.cmd("QUIT"), "221")
    msgs = ctx.messages()
    assert len(msgs) == 1 and msgs[0].recipients == [BOB], msgs
    rows = queue(ctx)
    assert [(r["recipient"], r["state"], r["account_id"], r["last_status"], r["dsn"])
            for r in rows] == [(CAROL, "bounced", "-", "5.2.2", "failed"),
                               ("far@remote.example", "queued", alice, "-", "-"),
                               (ODD, "queued", alice, "-", "-")], rows
    assert q(ctx, "SELECT relay_to[1], cardinality(relay_to), submitted_by FROM messages") == \
        f"far@remote.example|2|{alice}"


# -- the message's lifecycle ------------------------------------------------------------

def test_kept_while_queued(ctx):
    with ctx.tcp() as srv, session(srv.port, auth=ALICE) as c:
        expect(transaction(c, ALICE, [BOB, "far@remote.example"], msg("kept")), "250 2.0.0")
        add_user(ctx, "dave@example.test")
        expect(transaction(c, ALICE, ["dave@example.test", "far2@remote.example"],
                           msg("kept too")), "250 2.0.0")
        expect(c.cmd("QUIT"), "221")
    first, second = [m.id for m in ctx.messages()]
    # bob reads and deletes his copy (POP3 QUIT), dave's account goes (user del)
    with pop3_tcp(ctx) as srv:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        try:
            p.user(BOB)
            p.pass_(PASSWORDS[BOB])
            assert p.stat()[0] == 1
            p.dele(1)
            p.quit()
        except BaseException:
            p.close()
            raise
    ctx.ctl("user", "del", "dave@example.test")
    assert ctx.mailbox_count() == 0
    ids = q(ctx, "SELECT string_agg(id::text, ',' ORDER BY id) FROM messages")
    assert ids == f"{first},{second}", f"a queued message was removed: {ids}"
    r = ctx.ctl("check")
    assert r.rc == 0 and b"no orphaned messages" in r.out, r
    ctx.ctl("check", "--purge-orphans")
    assert ctx.message_count() == 2
    # delivered: no longer needed; bounced with a DSN owed: still needed
    ctx.psql(f"UPDATE queue SET state = 'delivered', finished_at = now()"
             f" WHERE message_id = {first}")
    ctx.psql(f"UPDATE queue SET state = 'bounced', finished_at = now(), dsn = 'failed'"
             f" WHERE message_id = {second}")
    r = ctx.ctl("check", check=False)
    assert r.rc == 1 and f"orphaned message {first}:".encode() in r.out, r
    assert f"orphaned message {second}:".encode() not in r.out, r
    r = ctx.ctl("check", "--purge-orphans")
    assert q(ctx, "SELECT string_agg(id::text, ',') FROM messages") == str(second)
    # the queue rows stay as history
    assert len(queue(ctx)) == 2
