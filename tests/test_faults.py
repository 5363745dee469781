"""faults: fault injection with a real PostgreSQL, and clients that misbehave.

Database faults, each at a chosen point of a session:
  - the database unreachable (PGHOST names an empty directory);
  - the handler's backend ended with pg_terminate_backend (found by application_name
    'pgmail-smtpd' / 'pgmail-pop3d' in pg_stat_activity): before MAIL, between RCPT and
    DATA, while DATA streams into the COPY, while the delivery waits on a row lock the test
    holds (so: during the final commit), and while a POP3 QUIT waits on one;
  - a statement timeout (ALTER ROLE ... SET statement_timeout on a role of the test's own,
    with a lock held by the test so that a statement waits);
  - the role's connection limit reached (ALTER ROLE ... CONNECTION LIMIT 1, the one
    connection taken by the test);
  - the database stopped and restarted: a second, private cluster (faultlib.private_pg),
    stopped before DATA, while DATA streams, before a POP3 QUIT, and restarted mid-session.
Each time the client must get a 4xx (SMTP) or -ERR [SYS/TEMP] (POP3), never a permanent
error; afterwards every message that got a 250 is stored exactly once, none that did not is
stored, no mailbox has lost a message, quota counts match the mailboxes, no message is left
without a mailbox, and no handler keeps a database connection.

Client faults: killed (TCP RST) mid-DATA, right after the final dot, mid-QUIT, mid-RETR;
half-closed sockets (shutdown(SHUT_WR) after pipelined commands: every reply still
arrives, then the session ends); clients that never read their replies (the handler must
not wait for ever: its timeout has to end the session).

Everything changed in the runner's cluster is restored in finally blocks (FaultRole drops
its role; psql sessions holding locks are closed); the private cluster is stopped after each
test. The short soak (tests/soak/soak.py for ~8 s of load and a slowloris round) and the slow
tests marked normal_pass_only run in the normal pass only.
"""

import collections
import os
import re
import socket
import sys
import time

import faultlib
import pop3lib
from faultlib import POP3D, SMTPD, FaultRole, PsqlSession
from harness import PASSWORDS, Client, crlf, dot_stuff, expect, plain_blob, session
from pop3lib import Pop3Client, expect_err, expect_ok, pop3_tcp, stat

SENDER = "sender@remote.example"
ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"


def normal_pass_only(fn):
    """For the slow tests whose code paths the [san] pass sees in faster ones (a database
    error is a database error to the handler, whatever caused it): they pass there without
    running, to keep `make test` within its time budget."""
    def run(ctx):
        if not ctx.san:
            fn(ctx)
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    run.__code__ = run.__code__.replace(co_firstlineno=fn.__code__.co_firstlineno)
    return run


# ---------------------------------------------------------------------------------------
# Messages with a token in their Subject, and what the database holds afterwards

