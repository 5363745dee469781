"""pop3_session: pgmail-pop3d behind systemd-socket-activate on 127.0.0.1, driven by a raw
byte-exact client (pop3lib.Pop3Client): the maildrop lock, the snapshot taken at login,
DELE/RSET/QUIT and what an aborted session leaves behind, UIDLs, sizes against RETR octets,
pipelining, authentication (failure delay, three strikes, remote peers), the bounds (idle
timeout, error limit, 50 MiB RETR in bounded memory). Mail goes in through pgmail-smtpd
(so stored bodies carry Return-Path and Received), or with SQL where volume matters.

test_pop3_pgbouncer.py runs these tests again with the handler behind PgBouncer.
"""

import hashlib
import os
import re
import signal
import subprocess
import time

import faultlib
import harness
import pop3lib
from harness import PASSWORDS, crlf, plain_blob
from pop3lib import (SENDER, Pop3Client, deliver, expect_err, expect_ok, listing, pop3_tcp,
                     session, stat, stored_bodies)

ALICE = "alice@example.test"
BOB = "bob@example.test"

REQUIRED_CAPA = ["TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]


def message(i, extra=""):
    return crlf(f"From: Sender <{SENDER}>\nTo: Alice <{ALICE}>\nSubject: message {i}\n"
                f"Message-ID: <m{i}@remote.example>\n\nBody of message {i}.\n{extra}")


def fill(ctx, n, rcpts=(ALICE,)):
    """Deliver n messages through pgmail-smtpd; returns the originals."""
    out = []
    for i in range(1, n + 1):
        m = message(i)
        deliver(ctx, SENDER, list(rcpts), m)
        out.append(m)
    return out


def capa(c):
    st, lines = c.lines("CAPA")
    expect_ok(st, "CAPA")
    return lines


def wait_gone(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def login_within(port, seconds, user=ALICE):
    """Log in as user, retrying an [IN-USE] answer until seconds have passed. Returns
    (client, seconds it took); fails with the last answer."""
    t0 = time.monotonic()
    while True:
        c = Pop3Client(port)
        expect_ok(c.cmd(f"USER {user}"), "USER")
        st = c.cmd(f"PASS {PASSWORDS[user]}")
        if st and st.startswith("+OK"):
            return c, time.monotonic() - t0
        c.cmd("QUIT")
        c.close()
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"login still refused {seconds}s later: {st!r}")
        time.sleep(0.05)


# -- CAPA and the greeting -----------------------------------------------------------------

def test_capa_lists_top_uidl_user_respcodes_authrespcode_pipelining_sasl_plain_implementation(ctx):
    with pop3_tcp(ctx) as srv, Pop3Client(srv.port) as c:
        lines = capa(c)
        names = [ln.split(" ", 1)[0].upper() for ln in lines]
        missing = [x for x in REQUIRED_CAPA + ["SASL", "IMPLEMENTATION"] if x not in names]
        assert not missing, f"CAPA before login lacks {missing}: {lines}"
        sasl = [ln for ln in lines if ln.upper().startswith("SASL ")]
        assert "PLAIN" in sasl[0].upper().split()[1:], f"SASL line without PLAIN: {sasl}"
        assert len(set(names)) == len(names), f"CAPA lists a capability twice: {lines}"
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_greeting_has_no_apop_timestamp_and_apop_is_refused(ctx):
    with pop3_tcp(ctx) as srv, Pop3Client(srv.port) as c:
        assert not re.search(r"<[^>]*@[^>]*>", c.greeting), (
            f"greeting carries an APOP timestamp: {c.greeting!r}")
        assert "APOP" not in [ln.upper() for ln in capa(c)]
        expect_err(c.cmd(f"APOP {ALICE} c4c9334bac560ecc979e58001b3e22fb"), "APOP")


def test_capa_remote_peer_lists_neither_user_nor_sasl(ctx):
    with pop3_tcp(ctx, env={"PGMAIL_PEER_OVERRIDE": "192.0.2.1"}) as srv, \
            Pop3Client(srv.port) as c:
        lines = capa(c)
        names = [ln.split(" ", 1)[0].upper() for ln in lines]
        assert "USER" not in names and "SASL" not in names, (
            f"CAPA offers passwords to a remote peer without TLS: {lines}")
        for x in ["TOP", "UIDL", "RESP-CODES", "PIPELINING"]:
            assert x in names, f"CAPA for a remote peer lacks {x}: {lines}"
        expect_err(c.cmd(f"USER {ALICE}"), "USER from a remote peer")
        expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS from a remote peer")
        expect_err(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"),
                   "AUTH PLAIN from a remote peer")
        expect_err(c.cmd("STAT"), "STAT after refused logins")


def test_capa_remote_peer_with_allow_plaintext_auth_lists_user_and_sasl(ctx):
    env = {"PGMAIL_PEER_OVERRIDE": "192.0.2.1", "PGMAIL_ALLOW_PLAINTEXT_AUTH": "yes"}
    with pop3_tcp(ctx, env=env) as srv, Pop3Client(srv.port) as c:
        names = [ln.split(" ", 1)[0].upper() for ln in capa(c)]
        assert "USER" in names and "SASL" in names, names
        expect_ok(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "AUTH PLAIN")
        expect_ok(c.cmd("QUIT"), "QUIT")


# -- authentication --------------------------------------------------------------------------

def test_auth_failure_delay_same_for_unknown_user_and_wrong_password(ctx):
    delay = 0.3
    times = {"unknown user": [], "wrong password": []}
    order = [("unknown user", "nobody@example.test"), ("wrong password", ALICE)]
    with pop3_tcp(ctx, env={"PGMAIL_AUTH_FAILURE_DELAY_MS": str(int(delay * 1000))}) as srv:
        for rnd in range(2):  # two failures per connection (the third would close it)
            with Pop3Client(srv.port) as c:
                for kind, user in (order if rnd % 2 == 0 else order[::-1]):
                    expect_ok(c.cmd(f"USER {user}"), f"USER ({kind})")
                    t0 = time.monotonic()
                    st = c.cmd("PASS not-the-password")
                    times[kind].append(time.monotonic() - t0)
                    expect_err(st, f"PASS ({kind})", "-ERR [AUTH]")
                c.cmd("QUIT")
    for kind, ts in times.items():
        assert min(ts) >= delay * 0.9, f"{kind}: -ERR [AUTH] after {min(ts):.3f}s, " \
                                       f"before the {delay}s failure delay"
    # Scheduling noise only ever adds time, so the fastest answers are compared.
    mu, mw = min(times["unknown user"]), min(times["wrong password"])
    assert abs(mu - mw) < 0.1, (f"failure answered after {mu:.3f}s for an unknown user but "
                                f"{mw:.3f}s for a wrong password: {times}")


def test_auth_third_failure_closes_connection(ctx):
    with pop3_tcp(ctx) as srv, Pop3Client(srv.port) as c:
        for i in range(2):
            expect_ok(c.cmd(f"USER {ALICE}"), "USER")
            expect_err(c.cmd("PASS wrong"), f"failure {i + 1}", "-ERR [AUTH]")
        expect_ok(c.cmd(f"USER {ALICE}"), "USER")
        c.send(f"PASS wrong\r\nUSER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\n")
        expect_err(c.status(), "failure 3", "-ERR [AUTH]")
        assert c.closed(5), "the connection stayed open after the third failed login"
        assert not c.buf, f"answers after the third failure: {bytes(c.buf)!r}"


def test_auth_plain_continuation_and_star_cancel_over_tcp(ctx):
    fill(ctx, 1)
    with pop3_tcp(ctx) as srv, Pop3Client(srv.port) as c:
        st = c.cmd("AUTH PLAIN")
        assert st is not None and st.startswith("+"), f"AUTH PLAIN: expected '+ ', got {st!r}"
        expect_err(c.cmd("*"), "'*' cancelling AUTH")
        assert c.cmd("AUTH PLAIN").startswith("+")
        expect_ok(c.cmd(plain_blob(ALICE, PASSWORDS[ALICE])), "AUTH PLAIN continuation")
        assert stat(c)[0] == 1
        expect_ok(c.cmd("QUIT"), "QUIT")


# -- the maildrop lock --------------------------------------------------------------------------

def test_lock_second_concurrent_login_gets_in_use(ctx):
    fill(ctx, 2)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        with Pop3Client(srv.port) as b:
            expect_ok(b.cmd(f"USER {ALICE}"), "USER (second session)")
            expect_err(b.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS while alice's mailbox is "
                       "open in another session", "-ERR [IN-USE]")
            expect_err(b.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"),
                       "AUTH PLAIN while the mailbox is open elsewhere", "-ERR [IN-USE]")
            expect_err(b.cmd("STAT"), "STAT after [IN-USE] (still AUTHORIZATION)")
            # the same account, spelt in capitals
            expect_ok(b.cmd(f"USER {ALICE.upper()}"), "USER")
            expect_err(b.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS as ALICE@EXAMPLE.TEST while "
                       "alice's mailbox is open", "-ERR [IN-USE]")
        with session(srv.port, BOB) as c:  # the lock is per mailbox
            assert stat(c) == (0, 0)
            expect_ok(c.cmd("QUIT"), "bob QUIT")
        assert stat(a)[0] == 2, "the first session suffered from the refused second one"
        expect_ok(a.cmd("QUIT"), "QUIT")
        a.close()
        with session(srv.port) as c:  # released by QUIT
            assert stat(c)[0] == 2
            expect_ok(c.cmd("QUIT"), "QUIT")


def test_lock_simultaneous_logins_exactly_one_wins(ctx):
    fill(ctx, 1)
    with pop3_tcp(ctx) as srv:
        for rnd in range(3):
            clients = [Pop3Client(srv.port) for _ in range(5)]
            for c in clients:
                c.send(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\n")
            answers = []
            for c in clients:
                expect_ok(c.status(), "USER")
                answers.append(c.status())
            won = [a for a in answers if a and a.startswith("+OK")]
            assert len(won) == 1, f"round {rnd}: {len(won)} of 5 simultaneous logins got the " \
                                  f"mailbox: {answers}"
            for a in answers:
                if a is not won[0]:
                    expect_err(a, "a losing simultaneous login", "-ERR [IN-USE]")
            for c in clients:
                c.cmd("QUIT")
                c.close()
            assert srv.wait_handlers(5)


def test_lock_released_at_once_when_handler_killed(ctx):
    fill(ctx, 2)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        pid = srv.wait_spawned(1)
        expect_ok(a.cmd("DELE 1"), "DELE 1")
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid), f"handler {pid} survived SIGKILL"
        c, took = login_within(srv.port, 1.0)
        assert took < 1.0, f"login refused for {took:.2f}s after the session was killed"
        assert stat(c)[0] == 2, "DELE of a killed session removed a message"
        expect_ok(c.cmd("QUIT"), "QUIT")
        c.close()
        a.close()
    assert ctx.mailbox_count(ALICE) == 2


def test_lock_released_at_once_when_client_drops_connection(ctx):
    fill(ctx, 1)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        a.abort()
        c, took = login_within(srv.port, 1.0)
        assert took < 1.0, f"login refused for {took:.2f}s after the client dropped"
        expect_ok(c.cmd("QUIT"), "QUIT")
        c.close()


# -- what survives a session ---------------------------------------------------------------------

def test_dele_then_killed_client_keeps_messages(ctx):
    fill(ctx, 3)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        for n in (1, 2, 3):
            expect_ok(a.cmd(f"DELE {n}"), f"DELE {n}")
        assert stat(a) == (0, 0)
        a.abort()
        assert srv.wait_handlers(5), "the handler did not exit after the client dropped"
    assert ctx.mailbox_count(ALICE) == 3, "DELE without QUIT removed messages"
    assert ctx.message_count() == 3


def test_dele_then_idle_timeout_keeps_messages_and_closes(ctx):
    fill(ctx, 2)
    with pop3_tcp(ctx, env={"PGMAIL_POP3_TIMEOUT": "2"}) as srv:
        a = session(srv.port)
        expect_ok(a.cmd("DELE 1"), "DELE 1")
        t0 = time.monotonic()
        closed = a.closed(8)
        took = time.monotonic() - t0
        assert closed, "no close 8s into a 2s idle timeout (PGMAIL_POP3_TIMEOUT=2)"
        assert took >= 1.5, f"closed after {took:.2f}s, before the 2s idle timeout"
        a.close()
        assert srv.wait_handlers(5)
    assert ctx.mailbox_count(ALICE) == 2, "a session ended by the idle timeout removed mail"


def test_idle_timeout_closes_before_login(ctx):
    with pop3_tcp(ctx, env={"PGMAIL_POP3_TIMEOUT": "2"}) as srv, Pop3Client(srv.port) as c:
        t0 = time.monotonic()
        closed = c.closed(8)
        took = time.monotonic() - t0
        assert closed, "no close 8s into a 2s idle timeout in AUTHORIZATION"
        assert 1.5 <= took <= 5, f"closed after {took:.2f}s with PGMAIL_POP3_TIMEOUT=2"


def test_dele_quit_removes_rows_bytes_and_used_bytes(ctx):
    fill(ctx, 3)
    sizes = [int(x) for x in ctx.psql("SELECT size FROM mailbox ORDER BY id").split()]
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        st = expect_ok(c.cmd("QUIT"), "QUIT")
        assert c.closed(5), f"still open after {st!r}"
    assert ctx.mailbox_count(ALICE) == 2
    assert ctx.message_count() == 2, "the message's bytes stayed after its only mailbox row went"
    assert ctx.used_bytes(ALICE) == sizes[0] + sizes[2], (
        f"used_bytes {ctx.used_bytes(ALICE)} after deleting message 2 of {sizes}")
    count = ctx.psql(f"SELECT message_count FROM accounts WHERE address = '{ALICE}'").strip()
    assert count == "2", f"message_count {count} after deleting 1 of 3"


def test_dele_rset_quit_keeps_messages(ctx):
    fill(ctx, 2)
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        expect_ok(c.cmd("RSET"), "RSET")
        expect_ok(c.cmd("QUIT"), "QUIT")
    assert ctx.mailbox_count(ALICE) == 2, "RSET did not unmark the messages"


def test_shared_message_bytes_removed_only_with_last_mailbox_entry(ctx):
    original = crlf("Subject: for alice and bob\n\nOne copy of the bytes, two mailboxes.\n"
                    ".a line with a leading dot\n")
    deliver(ctx, SENDER, [ALICE, BOB], original)
    assert ctx.message_count() == 1 and ctx.mailbox_count() == 2
    stored = ctx.messages()[0].body
    with pop3_tcp(ctx) as srv:
        with session(srv.port, ALICE) as c:
            expect_ok(c.cmd("DELE 1"), "alice DELE 1")
            expect_ok(c.cmd("QUIT"), "alice QUIT")
        assert ctx.message_count() == 1, "alice's deletion removed the bytes bob still needs"
        with session(srv.port, BOB) as c:
            st, body = c.retr(1)
            expect_ok(st, "bob RETR 1")
            assert body == stored, "bob's RETR differs from the stored message"
            harness.check_stored(body, SENDER, original)
            expect_ok(c.cmd("DELE 1"), "bob DELE 1")
            expect_ok(c.cmd("QUIT"), "bob QUIT")
    assert ctx.mailbox_count() == 0
    assert ctx.message_count() == 0, "the message's bytes outlived its last mailbox entry"
    assert ctx.used_bytes(ALICE) == 0 and ctx.used_bytes(BOB) == 0


def test_shared_messages_both_mailboxes_quit_at_once_leave_no_orphan_bytes(ctx):
    with pop3_tcp(ctx) as srv:
        for rnd in range(2):
            for i in range(3):
                deliver(ctx, SENDER, [ALICE, BOB], message(10 * rnd + i))
            a, b = session(srv.port, ALICE), session(srv.port, BOB)
            for c in (a, b):
                for n in range(1, 4):
                    expect_ok(c.cmd(f"DELE {n}"), f"DELE {n}")
            a.send("QUIT\r\n")
            b.send("QUIT\r\n")
            expect_ok(a.status(), "alice QUIT (at the same time as bob's)")
            expect_ok(b.status(), "bob QUIT (at the same time as alice's)")
            a.close()
            b.close()
            assert srv.wait_handlers(10)
            assert ctx.mailbox_count() == 0
            left = ctx.message_count()
            assert left == 0, f"round {rnd}: {left} messages rows left without any mailbox " \
                              "entry after both mailboxes removed them at once"


# -- the snapshot ------------------------------------------------------------------------------

def next_session_shows(srv, count, last):
    """A new session sees count messages, the last of them "message <last>"."""
    with session(srv.port) as c:
        n, _ = stat(c)
        assert n == count, f"next session shows {n} messages, expected {count}"
        st, body = c.retr(count)
        expect_ok(st, f"RETR {count}")
        assert f"Subject: message {last}\r\n".encode() in body, (
            f"message {count} is not message {last}, the last to arrive")
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_snapshot_new_mail_hidden_until_next_session_and_delivery_not_delayed(ctx):
    fill(ctx, 2)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        before = (stat(a), listing(a, "LIST"), listing(a, "UIDL"))
        took = deliver(ctx, SENDER, [ALICE], message(3), timeout=30)
        assert took < 3, f"SMTP delivery into an open mailbox took {took:.2f}s"
        after = (stat(a), listing(a, "LIST"), listing(a, "UIDL"))
        assert after == before, f"the session's view changed: {before} -> {after}"
        expect_err(a.cmd("RETR 3"), "RETR 3 (arrived during the session)")
        expect_ok(a.cmd("DELE 1"), "DELE 1")
        expect_ok(a.cmd("QUIT"), "QUIT")
        a.close()
        next_session_shows(srv, 2, 3)  # old 2 (1 deleted), new 3


def test_snapshot_mail_arriving_before_the_list_is_read_stays_hidden(ctx):
    # The login reads the account's totals and highest mailbox id only; the list is read
    # on the first command that numbers messages. Mail delivered in between must not
    # appear in it (nor change STAT), and the next session sees it.
    fill(ctx, 2)
    with pop3_tcp(ctx) as srv:
        a = session(srv.port)
        deliver(ctx, SENDER, [ALICE], message(3), timeout=30)
        deliver(ctx, SENDER, [ALICE], message(4), timeout=30)
        n, octets = stat(a)
        assert n == 2, f"STAT after two deliveries into the open session: {n} messages"
        sizes = listing(a, "LIST")
        assert sorted(sizes) == [1, 2] and sorted(listing(a, "UIDL")) == [1, 2], sizes
        assert sum(int(v) for v in sizes.values()) == octets, f"LIST {sizes} vs STAT {octets}"
        expect_err(a.cmd("RETR 3"), "RETR 3 (arrived after login)")
        expect_ok(a.cmd("DELE 2"), "DELE 2")
        assert stat(a)[0] == 1
        expect_ok(a.cmd("QUIT"), "QUIT")
        a.close()
        next_session_shows(srv, 3, 4)  # old 1 (2 deleted), new 3 and 4


def test_totals_that_disagree_with_the_rows_lose_to_the_rows(ctx):
    # Totals written by something that bypassed pgmail: the greeting says what the account
    # row says, but numbering and the listing follow the rows, and nothing breaks.
    fill(ctx, 3)
    ctx.psql(f"UPDATE accounts SET message_count = 5 WHERE address = '{ALICE}'")
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        assert len(listing(c, "UIDL")) == 3
        assert stat(c)[0] == 3, "STAT after the list was read follows the rows"
        expect_err(c.cmd("RETR 4"), "RETR 4 of 3 rows")
        st, _ = c.retr(3)
        expect_ok(st, "RETR 3")
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_messages_numbered_in_arrival_order(ctx):
    fill(ctx, 4)
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        for n in range(1, 5):
            st, body = c.retr(n)
            expect_ok(st, f"RETR {n}")
            assert f"Subject: message {n}\r\n".encode() in body, (
                f"RETR {n} is not the {n}th message to arrive: {body[:300]!r}")
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_uidl_unique_stable_across_sessions_never_reused(ctx):
    fill(ctx, 3)
    seen = set()
    with pop3_tcp(ctx) as srv:
        with session(srv.port) as c:
            first = listing(c, "UIDL")
            for n, uid in first.items():
                assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid), f"UIDL {uid!r} (RFC 1939 7)"
                st = c.cmd(f"UIDL {n}")
                assert st == f"+OK {n} {uid}", f"UIDL {n} is {st!r}, listing says {uid}"
            assert len(set(first.values())) == 3, f"UIDLs not unique: {first}"
            expect_ok(c.cmd("QUIT"), "QUIT")
        seen |= set(first.values())
        with session(srv.port) as c:
            second = listing(c, "UIDL")
            assert second == first, f"UIDLs changed between sessions: {first} -> {second}"
            expect_ok(c.cmd("DELE 3"), "DELE 3")  # the newest: a max+1 scheme would reuse it
            expect_ok(c.cmd("DELE 1"), "DELE 1")
            expect_ok(c.cmd("QUIT"), "QUIT")
        deliver(ctx, SENDER, [ALICE], message(4))
        with session(srv.port) as c:
            third = listing(c, "UIDL")
            assert third[1] == first[2], f"message 2's UIDL changed: {first} -> {third}"
            assert third[2] not in seen, (f"the new message got UIDL {third[2]!r}, already "
                                          f"used by a message of {sorted(seen)}")
            expect_ok(c.cmd("QUIT"), "QUIT")


