"""pop3_robust: what pgmail-pop3d does when the world changes under a session: its database
connection lost between commands (the session ends, nothing changes, no silent new
connection), marked messages removed by someone else before QUIT (not an error), a message
whose account was deleted (a permanent answer), a client that resets the connection in the
middle of a RETR (logged as what it was), and the exit status by cause (admin/man/
pgmail-pop3d.8, EXIT STATUS). Real PostgreSQL, real TCP clients.
"""

import os
import re

import faultlib
import pop3lib
from faultlib import POP3D
from harness import PASSWORDS, crlf
from pop3lib import Pop3Client, expect_ok, pop3_tcp, stat

ALICE = "alice@example.test"
DAVE = "dave@example.test"  # made and removed by the test that needs an account to delete

SYS_TEMP_RETR = "-ERR [SYS/TEMP] Cannot read the message now, try again later"


def three(ctx, address=ALICE):
    for i in range(1, 4):
        pop3lib.insert_message(ctx, address, crlf(f"Subject: M{i}\n\nmessage {i}\n"))
    return pop3lib.uidls_in_db(ctx, address)


def totals_consistent(ctx):
    bad = ctx.psql(
        "SELECT a.address FROM accounts a LEFT JOIN (SELECT account_id, count(*) n,"
        " sum(size) s FROM mailbox GROUP BY account_id) b ON b.account_id = a.id"
        " WHERE a.message_count <> coalesce(b.n, 0) OR a.used_bytes <> coalesce(b.s, 0)").split()
    assert bad == [], f"account totals disagree with the mailbox rows: {bad}"
    orphans = ctx.psql("SELECT count(*) FROM messages m WHERE NOT EXISTS"
                       " (SELECT 1 FROM mailbox b WHERE b.message_id = m.id)").strip()
    assert orphans == "0", f"{orphans} messages rows without a mailbox row"


def remove_behind_the_session(ctx, uidls):
    """What an administrator's removal does: the mailbox rows (totals kept) and the bytes."""
    ids = ",".join(uidls)
    pop3lib.psql_stdin(ctx, (
        "BEGIN;"
        f" WITH d AS (DELETE FROM mailbox WHERE id IN ({ids}) RETURNING account_id, size)"
        " UPDATE accounts a SET message_count = a.message_count - x.n,"
        "   used_bytes = a.used_bytes - x.s"
        "   FROM (SELECT account_id, count(*) n, sum(size) s FROM d GROUP BY account_id) x"
        "  WHERE a.id = x.account_id;"
        " DELETE FROM messages m WHERE NOT EXISTS"
        "  (SELECT 1 FROM mailbox b WHERE b.message_id = m.id);"
        " COMMIT;\n"))