def message(token, size=0):
    """A CRLF message whose Subject is token, padded with 78-octet lines to about size."""
    head = crlf(f"From: <{SENDER}>\nSubject: {token}\n\nbody of {token}\n")
    line = b"0123456789" * 7 + b"abcdef\r\n"
    return head + line * max(0, (size - len(head)) // len(line))


def stored_tokens(ctx):
    """{token: number of stored messages whose Subject is token}."""
    rows = ctx.psql("SELECT translate(encode(substring(body FROM 1 FOR 4096), 'base64'),"
                    " E'\\n', '') FROM messages ORDER BY id")
    import base64
    out = collections.Counter()
    for row in rows.split():
        m = re.search(rb"\r\nSubject: (\S+)\r\n", base64.b64decode(row))
        out[m.group(1).decode() if m else "?"] += 1
    return out


def check_store(ctx, acked, not_acked=()):
    """Every token of acked (answered 250) stored exactly once, none of not_acked stored,
    nothing else stored; then the general invariants (check_consistent)."""
    got = stored_tokens(ctx)
    for t in acked:
        assert got.get(t, 0) == 1, f"message {t} got 250 but is stored {got.get(t, 0)} times"
    for t in not_acked:
        assert got.get(t, 0) == 0, f"message {t} was not acknowledged but is stored " \
                                   f"{got[t]} time(s)"
    extra = set(got) - set(acked)
    assert not extra, f"stored messages nobody was told about: {sorted(extra)}"
    check_consistent(ctx)


def check_consistent(ctx):
    """The account totals (used_bytes, message_count) equal what the mailboxes hold; no
    message without a mailbox row."""
    bad = ctx.psql("SELECT a.address, a.used_bytes, coalesce(sum(b.size), 0), a.message_count,"
                   " count(b.id) FROM accounts a"
                   " LEFT JOIN mailbox b ON b.account_id = a.id GROUP BY a.id"
                   " HAVING a.used_bytes <> coalesce(sum(b.size), 0)"
                   " OR a.message_count <> count(b.id)").strip()
    assert not bad, f"account totals differ from the mailbox contents: {bad}"
    orphans = ctx.psql("SELECT count(*) FROM messages m WHERE NOT EXISTS"
                       " (SELECT 1 FROM mailbox b WHERE b.message_id = m.id)").strip()
    assert orphans == "0", f"{orphans} stored message(s) in no mailbox"


def two_messages(ctx):
    """Store two small messages for alice; her mailbox ids (as mailbox_ids) afterwards."""
    for i in range(2):
        pop3lib.insert_message(ctx, ALICE, crlf(f"Subject: P{i}\n\nmessage {i}\n"))
    return mailbox_ids(ctx, ALICE)


def mailbox_ids(ctx, address):
    return pop3lib.uidls_in_db(ctx, address)


def replies_until(c, prefixes, limit=5):
    """Read replies until one starts with one of prefixes (or the connection closes)."""
    out = []
    for _ in range(limit):
        r = c.reply()
        out.append(r)
        if r is None or r.startswith(prefixes):
            break
    return out


def no_permanent(replies, what):
    perm = [r for r in replies if r and r[0] == "5"]
    assert not perm, f"{what}: a database fault must never give a permanent error: {perm}"


def send_tx(c, token, rcpts=(BOB,), size=0):
    """MAIL, RCPT, DATA and the message; returns the reply to the final dot."""
    expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250", f"MAIL ({token})")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), "250", f"RCPT {r} ({token})")
    expect(c.cmd("DATA"), "354", f"DATA ({token})")
    c.send(dot_stuff(message(token, size)) + b".\r\n")
    return c.reply()


def small_rcvbuf_socket(port, rcvbuf=4096, timeout=10):
    """A client socket whose receive window is small, so that a server writing to a client
    that does not read blocks soon."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def rst_close(sock):
    """Close with a TCP RST, as a killed client leaves the connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------------------------------
# The database unreachable

def test_db_unreachable_auth_and_pop3_login_are_temporary(ctx):
    empty = os.path.join(ctx.tmp, "no-postgres-here")
    os.makedirs(empty, exist_ok=True)
    with ctx.tcp({"PGHOST": empty}) as srv, session(srv.port) as c:
        r = c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}")
        expect(r, "421 4.3.0", "AUTH while the database is unreachable")
        assert c.closed(), "connection still open after 421"
    with pop3_tcp(ctx, env={"PGHOST": empty}) as srv, Pop3Client(srv.port) as c:
        expect_ok(c.cmd(f"USER {ALICE}"), "USER")
        expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS while the database is "
                   "unreachable", "-ERR [SYS/TEMP]")
        expect_ok(c.cmd("QUIT"), "QUIT in AUTHORIZATION")


def test_gssapi_required_is_a_clear_temporary_failure(ctx):
    # The handlers link libpq.a with shared/link/nogss.c standing in for Kerberos: a
    # configuration that demands GSSAPI encryption must fail like any unreachable database
    # (4xx, the reason in the log), never crash or hang.
    env = {"PGGSSENCMODE": "require"}
    with ctx.tcp(env) as srv, session(srv.port) as c:
        r = c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}")
        expect(r, "421 4.3.0", "AUTH when libpq must use GSSAPI encryption")
        assert c.closed(), "connection still open after 421"
    with pop3_tcp(ctx, env=env) as srv, Pop3Client(srv.port) as c:
        expect_ok(c.cmd(f"USER {ALICE}"), "USER")
        expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS when libpq must use GSSAPI",
                   "-ERR [SYS/TEMP]")
        expect_ok(c.cmd("QUIT"), "QUIT in AUTHORIZATION")


# ---------------------------------------------------------------------------------------
# The handler's backend terminated (the runner's cluster, pg_terminate_backend)