# -- sizes, RETR, TOP ----------------------------------------------------------------------------

def test_list_and_stat_sizes_equal_retr_octets(ctx):
    bodies = [
        crlf("Subject: dots\n\n.\n..\n.x\nend\n"),
        crlf("Subject: 8bit\nContent-Type: text/plain; charset=utf-8\n\n"
             "Grüße aus Köln, naïve café ☕\n\n\nTwo blank lines above.\n"),
        crlf("Subject: long line\n\n" + "y" * 3000 + "\n.\n"),
        crlf("Subject: one line\n\nx\n"),
    ]
    for b in bodies:
        deliver(ctx, SENDER, [ALICE], b)
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        count, total = stat(c)
        sizes = listing(c, "LIST")
        assert count == len(bodies) and sorted(sizes) == list(range(1, count + 1)), sizes
        got_total = 0
        for n in range(1, count + 1):
            st, body = c.retr(n)
            expect_ok(st, f"RETR {n}")
            assert int(sizes[n]) == len(body), (
                f"LIST says message {n} has {sizes[n]} octets, RETR sent {len(body)}")
            single = c.cmd(f"LIST {n}")
            assert single == f"+OK {n} {len(body)}", f"LIST {n}: {single!r}"
            got_total += len(body)
        assert total == got_total, f"STAT says {total} octets, RETR sent {got_total}"
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_retr_returns_whole_stored_message_with_return_path_and_received(ctx):
    original = crlf("From: Sender <sender@remote.example>\nTo: alice@example.test\n"
                    "Subject: whole\n\nfirst line\n.dot line\n..two dots\n\nlast line\n")
    deliver(ctx, SENDER, [ALICE], original)
    stored = stored_bodies(ctx, ALICE)[0]
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        st, raw = c.multi("RETR 1")
        expect_ok(st, "RETR 1")
        assert b"\r\n..dot line\r\n" in raw and b"\r\n...two dots\r\n" in raw, (
            f"RETR does not dot-stuff: {raw!r}")
        body = pop3lib.retr_bytes(raw)
        assert body == stored, f"RETR sent {body!r}, stored is {stored!r}"
        harness.check_stored(body, SENDER, original, "client.example")
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_top_n_0_sends_header_and_blank_line_only(ctx):
    original = crlf("Subject: top\nX-Two: 2\n\nbody line 1\n.body line 2\n")
    deliver(ctx, SENDER, [ALICE], original)
    stored = stored_bodies(ctx, ALICE)[0]
    header = stored[:stored.index(b"\r\n\r\n") + 4]
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        st, raw = c.multi("TOP 1 0")
        expect_ok(st, "TOP 1 0")
        assert pop3lib.retr_bytes(raw) == header, f"TOP 1 0 sent {raw!r}, header is {header!r}"
        st, raw = c.multi("TOP 1 2")
        expect_ok(st, "TOP 1 2")
        assert raw == header + b"body line 1\r\n..body line 2\r\n", f"TOP 1 2 sent {raw!r}"
        expect_ok(c.cmd("QUIT"), "QUIT")


