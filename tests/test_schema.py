"""schema: what the database itself guarantees to every writer (migrations/003, 005 and
007): a messages row that names accounts in deliver_to is delivered by its own insert, to
each distinct account within its quota, the others bounced through the queue, or fails whole
with SQLSTATE PM001 (a quota) or PM003 (all gone) when nobody got it; the notice of unknown
recipients is delivered by the same function, whatever the quota; and pgmail_rcpt_lookup,
the recipient lookup of pgmail-smtpd, and its parts. Plain SQL through psql against the
test database.
"""

import os

import pop3lib
from harness import CAROL_QUOTA, PASSWORDS, plain_blob

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "migrations")

ACCOUNTS = "SELECT address, used_bytes, message_count FROM accounts ORDER BY address"


def account_id(ctx, address):
    return int(ctx.psql(f"SELECT id FROM accounts WHERE address = '{address}'").strip())


def insert(deliver_to, body="x" * 100):
    """An INSERT of one messages row of body, delivered to deliver_to (an SQL array)."""
    return (f"INSERT INTO messages (sender, session_id, deliver_to, body, size)"
            f" VALUES ('s@remote.example', 'test-schema', {deliver_to},"
            f" convert_to('{body}', 'UTF8'), {len(body)})")


def sqlstate(ctx, sql):
    """The SQLSTATE statement sql fails with, or 'ok' (a helper function in pg_temp)."""
    return ctx.psql(
        "CREATE FUNCTION pg_temp.state_of(q text) RETURNS text LANGUAGE plpgsql AS $f$"
        " BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $f$;"
        " SELECT pg_temp.state_of($q$" + sql + "$q$)").strip()


def test_insert_delivers_once_per_distinct_account(ctx):
    alice, bob = account_id(ctx, "alice@example.test"), account_id(ctx, "bob@example.test")
    before = ctx.psql(ACCOUNTS)
    assert sqlstate(ctx, insert(f"ARRAY[{alice}, {bob}, {alice}]")) == "ok"
    rows = ctx.psql("SELECT b.account_id, b.message_id = m.id, b.size FROM mailbox b, messages m"
                    " ORDER BY b.account_id").split()
    assert rows == [f"{alice}|t|100", f"{bob}|t|100"], rows
    after = ctx.psql(ACCOUNTS)
    assert after != before
    assert "alice@example.test|100|1" in after.split() and "bob@example.test|100|1" in after.split(), after


def bounces(ctx):
    """The queue rows of local bounces (migrations/007): recipient, status, code, dsn."""
    return ctx.psql("SELECT recipient, state, last_status, last_code, coalesce(dsn, '-'),"
                    " finished_at IS NOT NULL FROM queue ORDER BY id").split()


def test_insert_over_quota_delivers_the_others(ctx):
    # migrations/007: the accounts with room get the message, a full one a bounced queue
    # row (a DSN owed to the sender); only when nobody has room does the insert fail.
    alice, carol = account_id(ctx, "alice@example.test"), account_id(ctx, "carol@example.test")
    before = ctx.psql(ACCOUNTS)
    big = "y" * (CAROL_QUOTA + 1)
    assert sqlstate(ctx, insert(f"ARRAY[{carol}]", big)) == "PM001"
    assert ctx.message_count() == 0 and ctx.mailbox_count() == 0 and bounces(ctx) == []
    assert ctx.psql(ACCOUNTS) == before, "a refused message changed the totals"
    assert sqlstate(ctx, insert(f"ARRAY[{alice}, {carol}]", big)) == "ok"
    assert ctx.message_count() == 1 and ctx.mailbox_count("alice@example.test") == 1
    assert ctx.mailbox_count("carol@example.test") == 0 and ctx.used_bytes("carol@example.test") == 0
    assert bounces(ctx) == ["carol@example.test|bounced|5.2.2|552|failed|t"], bounces(ctx)
    # exactly up to the quota fits
    assert sqlstate(ctx, insert(f"ARRAY[{carol}]", "z" * CAROL_QUOTA)) == "ok"
    assert ctx.used_bytes("carol@example.test") == CAROL_QUOTA