def test_smtp_backend_terminated_before_mail(ctx):
    # Authenticated, so that MAIL reads the database (sender_login_match).
    with ctx.tcp() as srv, session(srv.port, auth=ALICE) as c:
        faultlib.wait_backends(ctx, SMTPD)
        assert faultlib.terminate(ctx, SMTPD) == 1
        r = c.cmd(f"MAIL FROM:<{ALICE}>")
        replies = [r]
        if not r.startswith("250"):
            expect(r, "451 4.3.0", "MAIL after the backend was terminated")
            replies.append(expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "250",
                                  "MAIL again (a new connection)"))
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250", "RCPT")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Tbeforemail")) + b".\r\n")
        expect(c.reply(), "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    no_permanent(replies, "MAIL")
    check_store(ctx, ["Tbeforemail"])
    faultlib.wait_no_backends(ctx)


def test_smtp_backend_terminated_between_rcpt_and_data(ctx):
    with ctx.tcp() as srv, session(srv.port) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        assert faultlib.terminate(ctx, SMTPD) == 1
        r = c.cmd("DATA")
        expect(r, "451 4.3.0", "DATA after the backend was terminated")
        # the envelope is still there: DATA again goes through on a new connection
        expect(c.cmd("DATA"), "354", "DATA again")
        c.send(dot_stuff(message("Trcptdata")) + b".\r\n")
        expect(c.reply(), "250 2.0.0", "final dot")
        expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Trcptdata"])
    faultlib.wait_no_backends(ctx)


def test_smtp_backend_terminated_while_data_streams(ctx):
    body = dot_stuff(message("Tstreamcut", 3 << 20)) + b".\r\n"
    with ctx.tcp() as srv, session(srv.port, timeout=30) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(body[:1 << 20])
        time.sleep(0.2)
        assert faultlib.terminate(ctx, SMTPD) == 1
        c.send(body[1 << 20:])
        expect(c.reply(), "451 4.3.0", "final dot of a message whose COPY was cut off")
        # the session goes on, on a new connection
        expect(send_tx(c, "Tafterstream"), "250 2.0.0", "the next message")
        expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Tafterstream"], ["Tstreamcut"])
    faultlib.wait_no_backends(ctx)


def test_smtp_commit_held_by_a_lock_then_backend_terminated(ctx):
    # The delivery (mailbox row, quota update, COMMIT) waits on bob's account row, which
    # the test holds; its backend is then terminated: 451, nothing stored. The same
    # message sent again while the lock is still held goes through once it is released.
    used = ctx.used_bytes(BOB)
    with ctx.tcp() as srv, session(srv.port, timeout=30) as c, \
            PsqlSession(ctx.pgdir) as holder:
        holder.run(f"BEGIN; SELECT 1 FROM accounts WHERE address = '{BOB}' FOR UPDATE")
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Theld")) + b".\r\n")
        faultlib.wait_backend_state(ctx, SMTPD, "Lock")
        assert faultlib.terminate(ctx, SMTPD) == 1
        expect(c.reply(), "451 4.3.0", "final dot, backend terminated while waiting")
        assert ctx.used_bytes(BOB) == used
        # again, still locked: it waits; released, it is stored
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Theld2")) + b".\r\n")
        faultlib.wait_backend_state(ctx, SMTPD, "Lock")
        holder.run("ROLLBACK")
        expect(c.reply(), "250 2.0.0", "final dot once the lock was released")
        expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Theld2"], ["Theld"])
    faultlib.wait_no_backends(ctx)


def test_pop3_quit_held_by_a_lock_then_backend_terminated(ctx):
    for i in range(3):
        pop3lib.insert_message(ctx, ALICE, crlf(f"Subject: P{i}\n\nmessage {i}\n"))
    before = mailbox_ids(ctx, ALICE)
    with pop3_tcp(ctx) as srv, PsqlSession(ctx.pgdir) as holder:
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        holder.run("BEGIN; SELECT 1 FROM mailbox WHERE account_id ="
                   f" (SELECT id FROM accounts WHERE address = '{ALICE}') FOR UPDATE")
        c.send("QUIT\r\n")
        faultlib.wait_backend_state(ctx, POP3D, "Lock")
        assert faultlib.terminate(ctx, POP3D) == 1
        expect_err(c.status(), "QUIT whose backend was terminated", "-ERR [SYS/TEMP]")
        assert c.closed(5), "the session did not end after QUIT"
        c.close()
        holder.run("ROLLBACK")
        assert mailbox_ids(ctx, ALICE) == before, "a failed QUIT removed messages"
        # and the mailbox is not locked: the next session logs in and removes
        with pop3lib.session(srv.port) as c2:
            assert stat(c2)[0] == 3
            expect_ok(c2.cmd("DELE 3"), "DELE 3")
            expect_ok(c2.cmd("QUIT"), "QUIT")
    assert mailbox_ids(ctx, ALICE) == before[:2]
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


def test_pop3_backend_terminated_mid_session(ctx):
    before = two_messages(ctx)
    with pop3_tcp(ctx) as srv:
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        assert faultlib.terminate(ctx, POP3D) == 1
        st, _ = c.retr(2)
        expect_err(st, "RETR after the backend was terminated", "-ERR [SYS/TEMP]")
        # the session's transaction is gone: the session ends there (no new connection
        # outside the mailbox lock, no QUIT that could remove anything)
        assert c.closed(5), "session still open after its database connection was lost"
        c.close()
        # The list is read on the first numbering command, not at login: when that read
        # fails the client hears [SYS/TEMP] and the session ends.
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("STAT"), "STAT (from the totals read at login)")
        assert faultlib.terminate(ctx, POP3D) == 1
        expect_err(c.cmd("DELE 1"), "DELE whose list read found the backend gone",
                   "-ERR [SYS/TEMP]")
        assert c.closed(5), "session still open after the list could not be read"
        c.close()
    assert mailbox_ids(ctx, ALICE) == before
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