def log_events(srv, event):
    """The key=value fields of every `event` line the handlers logged."""
    out = []
    for ln in srv.log().splitlines():
        if f" event={event} " in ln + " ":
            out.append(dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", ln)))
    return out


# -- the database connection lost after login ------------------------------------------

def test_backend_terminated_between_two_retr_ends_the_session_and_changes_nothing(ctx):
    before = three(ctx)
    with pop3_tcp(ctx) as srv:
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 3"), "DELE 3")
        st, body = c.retr(1)
        expect_ok(st, "RETR 1")
        assert faultlib.terminate(ctx, POP3D) == 1
        # The next RETR must not read on a new connection outside the session's transaction
        # and mailbox lock: it says so and the session ends.
        st, _ = c.retr(2)
        assert st == SYS_TEMP_RETR, st
        assert c.closed(5), "session still open after its database connection was lost"
        c.close()
        assert srv.wait_handlers(10)
        # the mailbox is free again and nothing was removed
        with pop3lib.session(srv.port) as c2:
            assert stat(c2)[0] == 3
            expect_ok(c2.cmd("QUIT"), "QUIT")
        assert [e["reason"] for e in log_events(srv, "disconnect")][0] == "db-lost"
        aborted = [e for e in log_events(srv, "logout") if e.get("result") == "aborted"]
        assert [e["reason"] for e in aborted] == ["db-lost"], aborted
    assert pop3lib.uidls_in_db(ctx, ALICE) == before, "a session cut off removed mail"
    assert faultlib.backends(ctx, POP3D) == []


def test_backend_terminated_before_quit_removes_nothing(ctx):
    before = three(ctx)
    with pop3_tcp(ctx) as srv:
        c = pop3lib.session(srv.port)
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        assert faultlib.terminate(ctx, POP3D) == 1
        assert c.cmd("QUIT") == ("-ERR [SYS/TEMP] Some deleted messages not removed, "
                                 "try again later")
        assert c.closed(5)
        c.close()
    assert pop3lib.uidls_in_db(ctx, ALICE) == before
    totals_consistent(ctx)


# -- QUIT when marked messages vanished meanwhile -------------------------------------------

def quit_after_removal(ctx, vanished):
    """Messages 1 and 2 marked, the first `vanished` of them removed behind the session:
    QUIT removes what is left of the marked ones, commits and answers +OK."""
    uidls = three(ctx)
    with pop3_tcp(ctx) as srv, pop3lib.session(srv.port) as c:
        expect_ok(c.cmd("DELE 1"), "DELE 1")
        expect_ok(c.cmd("DELE 2"), "DELE 2")
        remove_behind_the_session(ctx, uidls[:vanished])
        assert c.cmd("QUIT") == "+OK pgmail POP3 server signing off (1 messages left)"
    assert pop3lib.uidls_in_db(ctx, ALICE) == uidls[2:], "a marked message is still there"
    totals_consistent(ctx)


def test_quit_when_every_marked_message_vanished_is_ok(ctx):
    quit_after_removal(ctx, 2)


def test_quit_when_some_marked_messages_vanished_removes_the_rest_and_is_ok(ctx):
    quit_after_removal(ctx, 1)


# -- RETR of a message that is gone; TOP's status line -------------------------------------

def test_retr_when_the_account_was_deleted_meanwhile_is_a_permanent_answer(ctx):
    ctx.ctl("user", "add", DAVE, stdin=(PASSWORDS[ALICE] + "\n").encode())
    try:
        three(ctx, DAVE)
        with pop3_tcp(ctx) as srv, Pop3Client(srv.port) as c:
            c.login(DAVE, PASSWORDS[ALICE])
            expect_ok(c.cmd("LIST 2"), "LIST 2")
            ctx.psql(f"DELETE FROM accounts WHERE address = '{DAVE}'")
            assert c.cmd("RETR 2") == "-ERR Message 2 no longer exists"
            assert c.cmd("TOP 1 0") == "-ERR Message 1 no longer exists"
            expect_ok(c.cmd("NOOP"), "NOOP: the session goes on")
            expect_ok(c.cmd("QUIT"), "QUIT")
    finally:
        ctx.psql(f"DELETE FROM accounts WHERE address = '{DAVE}'")
        ctx.psql("DELETE FROM messages m WHERE NOT EXISTS"
                 " (SELECT 1 FROM mailbox b WHERE b.message_id = m.id)")


def test_top_names_no_octet_count(ctx):
    pop3lib.insert_message(ctx, ALICE, crlf("Subject: T\n\n" + "line\n" * 50))
    with pop3_tcp(ctx) as srv, pop3lib.session(srv.port) as c:
        st, raw = c.multi("TOP 1 2")
        assert st == "+OK Top of message follows", st
        assert pop3lib.retr_bytes(raw) == crlf("Subject: T\n\nline\nline\n")
        expect_ok(c.cmd("QUIT"), "QUIT")


# -- the log of a session cut off in the middle of a RETR ----------------------------------

def test_reset_in_the_middle_of_retr_is_logged_as_such_with_an_aborted_logout(ctx):
    pop3lib.psql_stdin(ctx, pop3lib.insert_sql(
        [ALICE], "convert_to('Subject: big' || chr(13) || chr(10) || chr(13) || chr(10) ||"
                 " repeat(repeat('x', 78) || chr(13) || chr(10), 60000), 'UTF8')"))
    with pop3_tcp(ctx) as srv:
        c = pop3lib.session(srv.port)
        c.send("RETR 1\r\n")
        while len(c.buf) < 100000:
            assert c._fill(), "connection closed during RETR"
        c.abort()
        assert srv.wait_handlers(10)
        reasons = [e["reason"] for e in log_events(srv, "disconnect")]
        assert reasons and reasons[0] in ("write-failed", "reset"), reasons
        aborted = [e for e in log_events(srv, "logout") if e.get("result") == "aborted"]
        assert [e["reason"] for e in aborted] == reasons, aborted


# -- exit status ---------------------------------------------------------------------------

def test_exit_status_ok_temp_and_perm(ctx):
    pw = PASSWORDS[ALICE]
    script = f"USER {ALICE}\r\nPASS {pw}\r\nQUIT\r\n".encode()
    r = pop3lib.pop3d_pipe(ctx, script)
    assert r.rc == 0, r
    # the database unreachable: [SYS/TEMP], exit 111
    empty = os.path.join(ctx.tmp, "no-postgres-here")
    os.makedirs(empty, exist_ok=True)
    r = pop3lib.pop3d_pipe(ctx, script, env={"PGHOST": empty})
    assert r.lines[2] == "-ERR [SYS/TEMP] Service temporarily unavailable, try again later", r
    assert r.rc == 111, f"exit {r.rc} with the database unreachable"
    # a wrong password is no failure of the server's
    r = pop3lib.pop3d_pipe(ctx, f"USER {ALICE}\r\nPASS wrong\r\n".encode() + script)
    assert r.rc == 0, r
    # bad configuration: [SYS/PERM], exit 100
    r = pop3lib.pop3d_pipe(ctx, script, env={"PGMAIL_POP3_TIMEOUT": "soon"})
    assert r.lines == ["-ERR [SYS/PERM] Server configuration error"], r
    assert r.rc == 100, f"exit {r.rc} with a bad configuration"