def test_insert_to_a_missing_account(ctx):
    alice = account_id(ctx, "alice@example.test")
    assert sqlstate(ctx, insert("ARRAY[999999]")) == "PM003"  # every account gone
    assert ctx.message_count() == 0 and ctx.mailbox_count() == 0
    # named (deliver_names): the bounce row carries the name; unnamed: none to write
    assert sqlstate(ctx, insert(f"ARRAY[{alice}, 999999]")) == "ok"
    assert ctx.mailbox_count("alice@example.test") == 1 and bounces(ctx) == []
    ctx.psql(insert(f"ARRAY[{alice}, 999999]").replace(
        "deliver_to,", "deliver_names, deliver_to,").replace(
        "'test-schema',", "'test-schema', ARRAY['a@example.test', 'Gone@Example.test'],"))
    assert bounces(ctx) == ["Gone@Example.test|bounced|5.1.1|550|failed|t"], bounces(ctx)


def test_insert_without_deliver_to_delivers_nothing(ctx):
    # Rows of older versions, and rows delivered later (pgmail_deliver_later, notices).
    assert sqlstate(ctx, insert("NULL")) == "ok"
    assert ctx.message_count() == 1 and ctx.mailbox_count() == 0


def test_later_delivery_of_a_row_stored_without_accounts_once(ctx):
    # pgmail-smtpd's path when the server has a statement_timeout (store.c).
    alice, carol = account_id(ctx, "alice@example.test"), account_id(ctx, "carol@example.test")
    assert sqlstate(ctx, insert("NULL", "w" * (CAROL_QUOTA + 1))) == "ok"
    mid = int(ctx.psql("SELECT max(id) FROM messages").strip())
    # setting deliver_to by hand (a repair, a backfill) delivers nothing
    assert sqlstate(ctx, f"UPDATE messages SET deliver_to = ARRAY[{alice}] WHERE id = {mid}") == "ok"
    assert ctx.mailbox_count() == 0
    ctx.psql(f"UPDATE messages SET deliver_to = NULL WHERE id = {mid}")
    later = f"SELECT pgmail_deliver_later({mid}, ARRAY[{{}}]::bigint[])"
    assert sqlstate(ctx, later.format(carol)) == "PM001"  # carol: over quota, nobody else
    assert ctx.mailbox_count() == 0 and ctx.used_bytes("carol@example.test") == 0
    assert sqlstate(ctx, later.format(f"{alice}, {carol}")) == "ok"  # alice, not carol
    assert ctx.mailbox_count("alice@example.test") == 1 and ctx.mailbox_count() == 1
    assert bounces(ctx) == ["carol@example.test|bounced|5.2.2|552|failed|t"], bounces(ctx)
    assert sqlstate(ctx, later.format(alice)) == "PM002"  # delivered already
    assert sqlstate(ctx, insert("'{}'")) == "23514"  # an empty list is no delivery
    assert ctx.mailbox_count() == 1 and ctx.used_bytes("alice@example.test") == CAROL_QUOTA + 1