# ---------------------------------------------------------------------------------------
# Statement timeout, idle-in-transaction timeout and connection limit (a role of the test's
# own)

@normal_pass_only
def test_smtp_statement_timeout(ctx):
    with FaultRole(ctx) as role:
        role.alter("SET statement_timeout = '300ms'")
        with ctx.tcp(role.env) as srv, session(srv.port, timeout=20) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
            with PsqlSession(ctx.pgdir) as holder:
                holder.run("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
                t0 = time.monotonic()
                r = c.cmd(f"RCPT TO:<{BOB}>")
                took = time.monotonic() - t0
            expect(r, "451 4.3.0", "RCPT whose lookup ran into the statement timeout")
            assert took < 5, f"RCPT answered after {took:.1f}s with a 300 ms statement timeout"
            expect(c.cmd(f"RCPT TO:<{BOB}>"), "250", "RCPT once the lock is gone")
            expect(c.cmd("DATA"), "354")
            with PsqlSession(ctx.pgdir) as holder:
                holder.run(f"BEGIN; SELECT 1 FROM accounts WHERE address = '{BOB}' FOR UPDATE")
                c.send(dot_stuff(message("Ttimeout")) + b".\r\n")
                c.sock.settimeout(10)
                try:
                    r = c.reply()
                except (TimeoutError, socket.timeout):
                    r = None
            assert r is not None, (
                "no reply to the final dot 10 s after it was sent, while the test held a lock "
                "on bob's account row with statement_timeout = 300ms on the role: the "
                "delivery waits on the lock for as long as it is held (the operator's "
                "statement_timeout is switched off for the whole delivery transaction, not "
                "only for the COPY); released, it stores a message the client gave up on")
            c.sock.settimeout(20)
            expect(r, "451 4.3.0", "final dot whose delivery ran into the statement timeout")
            expect(send_tx(c, "Tnotimeout"), "250 2.0.0", "the next message")
            expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Tnotimeout"], ["Ttimeout"])
    faultlib.wait_no_backends(ctx)


@normal_pass_only
def test_smtp_slow_data_outlasts_statement_timeout(ctx):
    # The message streams into a COPY that lasts as long as the client takes to send it.
    # statement_timeout is an operator's guard against runaway queries; a client slower
    # than it (a big message on a slow link) must not fail every retry for that reason.
    with FaultRole(ctx) as role:
        role.alter("SET statement_timeout = '1s'")
        with ctx.tcp(role.env) as srv, session(srv.port, timeout=20) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
            expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
            expect(c.cmd("DATA"), "354")
            data = dot_stuff(message("Tslowdata", 4000)) + b".\r\n"
            for i in range(0, len(data) - 5, 1000):  # about 2 s, a piece every 0.4 s
                c.send(data[i:i + 1000] if i + 1000 < len(data) - 5 else data[i:-5])
                time.sleep(0.4)
            c.send(data[-5:])
            r = c.reply()
            expect(r, "250 2.0.0", "final dot of a message sent over 2 s with a 1 s "
                   "statement_timeout on the database role")
            expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Tslowdata"])
    faultlib.wait_no_backends(ctx)


@normal_pass_only
def test_pop3_idle_in_transaction_timeout_keeps_mail(ctx):
    # The POP3 session is one transaction that waits for the client between commands. A
    # server-wide idle_in_transaction_session_timeout shorter than the client's pause
    # either does not apply to it (the handler may turn it off for its transaction: then
    # QUIT commits) or ends it, and then QUIT must say -ERR [SYS/TEMP] and remove nothing.
    # Either way no mail is lost and nothing is half done.
    before = two_messages(ctx)
    with FaultRole(ctx) as role:
        role.alter("SET idle_in_transaction_session_timeout = '500ms'")
        with pop3_tcp(ctx, env=role.env) as srv, pop3lib.session(srv.port) as c:
            expect_ok(c.cmd("DELE 1"), "DELE 1")
            time.sleep(1.5)
            st = c.cmd("QUIT")
    assert st and st.startswith(("+OK", "-ERR [SYS/TEMP]")), f"QUIT: {st!r}"
    after = mailbox_ids(ctx, ALICE)
    assert after == (before[1:] if st.startswith("+OK") else before), (
        f"QUIT answered {st!r}, mailbox {before} became {after}")
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


@normal_pass_only
def test_pop3_statement_timeout_at_login_and_quit(ctx):
    before = two_messages(ctx)
    with FaultRole(ctx) as role:
        role.alter("SET statement_timeout = '300ms'")
        with pop3_tcp(ctx, env=role.env) as srv, Pop3Client(srv.port, timeout=20) as c:
            with PsqlSession(ctx.pgdir) as holder:
                holder.run("BEGIN; LOCK TABLE mailbox IN ACCESS EXCLUSIVE MODE")
                expect_ok(c.cmd(f"USER {ALICE}"), "USER")
                st = c.cmd(f"PASS {PASSWORDS[ALICE]}")
            expect_err(st, "PASS whose mailbox listing ran into the statement timeout",
                       "-ERR [SYS/TEMP]")
            c.login()  # the lock is gone
            expect_ok(c.cmd("DELE 1"), "DELE 1")
            with PsqlSession(ctx.pgdir) as holder:
                holder.run("BEGIN; SELECT 1 FROM mailbox WHERE account_id ="
                           f" (SELECT id FROM accounts WHERE address = '{ALICE}') FOR UPDATE")
                st = c.cmd("QUIT")
            expect_err(st, "QUIT whose DELETE ran into the statement timeout",
                       "-ERR [SYS/TEMP]")
            assert c.closed(5)
        assert mailbox_ids(ctx, ALICE) == before, "a QUIT that failed removed messages"
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


@normal_pass_only
def test_connection_limit_reached(ctx):
    with FaultRole(ctx) as role:
        role.alter("CONNECTION LIMIT 1")
        with PsqlSession(ctx.pgdir, user=role.NAME) as taker:
            taker.run("SELECT 1")  # the role's one connection
            with ctx.tcp(role.env) as srv, session(srv.port) as c:
                expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
                r = c.cmd(f"RCPT TO:<{BOB}>")
                no_permanent([r], "RCPT at the connection limit")
                expect(r, "421 4.3.0", "RCPT when no database connection can be had")
                assert c.closed()
            with pop3_tcp(ctx, env=role.env) as srv, Pop3Client(srv.port) as c:
                expect_ok(c.cmd(f"USER {ALICE}"), "USER")
                expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS at the connection limit",
                           "-ERR [SYS/TEMP]")
                expect_ok(c.cmd("QUIT"), "QUIT")
        # the connection is free again
        with ctx.tcp(role.env) as srv, session(srv.port) as c:
            expect(send_tx(c, "Tlimit"), "250 2.0.0", "once a connection is free")
            expect(c.cmd("QUIT"), "221")
    check_store(ctx, ["Tlimit"])
    faultlib.wait_no_backends(ctx)