# -- pipelining ---------------------------------------------------------------------------------

def test_pipelined_commands_in_one_write_answered_in_order(ctx):
    fill(ctx, 2)
    stored = stored_bodies(ctx, ALICE)
    with pop3_tcp(ctx) as srv:
        c = Pop3Client(srv.port, greet=False)
        c.send(f"CAPA\r\nUSER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nSTAT\r\nLIST\r\nUIDL 2\r\n"
               "RETR 1\r\nTOP 2 0\r\nNOOP\r\nBOGUS\r\nDELE 1\r\nLIST 1\r\nRSET\r\nLIST 1\r\n"
               "RETR 2\r\nQUIT\r\n")
        expect_ok(c.status(), "greeting")
        expect_ok(c.status(), "CAPA")
        c.data()
        expect_ok(c.status(), "USER")
        expect_ok(c.status(), "PASS")
        total = len(stored[0]) + len(stored[1])
        assert c.status().startswith(f"+OK 2 {total}"), "STAT"
        expect_ok(c.status(), "LIST")
        assert c.data() == f"1 {len(stored[0])}\r\n2 {len(stored[1])}\r\n".encode(), "LIST"
        assert re.match(r"\+OK 2 \S+$", c.status()), "UIDL 2"
        expect_ok(c.status(), "RETR 1")
        assert pop3lib.retr_bytes(c.data()) == stored[0], "RETR 1"
        expect_ok(c.status(), "TOP 2 0")
        top = pop3lib.retr_bytes(c.data())
        assert stored[1].startswith(top) and top.endswith(b"\r\n\r\n"), "TOP 2 0"
        expect_ok(c.status(), "NOOP")
        expect_err(c.status(), "BOGUS")
        expect_ok(c.status(), "DELE 1")
        expect_err(c.status(), "LIST 1 after DELE 1")
        expect_ok(c.status(), "RSET")
        assert c.status() == f"+OK 1 {len(stored[0])}", "LIST 1 after RSET"
        expect_ok(c.status(), "RETR 2")
        assert pop3lib.retr_bytes(c.data()) == stored[1], "RETR 2"
        expect_ok(c.status(), "QUIT")
        assert c.closed(5) and not c.buf, f"more after QUIT: {bytes(c.buf)!r}"
        c.close()
    assert ctx.mailbox_count(ALICE) == 2