def test_rcpt_lookup(ctx):
    alice, bob = account_id(ctx, "alice@example.test"), account_id(ctx, "bob@example.test")
    ctx.psql(f"INSERT INTO aliases (domain_id, address, account_id)"
             f" SELECT domain_id, 'team@example.test', {bob} FROM accounts WHERE id = {alice}")
    ctx.psql(f"INSERT INTO aliases (domain_id, address, account_id)"
             f" SELECT domain_id, 'team@example.test', {alice} FROM accounts WHERE id = {alice}")

    def lookup(address, domain, new_id="false"):
        return ctx.psql(f"SELECT account_id, statement_timeout, message_id IS NOT NULL"
                        f" FROM pgmail_rcpt_lookup('{address}', '{domain}', {new_id}, NULL)"
                        f" ORDER BY account_id").split()

    try:
        assert lookup("alice@example.test", "example.test") == [f"{alice}|0|f"]
        assert lookup("info@example.test", "example.test") == [f"{alice}|0|f"]  # alias
        assert lookup("team@example.test", "example.test") == [f"{alice}|0|f", f"{bob}|0|f"]
        assert lookup("nobody@example.test", "example.test") == ["|0|f"]  # local, unknown
        assert lookup("x@elsewhere.invalid", "elsewhere.invalid") == []  # not ours
        ids = [int(ctx.psql("SELECT message_id FROM pgmail_rcpt_lookup("
                            "'bob@example.test', 'example.test', true, NULL)").strip())
               for _ in range(2)]
        assert ids[1] > ids[0] > 0, ids
        # the id drawn is the one the next messages row can be stored under
        ctx.psql(f"INSERT INTO messages (id, sender, session_id, deliver_to, body, size)"
                 f" VALUES ({ids[1]}, '', 'test-schema', ARRAY[{bob}], '\\x41', 1)")
        assert ctx.mailbox_count("bob@example.test") == 1
    finally:
        ctx.psql("DELETE FROM aliases WHERE address = 'team@example.test'")


def test_notice_delivered_whatever_the_quota(ctx):
    # migrations/005: the notice of unknown recipients is stored from the null sender and
    # delivered by pgmail_deliver_message like any message, but also to a full mailbox;
    # the totals count it.
    carol = account_id(ctx, "carol@example.test")
    ctx.psql(f"UPDATE accounts SET used_bytes = {CAROL_QUOTA} WHERE id = {carol}")
    assert sqlstate(ctx, insert(f"ARRAY[{carol}]", "n")) == "PM001"  # ordinary mail: full
    mid = int(ctx.psql(f"SELECT pgmail_deliver_notice({carol}, 'test-schema',"
                       f" convert_to('notice', 'UTF8'))").strip())
    rows = ctx.psql("SELECT m.id, m.sender = '', m.size, b.account_id FROM messages m"
                    " JOIN mailbox b ON b.message_id = m.id").split()
    assert rows == [f"{mid}|t|6|{carol}"], rows
    assert ctx.psql(f"SELECT used_bytes, message_count FROM accounts WHERE id = {carol}"
                    ).strip() == f"{CAROL_QUOTA + 6}|1"


def test_notice_to_a_missing_account_stores_nothing(ctx):
    # The statement it replaced left the notice's messages row behind without a mailbox row.
    assert sqlstate(ctx, "SELECT pgmail_deliver_notice(999999, 'test-schema', '\\x41')") == "PM001"
    assert ctx.message_count() == 0 and ctx.mailbox_count() == 0


def test_rcpt_lookup_parts(ctx):
    # The three jobs of pgmail_rcpt_lookup, each a part of its own (migrations/005).
    alice = account_id(ctx, "alice@example.test")
    assert ctx.psql("SELECT account_id FROM pgmail_rcpt_targets('info@example.test',"
                    " 'example.test')").split() == [str(alice)]
    assert ctx.psql("SELECT count(*), count(account_id) FROM pgmail_rcpt_targets("
                    "'nobody@example.test', 'example.test')").strip() == "1|0"
    a, b = (int(ctx.psql("SELECT pgmail_next_message_id()").strip()) for _ in range(2))
    assert b > a > 0, (a, b)
    # the message id is drawn once per call, the same in every row of an alias's targets
    bob = account_id(ctx, "bob@example.test")
    ctx.psql(f"INSERT INTO aliases (domain_id, address, account_id)"
             f" SELECT domain_id, 'pair@example.test', x FROM accounts, unnest(ARRAY[{alice},"
             f" {bob}]) x WHERE id = {alice}")
    try:
        got = ctx.psql("SELECT count(*), count(DISTINCT message_id), min(message_id) > "
                       f"{b} FROM pgmail_rcpt_lookup('pair@example.test', 'example.test', true, NULL)")
        assert got.strip() == "2|1|t", got
    finally:
        ctx.psql("DELETE FROM aliases WHERE address = 'pair@example.test'")