# ---------------------------------------------------------------------------------------
# The database stopped and restarted (a private cluster)

@normal_pass_only
def test_smtp_database_stopped_and_restarted(ctx):
    cluster, pctx = faultlib.private_pg(ctx)
    with pctx.tcp() as srv:
        # stopped between RCPT and DATA
        c = session(srv.port)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        cluster.stop()
        replies = [c.cmd("DATA")]
        while replies[-1] and replies[-1].startswith("451") and len(replies) < 3:
            replies.append(c.cmd("DATA"))
        no_permanent(replies, "DATA with the database stopped")
        assert replies[0].startswith(("451 4.3.0", "421 4.3.0")), replies
        assert replies[-1] is None or replies[-1].startswith("421 4.3.0"), replies
        assert c.closed(), f"connection still open after {replies}"
        c.close()
        # stopped before MAIL: MAIL needs no database, RCPT does
        c = session(srv.port)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250", "MAIL with the database stopped")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "421 4.3.0", "RCPT with the database stopped")
        c.close()
        cluster.start()
        # restarted mid-session: after RCPT, before the next RCPT
        c = session(srv.port)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        cluster.restart()
        r = c.cmd(f"RCPT TO:<{CAROL}>")
        no_permanent([r], "RCPT after a restart")
        if r.startswith("451"):
            r = c.cmd(f"RCPT TO:<{CAROL}>")
        expect(r, "250", "RCPT carol after the restart")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Trestart")) + b".\r\n")
        expect(c.reply(), "250 2.0.0", "final dot after a restart")
        expect(c.cmd("QUIT"), "221")
        c.close()
    check_store(pctx, ["Trestart"])
    rcpts = pctx.messages()[0].recipients
    assert sorted(rcpts) == [BOB, CAROL], rcpts
    faultlib.wait_no_backends(pctx)