# -- bounds ----------------------------------------------------------------------------------

def test_ten_protocol_errors_close_connection(ctx):
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        for i in range(9):
            expect_err(c.cmd(f"BOGUS{i}"), f"error {i + 1}")
        expect_ok(c.cmd("NOOP"), "NOOP after nine errors")
        expect_err(c.cmd("BOGUS"), "error 10")
        assert c.closed(5), "the connection stayed open after ten protocol errors"


def test_overlong_command_line_refused_session_goes_on(ctx):
    fill(ctx, 1)
    with pop3_tcp(ctx) as srv, session(srv.port) as c:
        expect_err(c.cmd("LIST " + "1" * 5000), "a 5007-octet command line")
        st = c.cmd("LIST 1")
        assert st is not None and st.startswith("+OK 1 "), (
            f"out of step after an overlong line: LIST 1 answered {st!r}")
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_retr_50mib_peak_rss_under_20mib(ctx):
    """Runs in the normal pass only: ASan's shadow memory says nothing about the handler's."""
    if ctx.san:
        return
    block = ("." + "a" * 77 + "\r\n" + "b" * 78 + "\r\n")  # 160 octets, one line dot-led
    reps = 50 * 1024 * 1024 // len(block)
    head = "Subject: fifty MiB\r\nFrom: sender@remote.example\r\n\r\n"
    pop3lib.psql_stdin(ctx, "SET synchronous_commit = off;\n" + pop3lib.insert_sql(
        [ALICE], f"convert_to('{head}' || repeat('{block}', {reps}), 'UTF8')"), timeout=300)
    size, digest = ctx.psql(
        "SELECT size, encode(sha256(body), 'hex') FROM messages").strip().split("|")
    size = int(size)
    assert size >= 50 * 1024 * 1024
    p = subprocess.Popen([pop3lib.pop3d_bin(ctx)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=pop3lib.pop3_env(ctx))
    try:
        p.stdin.write(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nRETR 1\r\n".encode())
        p.stdin.flush()
        out = bytearray()
        peak = 0
        fd = p.stdout.fileno()
        reads = 0
        while not out.endswith(b"\r\n.\r\n"):
            chunk = os.read(fd, 256 * 1024)
            if not chunk:
                break
            out += chunk
            reads += 1
            if reads % 16 == 0:
                peak = max(peak, faultlib.vm_hwm(p.pid))
                time.sleep(0.002)  # a slow reader: the handler must wait, not buffer
        peak = max(peak, faultlib.vm_hwm(p.pid))
        p.stdin.write(b"QUIT\r\n")
        p.stdin.close()
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = bytes(out)
    pos = 0
    status = []
    for _ in range(4):  # greeting, USER, PASS, RETR
        end = out.index(b"\r\n", pos)
        status.append(out[pos:end])
        pos = end + 2
    assert status[3].startswith(b"+OK"), f"RETR 1: {status}"
    assert out.endswith(b"\r\n.\r\n"), f"RETR 1 did not end with '.': {out[-100:]!r}"
    raw = out[pos:-3]
    body = pop3lib.retr_bytes(raw)
    assert len(body) == size, f"RETR sent {len(body)} octets of a {size}-octet message"
    assert hashlib.sha256(body).hexdigest() == digest, (
        "RETR of 50 MiB differs from the stored message")
    assert 0 < peak < 20 * 1024, f"pgmail-pop3d's peak RSS was {peak} KiB for a RETR of " \
                                 f"{size >> 20} MiB (limit 20 MiB)"