def test_upgrade_from_003_delivers_mail_and_notices(ctx):
    # A database as pgmailctl of the previous version left it (001-003), then `pgmailctl
    # migrate`: 005 (and any other new file) applies, the trigger of 003 still delivers
    # through the replaced pgmail_deliver_message, and notices go through it too.
    db = "pgmail_upgrade3"
    ctx.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")
    ctx.psql(f"CREATE DATABASE {db}", db="postgres")
    try:
        names = ("001_initial.sql", "002_message_count.sql", "003_deliver_in_database.sql")
        for name in names:
            with open(os.path.join(MIGRATIONS, name), "rb") as f:
                pop3lib.psql_stdin(ctx, "BEGIN;\n" + f.read().decode() + "\nCOMMIT;\n", db=db)
        alice_hash = ctx.psql("SELECT password_hash FROM accounts"
                              " WHERE address = 'alice@example.test'").strip()
        pop3lib.psql_stdin(ctx, (
            "CREATE TABLE pgmail_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            " INSERT INTO pgmail_migrations (version, name) VALUES (1, '001_initial.sql'),"
            " (2, '002_message_count.sql'), (3, '003_deliver_in_database.sql');"
            " INSERT INTO domains (name) VALUES ('example.test');"
            " INSERT INTO accounts (domain_id, address, password_hash)"
            f" SELECT id, 'alice@example.test', '{alice_hash}' FROM domains;\n"), db=db)
        env = {"PGDATABASE": db}
        out = ctx.ctl("migrate", env=env).out.decode()
        assert "005_" in out and "003" not in out, out
        pw = PASSWORDS["alice@example.test"]
        r = ctx.smtpd((f"EHLO client.example\r\nAUTH PLAIN {plain_blob('alice@example.test', pw)}\r\n"
                       "MAIL FROM:<alice@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
                       "RCPT TO:<nobody@example.test>\r\nDATA\r\n"
                       "Subject: after 005\r\n\r\nhi\r\n.\r\nQUIT\r\n").encode(), env=env)
        assert any(ln.startswith("250 2.0.0") for ln in r.lines), r.lines
        rows = ctx.psql("SELECT m.sender = '', count(*) FROM messages m JOIN mailbox b"
                        " ON b.message_id = m.id GROUP BY 1 ORDER BY 1", db=db).split()
        assert rows == ["f|1", "t|1"], rows  # the message and its notice, one row each
        totals = ctx.psql("SELECT message_count, used_bytes FROM accounts", db=db).strip()
        stored = ctx.psql("SELECT count(*), sum(size) FROM mailbox", db=db).strip()
        assert totals == stored, (totals, stored)
    finally:
        ctx.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")