@normal_pass_only
def test_smtp_database_stopped_while_data_streams(ctx):
    cluster, pctx = faultlib.private_pg(ctx)
    body = dot_stuff(message("Tstopped", 3 << 20)) + b".\r\n"
    with pctx.tcp() as srv, session(srv.port, timeout=30) as c:
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(body[:1 << 20])
        time.sleep(0.2)
        cluster.stop()
        c.send(body[1 << 20:])
        r = c.reply()
        no_permanent([r], "final dot")
        expect(r, "451 4.3.0", "final dot of a message cut off by a database shutdown")
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "421 4.3.0", "RCPT with the database still down")
    cluster.start()
    with pctx.tcp() as srv, session(srv.port) as c:
        expect(send_tx(c, "Tafterstop"), "250 2.0.0", "after the database came back")
        expect(c.cmd("QUIT"), "221")
    check_store(pctx, ["Tafterstop"], ["Tstopped"])
    faultlib.wait_no_backends(pctx)


@normal_pass_only
def test_pop3_database_stopped_and_restarted(ctx):
    cluster, pctx = faultlib.private_pg(ctx)
    for i in range(3):
        pop3lib.insert_message(pctx, ALICE, crlf(f"Subject: P{i}\n\nmessage {i}\n"))
    before = mailbox_ids(pctx, ALICE)
    with pop3_tcp(pctx) as srv:
        # stopped before QUIT
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        cluster.stop()
        expect_err(c.cmd("QUIT"), "QUIT with the database stopped", "-ERR [SYS/TEMP]")
        assert c.closed(5)
        c.close()
        # logging in while it is down
        with Pop3Client(srv.port) as c:
            expect_ok(c.cmd(f"USER {ALICE}"), "USER")
            expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS with the database stopped",
                       "-ERR [SYS/TEMP]")
        cluster.start()
        assert mailbox_ids(pctx, ALICE) == before, "a QUIT that failed removed messages"
        # restarted mid-session
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        cluster.restart()
        st, _ = c.retr(1)
        expect_err(st, "RETR after a restart", "-ERR [SYS/TEMP]")
        assert c.closed(5), "session still open after a restart lost its transaction"
        c.close()
        assert mailbox_ids(pctx, ALICE) == before, "a session cut by a restart removed mail"
        with pop3lib.session(srv.port) as c:  # no lock left behind
            assert stat(c)[0] == 3
            expect_ok(c.cmd("QUIT"), "QUIT")
    check_consistent(pctx)
    faultlib.wait_no_backends(pctx)


