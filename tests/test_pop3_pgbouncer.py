"""pop3_pgbouncer: the POP3 suite again, with pgmail-pop3d talking to PostgreSQL through
PgBouncer in transaction pooling mode.

Each test starts Debian's pgbouncer (pop3lib.PgBouncer: its own configuration and auth file
in a temporary directory, a free 127.0.0.1 port, pool_mode = transaction, in front of the
test PostgreSQL's Unix socket), points the handler's PGHOST/PGPORT at it and runs one test
of test_pop3_session.py, test_pop3_clients.py or test_pop3_transcripts.py; the tests
themselves still read PostgreSQL directly, and pgmail-smtpd still delivers directly. Under
transaction pooling, server connections pass between clients at every transaction end: a
maildrop lock held at session level would leak to the next client of that server
connection, so the lock tests here are the ones that matter.

The 50 MiB RETR test and the two tests that never reach the database run only directly;
the transcripts run written whole only. To keep the POP3 part of `make test` within its
time budget, the [san] pass runs only the two pgbouncer_* tests below through PgBouncer;
there the session.*, clients.* and transcripts.* variants pass without running: the
sanitizers see the same handler code in the direct runs, and the way to the database is
checked in the normal pass.
"""

import importlib
import time

import pop3lib
from harness import CAROL_QUOTA, PASSWORDS
from pop3lib import Pop3Client, expect_ok, pop3_tcp, session

# Not again through PgBouncer: the memory test, and two that never reach the database.
SKIP = {"retr_50mib_peak_rss_under_20mib", "idle_timeout_closes_before_login",
        "greeting_has_no_apop_timestamp_and_apop_is_refused"}
MODULES = ("test_pop3_session", "test_pop3_clients", "test_pop3_transcripts")


class ViaBouncer:
    """ctx as the tests know it, with pop3_db_env sending pgmail-pop3d to PgBouncer."""

    def __init__(self, ctx, bouncer):
        self._ctx = ctx
        self.pop3_db_env = bouncer.env

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def through_bouncer(fn):
    def run(ctx):
        if ctx.san:
            return  # see the module comment: the normal pass covers this
        with pop3lib.PgBouncer(ctx) as b:
            try:
                fn(ViaBouncer(ctx, b))
            finally:
                ctx.stop_all()  # the handlers end before PgBouncer does
    return run


def test_pgbouncer_open_session_holds_one_server_connection_until_quit(ctx):
    """The handler really goes through PgBouncer: while a session is open it holds one
    server connection (its transaction); QUIT gives it back."""
    with pop3lib.PgBouncer(ctx) as b:
        with pop3_tcp(ViaBouncer(ctx, b)) as srv:
            a = session(srv.port)
            pools = b.show_pools()
            assert pools.get("sv_active") == 1 and pools.get("cl_active") == 1, (
                f"one logged-in session through PgBouncer, SHOW POOLS says {pools}")
            assert pools.get("pool_mode") == "transaction", pools
            expect_ok(a.cmd("QUIT"), "QUIT")
            a.close()
            assert srv.wait_handlers(5)
            deadline = time.monotonic() + 3
            while b.show_pools().get("sv_active") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not b.show_pools().get("sv_active"), (
                f"server connection still active after QUIT: {b.show_pools()}")


def test_pgbouncer_quit_leaves_no_lock_on_pooled_server_connection(ctx):
    """A maildrop lock that outlived the session's transaction (a session-level lock) would
    stay on the server connection PgBouncer hands to the next client."""
    with pop3lib.PgBouncer(ctx) as b:
        with pop3_tcp(ViaBouncer(ctx, b)) as srv:
            with session(srv.port) as a:
                expect_ok(a.cmd("QUIT"), "QUIT")
            assert srv.wait_handlers(5)
            locks = ctx.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").strip()
            assert locks == "0", (f"{locks} advisory lock(s) still held after QUIT: a pooled "
                                  "server connection would hand them to the next client")
            # bob's session now pins the server connection alice's session used (PgBouncer
            # reuses the last one first); alice must still get her mailbox, on another one.
            with session(srv.port, "bob@example.test") as bob, Pop3Client(srv.port) as c:
                expect_ok(c.cmd("USER alice@example.test"), "USER")
                st = c.cmd(f"PASS {PASSWORDS['alice@example.test']}")
                expect_ok(st, "alice's login after her QUIT, while bob's session is open")
                expect_ok(c.cmd("QUIT"), "QUIT")
                expect_ok(bob.cmd("QUIT"), "bob QUIT")


def test_pgbouncer_smtp_copy_commits_alone_and_frees_the_server_connection(ctx):
    """pgmail-smtpd through PgBouncer: a message without bounces is one COPY that commits
    itself (migrations/003), and a refused one (quota: SQLSTATE PM001 at the end of the
    COPY) rolls back alone; either way PgBouncer gets the server connection back."""
    from test_faults import check_consistent
    from test_smtp_policy import sized
    with pop3lib.PgBouncer(ctx) as b:
        def tx(rcpt, body):
            return (f"MAIL FROM:<s@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
                    + body + b".\r\n")
        script = (b"EHLO client.example\r\n" + tx("bob@example.test", sized(300, "one"))
                  + tx("carol@example.test", sized(CAROL_QUOTA + 500, "over"))
                  + tx("alice@example.test", sized(300, "two")) + b"QUIT\r\n")
        r = ctx.smtpd(script, env=b.env)
        finals = [ln[:9] for ln in r.lines if ln.startswith(("250 2.0.0", "552", "451"))]
        assert finals == ["250 2.0.0", "552 5.2.2", "250 2.0.0"], r.lines
        deadline = time.monotonic() + 3
        while b.show_pools().get("sv_active") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not b.show_pools().get("sv_active"), (
            f"a server connection stayed assigned after the session: {b.show_pools()}")
    got = sorted(m.recipients[0] for m in ctx.messages())
    assert got == ["alice@example.test", "bob@example.test"], got
    check_consistent(ctx)


def collect():
    tests = [(name[len("test_"):], fn) for name, fn in (
        ("test_pgbouncer_open_session_holds_one_server_connection_until_quit",
         test_pgbouncer_open_session_holds_one_server_connection_until_quit),
        ("test_pgbouncer_quit_leaves_no_lock_on_pooled_server_connection",
         test_pgbouncer_quit_leaves_no_lock_on_pooled_server_connection),
        ("test_pgbouncer_smtp_copy_commits_alone_and_frees_the_server_connection",
         test_pgbouncer_smtp_copy_commits_alone_and_frees_the_server_connection))]
    for modname in MODULES:
        mod = importlib.import_module(modname)
        short = modname[len("test_pop3_"):]
        if modname == "test_pop3_transcripts":  # written whole only
            # (the byte-by-byte runs test the line reader, not the way to the database)
            found = [(name, lambda ctx, name=name, run=mod.run_transcript:
                      run(ctx, name, ("whole",))) for name, _ in mod.collect()]
        else:
            found = sorted(((getattr(mod, a).__code__.co_firstlineno, a[len("test_"):],
                             getattr(mod, a)) for a in dir(mod)
                            if a.startswith("test_") and callable(getattr(mod, a))))
            found = [(name, fn) for _, name, fn in found]
        for name, fn in found:
            if name not in SKIP:
                tests.append((f"{short}.{name}", through_bouncer(fn)))
    return tests
