"""admin_check: pgmailctl check finds and purges orphaned messages (rows of messages that no
mailbox row references), and pgmailctl user del takes the same locks as a POP3 QUIT, so that
deleting an account while another account's session QUITs never leaves one behind (issue 12,
point 7). Real PostgreSQL, the real pgmailctl and a real pgmail-pop3d; locks held by psql
sessions force the interleaving that used to orphan a shared message.
"""

import subprocess
import time

import pop3lib
from faultlib import POP3D, PsqlSession

DAVE = "dave@example.test"  # made and deleted by the tests here; not a fixture
DAVE_PW = "dave-Secret-4"
ORPHANS = ("SELECT m.id FROM messages m"
           " WHERE NOT EXISTS (SELECT FROM mailbox b WHERE b.message_id = m.id) ORDER BY m.id")


def ids(ctx, sql):
    return [int(x) for x in ctx.psql(sql).split()]


def one_id(ctx, sql):
    got = ids(ctx, sql)
    assert len(got) == 1, (sql, got)
    return got[0]


def add_dave(ctx, alias=None):
    ctx.ctl("user", "del", DAVE, check=False)  # left over from an interrupted run
    ctx.ctl("user", "add", DAVE, stdin=(DAVE_PW + "\n").encode())
    if alias:
        ctx.ctl("alias", "add", alias, DAVE)
    return one_id(ctx, f"SELECT id FROM accounts WHERE address = '{DAVE}'")


def test_check_finds_and_purges_only_orphans(ctx):
    pop3lib.insert_message(ctx, "alice@example.test", b"kept 1\r\n")
    pop3lib.insert_message(ctx, ["alice@example.test", "bob@example.test"], b"kept 2\r\n")
    # Two orphans made by hand: a row stored without any mailbox row, and one whose only
    # mailbox row was deleted behind pgmail's back.
    ctx.psql("INSERT INTO messages (sender, session_id, body, size)"
             " VALUES ('s@remote.example', 'orphan-1', convert_to('lost 1', 'UTF8'), 6)")
    pop3lib.insert_message(ctx, "bob@example.test", b"lost 2, longer\r\n")
    lost = ids(ctx, ORPHANS) + [one_id(ctx, "SELECT max(id) FROM messages")]
    ctx.psql(f"DELETE FROM mailbox WHERE message_id = {lost[1]}")
    assert ids(ctx, ORPHANS) == lost
    before = ctx.psql("SELECT m.id, m.size, encode(m.body, 'hex'), b.id, b.account_id"
                      " FROM messages m JOIN mailbox b ON b.message_id = m.id ORDER BY b.id")
    assert len(before.splitlines()) == 3, before

    r = ctx.ctl("check", check=False)
    assert r.rc == 1, r
    out = r.out.decode().splitlines()
    assert [ln.split(":")[0] for ln in out] == [f"orphaned message {i}" for i in lost], out
    assert ": 6 octets, received " in out[0] and ": 16 octets, received " in out[1], out
    assert r.err.decode() == ("pgmailctl: 2 orphaned messages (22 octets) in no mailbox: "
                              "pgmailctl check --purge-orphans deletes them\n"), r.err
    assert ids(ctx, ORPHANS) == lost, "check without the flag deleted something"

    r = ctx.ctl("check", "--purge-orphans")
    assert [ln.split(":")[0] for ln in r.out.decode().splitlines()] == \
        [f"purged orphaned message {i}" for i in lost], r.out
    assert ids(ctx, ORPHANS) == []
    after = ctx.psql("SELECT m.id, m.size, encode(m.body, 'hex'), b.id, b.account_id"
                     " FROM messages m JOIN mailbox b ON b.message_id = m.id ORDER BY b.id")
    assert after == before, "the purge touched a message that a mailbox holds"
    assert ctx.message_count() == 2

    r = ctx.ctl("check")
    assert r.out == b"no orphaned messages\n" and r.err == b"", r


def test_check_usage(ctx):
    r = ctx.ctl("check", "--repair", check=False)
    assert r.rc == 2 and b'unknown option "--repair"' in r.err, r
    r = ctx.ctl("user", "list", "--purge-orphans", check=False)
    assert r.rc == 2 and b'unknown option "--purge-orphans"' in r.err, r
    r = ctx.ctl("check", "--help")
    assert r.rc == 0 and b"pgmailctl check [--purge-orphans]" in r.out, r