# ---------------------------------------------------------------------------------------
# Clients that go away

def test_smtp_client_killed_mid_data_and_after_dot_and_mid_quit(ctx):
    with ctx.tcp() as srv:
        # killed mid-DATA: nothing stored
        c = session(srv.port)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Tkilled", 1 << 20))[:700000])
        rst_close(c.sock)
        # killed right after the final dot, before reading the reply: at most once
        c = session(srv.port)
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250")
        expect(c.cmd(f"RCPT TO:<{BOB}>"), "250")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(message("Tafterdot")) + b".\r\n")
        rst_close(c.sock)
        # killed mid-QUIT, after the 250: stored exactly once
        c = session(srv.port)
        expect(send_tx(c, "Tmidquit"), "250 2.0.0")
        c.send("QUIT\r\n")
        rst_close(c.sock)
        assert srv.wait_handlers(10), "a handler still runs after its client was killed"
    got = stored_tokens(ctx)
    assert got.get("Tafterdot", 0) <= 1, f"Tafterdot stored {got['Tafterdot']} times"
    acked = ["Tmidquit"] + (["Tafterdot"] if got.get("Tafterdot") else [])
    check_store(ctx, acked, ["Tkilled"])
    faultlib.wait_no_backends(ctx)


def test_pop3_client_killed_mid_retr_and_mid_quit(ctx):
    pop3lib.psql_stdin(ctx, pop3lib.insert_sql(
        [ALICE], "convert_to('Subject: big' || chr(13) || chr(10) || chr(13) || chr(10) ||"
                 " repeat('x', 76) || repeat(chr(13) || chr(10) || repeat('y', 76), 40000)"
                 " || chr(13) || chr(10), 'UTF8')"))
    before = two_messages(ctx)
    with pop3_tcp(ctx) as srv:
        # killed mid-RETR, with a DELE marked: nothing removed, the lock is free at once
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        c.send("RETR 1\r\n")
        while len(c.buf) < 100000:
            assert c._fill(), "connection closed during RETR"
        pid = srv.wait_spawned(1)
        c.abort()
        assert faultlib.wait_gone(pid, 5), f"handler {pid} still runs 5s after its " \
                                            f"client was killed mid-RETR ({faultlib.wchan(pid)})"
        assert mailbox_ids(ctx, ALICE) == before, "a killed session removed messages"
        # killed mid-QUIT: the QUIT commits or it does not, but nothing half-done
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 3"), "DELE 3")
        c.send("QUIT\r\n")
        c.abort()
        assert srv.wait_handlers(10), "a handler still runs after its client was killed"
    after = mailbox_ids(ctx, ALICE)
    assert after in (before, before[:2]), f"mailbox {before} became {after}"
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


# ---------------------------------------------------------------------------------------
# Half-closed sockets

def test_smtp_half_close_after_pipelined_commands(ctx):
    script = (f"EHLO client.example\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n"
              ).encode() + dot_stuff(message("Thalf")) + b".\r\n"
    with ctx.tcp() as srv:
        # without QUIT: every reply, then the server ends the session on EOF
        with Client(srv.port) as c:
            c.send(script)
            c.sock.shutdown(socket.SHUT_WR)
            replies = c.replies_until_close(20)
        assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250"], replies
        # with QUIT
        with Client(srv.port) as c:
            c.send(script.replace(b"Thalf", b"Thalfquit") + b"QUIT\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            replies = c.replies_until_close(20)
        assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "250",
                                            "221"], replies
        # half-closed mid-DATA: no reply to a message that never ended, nothing stored
        with Client(srv.port) as c:
            c.send(script.replace(b"Thalf", b"Thalfcut")[:-40])
            c.sock.shutdown(socket.SHUT_WR)
            replies = c.replies_until_close(20)
        assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354"], replies
        assert srv.wait_handlers(10)
    check_store(ctx, ["Thalf", "Thalfquit"], ["Thalfcut"])