def test_upgrade_from_002_keeps_mail_and_delivers(ctx):
    # A database as pgmailctl of the previous version left it (001 and 002 applied, mail
    # stored the old way), then `pgmailctl migrate` of this version: the old message stays
    # readable over POP3 beside a new one delivered by this pgmail-smtpd, totals exact.
    db = "pgmail_upgrade"
    ctx.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")
    ctx.psql(f"CREATE DATABASE {db}", db="postgres")
    try:
        for name in ("001_initial.sql", "002_message_count.sql"):
            with open(os.path.join(MIGRATIONS, name), "rb") as f:
                pop3lib.psql_stdin(ctx, "BEGIN;\n" + f.read().decode() + "\nCOMMIT;\n", db=db)
        alice_hash = ctx.psql("SELECT password_hash FROM accounts"
                              " WHERE address = 'alice@example.test'").strip()
        old = b"Subject: stored before the upgrade\r\n\r\nold\r\n"
        pop3lib.psql_stdin(ctx, (
            "CREATE TABLE pgmail_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            " INSERT INTO pgmail_migrations (version, name)"
            " VALUES (1, '001_initial.sql'), (2, '002_message_count.sql');"
            " INSERT INTO domains (name) VALUES ('example.test');"
            " INSERT INTO accounts (domain_id, address, password_hash)"
            f" SELECT id, 'alice@example.test', '{alice_hash}' FROM domains;\n")
            + pop3lib.insert_sql(["alice@example.test"], f"decode('{old.hex()}', 'hex')"),
            db=db)
        env = {"PGDATABASE": db}
        out = ctx.ctl("migrate", env=env).out.decode()
        assert "003_deliver_in_database.sql" in out and "002" not in out, out
        assert "004_mailbox_lock_bigint.sql" in out, out
        new = b"Subject: delivered after the upgrade\r\n\r\nnew\r\n"
        r = ctx.smtpd(b"EHLO client.example\r\nMAIL FROM:<s@remote.example>\r\n"
                      b"RCPT TO:<alice@example.test>\r\nDATA\r\n" + new
                      + b".\r\nQUIT\r\n", env=env)
        assert any(ln.startswith("250 2.0.0") for ln in r.lines), r.lines
        totals = ctx.psql("SELECT message_count, used_bytes FROM accounts", db=db).strip()
        stored = ctx.psql("SELECT count(*), sum(size) FROM mailbox", db=db).strip()
        assert totals == stored and totals.startswith("2|"), (totals, stored)
        pw = PASSWORDS["alice@example.test"]
        got = pop3lib.pop3d_pipe(ctx, (f"USER alice@example.test\r\nPASS {pw}\r\n"
                                       "RETR 1\r\nRETR 2\r\nQUIT\r\n").encode(), env=env)
        assert (b"stored before the upgrade" in got.out
                and b"delivered after the upgrade" in got.out), got.out[-400:]
    finally:
        ctx.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")


def test_account_id_above_int4_logs_in_over_pop3_and_is_locked(ctx):
    # migrations/004: the mailbox lock is keyed by the whole bigint id (the old key cast it
    # to int, which fails above 2^31-1), as -id, apart from pgmail's other locks.
    big = 3000000000
    alice_hash = ctx.psql("SELECT password_hash FROM accounts"
                          " WHERE address = 'alice@example.test'").strip()
    ctx.psql("INSERT INTO accounts (id, domain_id, address, password_hash)"
             f" SELECT {big}, domain_id, 'big@example.test', '{alice_hash}' FROM accounts"
             " WHERE address = 'alice@example.test'")
    try:
        pop3lib.insert_message(ctx, "big@example.test", b"Subject: big id\r\n\r\nhello\r\n")
        assert ctx.psql(f"SELECT pgmail_mailbox_lock_key({big})").strip() == str(-big)
        pw = PASSWORDS["alice@example.test"]
        with pop3lib.pop3_tcp(ctx) as srv, pop3lib.Pop3Client(srv.port) as c:
            c.login("big@example.test", pw)
            # the lock is held under its documented key: a second login is refused
            held = ctx.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            f" AND objsubid = 1 AND classid::bigint::numeric * 4294967296 + objid::bigint"
                            f" = {-big} + 18446744073709551616").strip()
            assert held == "1", f"no advisory lock with key -{big}: {held}"
            with pop3lib.Pop3Client(srv.port) as c2:
                pop3lib.expect_ok(c2.cmd("USER big@example.test"), "USER")
                assert c2.cmd(f"PASS {pw}") == ("-ERR [IN-USE] Mailbox is locked by another"
                                                " POP3 session")
            st, body = c.retr(1)
            pop3lib.expect_ok(st, "RETR 1")
            assert body == b"Subject: big id\r\n\r\nhello\r\n"
            pop3lib.expect_ok(c.cmd("DELE 1"), "DELE 1")
            pop3lib.expect_ok(c.cmd("QUIT"), "QUIT")
        assert ctx.mailbox_count("big@example.test") == 0
    finally:
        ctx.psql(f"DELETE FROM accounts WHERE id = {big}")