def wait_for_lock(ctx, app, timeout=15):
    """Wait until a backend of application app waits for a lock (a row or tuple lock here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = ctx.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pgmail_test'"
                     f" AND application_name = '{app}' AND wait_event_type = 'Lock'",
                     db="postgres").strip()
        if n != "0":
            return
        time.sleep(0.02)
    raise AssertionError(f"{app} did not wait for a lock within {timeout}s")


def test_user_del_against_concurrent_quit_leaves_no_orphan(ctx):
    # dave and bob share one message; bob's POP3 session deletes it and QUITs while dave is
    # deleted. Each side deletes its own mailbox row and then frees the message if nobody
    # else still references it. Two psql sessions hold locks so that the two transactions
    # interleave in the one order that used to lose the message:
    #   QUIT deletes bob's row and stops before freeing (message row held FOR SHARE);
    #   user del deletes dave's row, then stops before COMMIT (dave's alias row held);
    #   QUIT goes on: dave's row is still there for it, so it leaves the message; COMMIT;
    #   user del commits. Before the fix, user del had decided in the same statement as its
    #   delete, when bob's row was still there: nobody freed the message, an orphan.
    # Now user del locks the message row after its delete, as QUIT does, so it waits for the
    # QUIT and decides on a snapshot that sees bob's row gone: it frees the message.
    dave = add_dave(ctx, alias="dave-alias@example.test")
    pop3lib.insert_message(ctx, [DAVE, "bob@example.test"], b"shared by dave and bob\r\n")
    mid = one_id(ctx, "SELECT id FROM messages")
    ctl = None
    with pop3lib.pop3_tcp(ctx) as srv, PsqlSession(ctx.pgdir) as message_lock, \
            PsqlSession(ctx.pgdir) as alias_lock:
        try:
            message_lock.run(f"BEGIN; SELECT id FROM messages WHERE id = {mid} FOR SHARE")
            alias_lock.run(f"BEGIN; SELECT id FROM aliases WHERE account_id = {dave} FOR UPDATE")
            with pop3lib.Pop3Client(srv.port) as c:
                c.login("bob@example.test")
                pop3lib.expect_ok(c.cmd("DELE 1"), "DELE")
                c.send("QUIT\r\n")
                wait_for_lock(ctx, POP3D)  # bob's row deleted, the message not yet freed
                ctl = subprocess.Popen([ctx.ctl_bin, "user", "del", DAVE], env=ctx.env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                wait_for_lock(ctx, "pgmailctl")
                message_lock.run("COMMIT")
                quit_reply = c.status()
            alias_lock.run("COMMIT")
            out, err = ctl.communicate(timeout=30)
        finally:
            if ctl and ctl.poll() is None:
                ctl.kill()
                ctl.wait()
    if ctx.san:
        ctx.check_san(err, "pgmailctl user del")
    assert ctl.returncode == 0, err
    assert out == b"removed dave@example.test from alias dave-alias@example.test\n", out
    pop3lib.expect_ok(quit_reply, "QUIT")
    assert ids(ctx, ORPHANS) == [], "user del and QUIT left the shared message behind"
    assert ctx.message_count() == 0 and ctx.mailbox_count() == 0
    assert ctx.psql(f"SELECT count(*) FROM accounts WHERE id = {dave}").strip() == "0"
    assert ctx.ctl("check").out == b"no orphaned messages\n"


def test_user_del_keeps_messages_others_hold(ctx):
    # The other half of the rule: what another mailbox still holds stays, byte for byte.
    add_dave(ctx)
    pop3lib.insert_message(ctx, [DAVE, "bob@example.test"], b"shared\r\n")
    pop3lib.insert_message(ctx, DAVE, b"dave's own\r\n")
    r = ctx.ctl("user", "del", DAVE)
    assert r.out == b"", r
    assert [m.body for m in ctx.messages()] == [b"shared\r\n"]
    assert ctx.messages()[0].recipients == ["bob@example.test"]
    assert ids(ctx, ORPHANS) == []