def test_pop3_half_close_after_pipelined_commands(ctx):
    before = two_messages(ctx)
    with pop3_tcp(ctx) as srv:
        with Pop3Client(srv.port) as c:
            c.send(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nSTAT\r\nDELE 1\r\nQUIT\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            got = [c.status() for _ in range(5)]
            assert all(s and s.startswith("+OK") for s in got), got
            assert c.closed(5)
        assert mailbox_ids(ctx, ALICE) == before[1:], "QUIT of a half-closed session"
        with Pop3Client(srv.port) as c:  # no QUIT: marks are dropped at EOF
            c.send(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nDELE 1\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            got = [c.status() for _ in range(3)]
            assert all(s and s.startswith("+OK") for s in got), got
            assert c.closed(5)
        assert srv.wait_handlers(10)
    assert mailbox_ids(ctx, ALICE) == before[1:]
    check_consistent(ctx)
    faultlib.wait_no_backends(ctx)


# ---------------------------------------------------------------------------------------
# Clients that never read their replies

NEVER_READS_TIMEOUT = 1  # seconds, PGMAIL_SMTP_TIMEOUT / PGMAIL_POP3_TIMEOUT
NEVER_READS_GRACE = 5    # seconds after the client stopped, for the handler to end


def _flood_without_reading(sock, data, max_bytes=64 << 20):
    """Send data over and over without reading, until the send side has been blocked for
    a second (the server no longer reads: it is stuck writing its replies). Bytes sent."""
    sock.setblocking(False)
    sent, blocked_since = 0, None
    while sent < max_bytes:
        try:
            sent += sock.send(data)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 1.0:
                break
            time.sleep(0.02)
    return sent


def _handler_must_end(srv, pid, sock, what):
    t0 = time.monotonic()
    ended = faultlib.wait_gone(pid, NEVER_READS_GRACE)
    where = faultlib.wchan(pid)
    rst_close(sock)  # lets a stuck handler go, so the test cleans up
    assert ended, (f"{what}: the handler (PID {pid}) still runs {NEVER_READS_GRACE}s after "
                   f"the client stopped reading and sending, with a {NEVER_READS_TIMEOUT}s "
                   f"timeout; it sleeps in {where!r} (blocked in write(): no timeout on output)")
    return time.monotonic() - t0


@normal_pass_only
def test_smtp_client_never_reads_replies(ctx):
    env = {"PGMAIL_SMTP_TIMEOUT": NEVER_READS_TIMEOUT}
    with ctx.tcp(env) as srv:
        s = small_rcvbuf_socket(srv.port)
        pid = faultlib.wait_spawned(srv)
        sent = _flood_without_reading(s, b"NOOP\r\n" * 10000)
        assert sent > 0
        _handler_must_end(srv, pid, s, "SMTP NOOP flood, replies never read")
        assert srv.wait_handlers(10)


@normal_pass_only
def test_pop3_client_never_reads_replies(ctx):
    pop3lib.psql_stdin(ctx, pop3lib.insert_sql(
        [ALICE], "convert_to('Subject: big' || chr(13) || chr(10) || chr(13) || chr(10) ||"
                 " repeat(repeat('z', 78) || chr(13) || chr(10), 60000), 'UTF8')"))
    before = mailbox_ids(ctx, ALICE)
    env = {"PGMAIL_POP3_TIMEOUT": NEVER_READS_TIMEOUT}
    with pop3_tcp(ctx, env=env) as srv:
        s = small_rcvbuf_socket(srv.port)
        pid = srv.wait_spawned(1)
        s.sendall(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nDELE 1\r\nRSET\r\n".encode()
                  + b"RETR 1\r\n" * 4)
        time.sleep(1)  # the handler fills the socket buffers and blocks in write()
        _handler_must_end(srv, pid, s, "POP3 RETR of 4.8 MB, never read")
        assert srv.wait_handlers(10)
    assert mailbox_ids(ctx, ALICE) == before
    faultlib.wait_no_backends(ctx)


# ---------------------------------------------------------------------------------------
# The soak, short (tests/soak/soak.py runs it for minutes: make soak)

def test_soak_short(ctx):
    """About 8 s of parallel SMTP and POP3 sessions plus a slowloris round on a cluster of
    its own; normal pass only (the sanitizers add nothing the other tests do not see, and
    the time is better spent there)."""
    if ctx.san:
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak"))
    import soak
    res = soak.run(seconds=8, smtp_workers=6, pop3_workers=3, idle_clients=30,
                   idle_seconds=3, root=ctx.root, tmp=ctx.tmp, quiet=True)
    assert res.failed == 0, "soak checks failed:\n" + "\n".join(res.failures)
