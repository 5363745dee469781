"""admin_queue: pgmailctl queue list|show|flush|hold|release|delete|bounce against the real
PostgreSQL: messages and queue rows are made with SQL as pgmail-smtpd and pgmail-relay would
leave them; a psql session LISTENing on pgmail_queue hears what the relay would.
"""

from faultlib import PsqlSession

FUTURE = "now() + interval '1 hour'"


def q(ctx, sql):
    return ctx.psql(sql).strip()


def clean(ctx):
    ctx.psql("TRUNCATE queue, queue_attempts RESTART IDENTITY")


def message(ctx, sender="alice@example.test", body=b"Subject: out\r\n\r\nhello\r\n",
            local=None):
    """A messages row (delivered to local account address local too, when given); its id."""
    mid = int(q(ctx, "INSERT INTO messages (sender, session_id, body, size)"
                     f" VALUES ('{sender}', 'sess-{len(body)}', decode('{body.hex()}', 'hex'),"
                     f" {len(body)}) RETURNING id"))
    if local:
        ctx.psql(f"SELECT pgmail_deliver_message({mid}, {len(body)}, ARRAY(SELECT id FROM"
                 f" accounts WHERE address = '{local}'))")
    return mid


def rcpt(ctx, mid, recipient, state="queued", sender="alice@example.test", attempts=0,
         next_attempt="now()", extra=None):
    """A queue row for message mid; its queue.id. extra: {column: SQL value}."""
    cols = {"message_id": str(mid), "sender": f"'{sender}'", "recipient": f"'{recipient}'",
            "domain": f"'{recipient.split('@')[1].lower()}'", "state": f"'{state}'",
            "attempts": str(attempts), "next_attempt": next_attempt,
            "arrived_at": "now() - interval '2 hours'"}
    if state in ("delivered", "bounced"):
        cols["finished_at"] = "now()"
    cols.update(extra or {})
    return int(q(ctx, f"INSERT INTO queue ({', '.join(cols)}) VALUES ({', '.join(cols.values())})"
                      " RETURNING id"))


def attempt(ctx, qid, outcome, code, status, reply, host="mx.remote.example",
            address="127.0.0.2", tls=None):
    tls = "NULL" if tls is None else f"'{tls}'"
    ctx.psql("INSERT INTO queue_attempts (queue_id, at, outcome, code, status, reply, host,"
             f" address, tls) VALUES ({qid}, now() - interval '1 hour', '{outcome}', {code},"
             f" '{status}', '{reply}', '{host}', '{address}', {tls})")


def fail(r, rc, text):
    assert r.rc == rc, r
    assert text.encode() in r.err, r
    assert r.out == b"", r


def test_queue_list(ctx):
    clean(ctx)
    m1 = message(ctx)
    rcpt(ctx, m1, "bob@remote.example", "deferred", attempts=2, next_attempt=FUTURE,
         extra={"last_code": "451", "last_reply": "E'4.7.1 greylisted,\\r\\n\\ttry later'"})
    rcpt(ctx, m1, "carol@remote.example", "delivered", attempts=1,
         extra={"last_code": "250", "last_reply": "'2.0.0 Ok: queued'"})
    m2 = message(ctx, sender="")
    rcpt(ctx, m2, "dave@Other.Example", "held", sender="")
    r = ctx.ctl("queue", "list")
    rows = [ln.split("\t") for ln in r.out.decode().splitlines()]
    assert len(rows) == 2, rows
    assert all(len(x) == 8 for x in rows), rows
    assert rows[0][0] == str(m1) and rows[0][1].startswith("02:00:")
    assert rows[0][2:6] == ["alice@example.test", "bob@remote.example", "deferred", "2"]
    assert rows[0][6] > q(ctx, "SELECT date_trunc('second', now())::text")  # in an hour
    assert rows[0][7] == "451 4.7.1 greylisted,   try later"  # one line, whatever it held
    assert rows[1] == [str(m2), rows[1][1], "<>", "dave@Other.Example", "held", "0", "-", "-"]

    rows = [ln.split("\t") for ln in ctx.ctl("queue", "list", "--all").out.decode().splitlines()]
    assert [x[3] for x in rows] == ["bob@remote.example", "carol@remote.example",
                                    "dave@Other.Example"]
    assert rows[1][4:] == ["delivered", "1", "-", "250 2.0.0 Ok: queued"]

    clean(ctx)
    assert ctx.ctl("queue", "list").out == b""
    fail(ctx.ctl("queue", "list", "7", check=False), 2, "too many arguments")
    fail(ctx.ctl("queue", "list", "--purge-orphans", check=False), 2, "unknown option")


def test_queue_show(ctx):
    clean(ctx)
    m = message(ctx)
    b = rcpt(ctx, m, "bob@remote.example", "deferred", attempts=2, next_attempt=FUTURE)
    attempt(ctx, b, "deferred", 451, "4.7.1", "greylisted")
    attempt(ctx, b, "deferred", 421, "4.4.2", "timeout", tls="TLSv1.3 TLS_AES_256_GCM_SHA384")
    c = rcpt(ctx, m, "carol@remote.example", "bounced", attempts=1,
             extra={"dsn": "'failed'"})
    attempt(ctx, c, "bounced", 550, "5.1.1", "no such user")
    out = ctx.ctl("queue", "show", str(m)).out.decode().splitlines()
    size = len(b"Subject: out\r\n\r\nhello\r\n")
    assert out[0] == f"queue id {m}"
    assert out[1:3] == ["sender: alice@example.test", f"size: {size} octets"]
    assert out[3].startswith("arrival: ") and out[4] == f"session: sess-{size}"
    assert out[5].startswith("recipient bob@remote.example: deferred, 2 attempts, next attempt ")
    assert out[6].endswith(" deferred: 451 4.7.1 greylisted from mx.remote.example [127.0.0.2]")
    assert out[7].endswith(" deferred: 421 4.4.2 timeout from mx.remote.example [127.0.0.2],"
                           " TLSv1.3 TLS_AES_256_GCM_SHA384")
    assert out[8].startswith("recipient carol@remote.example: bounced, 1 attempt, finished ")
    assert out[8].endswith(", DSN (failed) to be written")
    assert out[9].endswith(" bounced: 550 5.1.1 no such user from mx.remote.example [127.0.0.2]")
    assert len(out) == 10, out

    # The message row gone (only history left): still shown, without a size.
    ctx.psql(f"UPDATE queue SET state = 'delivered', finished_at = now(), dsn = NULL"
             f" WHERE id = {b} OR id = {c}; DELETE FROM messages WHERE id = {m}")
    out = ctx.ctl("queue", "show", str(m)).out.decode().splitlines()
    assert out[2] == "size: - (the message is no longer stored)" and out[4] == "session: -"

    fail(ctx.ctl("queue", "show", "999999", check=False), 1,
         "pgmailctl: unknown queue id 999999\n")
    for bad in ("abc", "-1", "0", "012", "99999999999999999999", "9223372036854775808"):
        fail(ctx.ctl("queue", "show", bad, check=False), 1, f'bad queue id "{bad}"')
    fail(ctx.ctl("queue", "show", check=False), 2, "missing argument")
    assert ctx.ctl("queue", "show", "9223372036854775807", check=False).rc == 1


def heard(listener):
    return 'notification "pgmail_queue"' in listener.run("SELECT 1")


def due(ctx, qid):
    return q(ctx, f"SELECT next_attempt <= now() FROM queue WHERE id = {qid}") == "t"


def test_queue_flush_wakes_the_relay(ctx):
    clean(ctx)
    m1, m2 = message(ctx), message(ctx)
    a = rcpt(ctx, m1, "a@remote.example", "deferred", next_attempt=FUTURE)
    b = rcpt(ctx, m1, "b@remote.example", "held", next_attempt=FUTURE)
    c = rcpt(ctx, m2, "c@remote.example", "queued", next_attempt=FUTURE)
    leased = rcpt(ctx, m2, "d@remote.example", "deferred", next_attempt=FUTURE,
                  extra={"lease_owner": "'relay1:42'", "lease_until": FUTURE})
    with PsqlSession(ctx.pgdir) as listener:
        listener.run("LISTEN pgmail_queue")
        assert not heard(listener)
        r = ctx.ctl("queue", "flush", str(m1))
        assert r.out == f"flushed 1 recipient of queue id {m1}\n".encode(), r
        assert heard(listener)
        assert due(ctx, a) and not due(ctx, b) and not due(ctx, c)
        r = ctx.ctl("queue", "flush")
        assert r.out == b"flushed 2 recipients\n", r  # a again and c, not the leased one
        assert heard(listener)
        assert due(ctx, c) and not due(ctx, leased) and not due(ctx, b)
    fail(ctx.ctl("queue", "flush", "424242", check=False), 1, "unknown queue id 424242")
    ctx.psql(f"UPDATE queue SET state = 'delivered', finished_at = now() WHERE message_id = {m2}")
    ctx.psql(f"DELETE FROM queue WHERE id = {leased}")
    fail(ctx.ctl("queue", "flush", str(m2), check=False), 1,
         f"queue id {m2} has no recipient queued or deferred")


def test_queue_hold_and_release(ctx):
    clean(ctx)
    m = message(ctx)
    a = rcpt(ctx, m, "a@remote.example", "deferred", next_attempt=FUTURE)
    b = rcpt(ctx, m, "b@remote.example", "queued")
    d = rcpt(ctx, m, "d@remote.example", "delivered")
    r = ctx.ctl("queue", "hold", str(m))
    assert r.out == f"held 2 recipients of queue id {m}\n".encode(), r
    states = q(ctx, f"SELECT string_agg(state, ',' ORDER BY id) FROM queue WHERE message_id = {m}")
    assert states == "held,held,delivered"
    assert [x.split("\t")[4] for x in ctx.ctl("queue", "list").out.decode().splitlines()] == \
        ["held", "held"]
    fail(ctx.ctl("queue", "hold", str(m), check=False), 1,
         f"queue id {m} has no recipient queued or deferred")
    with PsqlSession(ctx.pgdir) as listener:
        listener.run("LISTEN pgmail_queue")
        r = ctx.ctl("queue", "release", str(m))
        assert r.out == f"released 2 recipients of queue id {m}\n".encode(), r
        assert heard(listener)
    assert q(ctx, f"SELECT string_agg(state, ',' ORDER BY id) FROM queue"
                  f" WHERE message_id = {m}") == "queued,queued,delivered"
    assert due(ctx, a) and due(ctx, b)
    assert q(ctx, f"SELECT state FROM queue WHERE id = {d}") == "delivered"
    fail(ctx.ctl("queue", "release", str(m), check=False), 1, f"queue id {m} has no recipient held")
    fail(ctx.ctl("queue", "release", "31337", check=False), 1, "unknown queue id 31337")
    fail(ctx.ctl("queue", "hold", "x1", check=False), 1, 'bad queue id "x1"')


def test_queue_delete(ctx):
    clean(ctx)
    # m1: remote recipients only; one finished and owing a DSN, which delete cancels.
    m1 = message(ctx)
    rcpt(ctx, m1, "a@remote.example", "deferred", attempts=3)
    rcpt(ctx, m1, "b@remote.example", "held")
    done = rcpt(ctx, m1, "c@remote.example", "bounced", extra={"dsn": "'failed'"})
    # m2: a local recipient holds it too: its row must stay.
    m2 = message(ctx, local="bob@example.test")
    rcpt(ctx, m2, "e@remote.example", "queued")
    with PsqlSession(ctx.pgdir) as listener:
        listener.run("LISTEN pgmail_queue")
        r = ctx.ctl("queue", "delete", str(m1))
        assert r.out == f"deleted 2 recipients of queue id {m1}\n".encode(), r
        assert not heard(listener)  # no DSN to write, nothing due
    assert q(ctx, f"SELECT id, state, dsn IS NULL FROM queue WHERE message_id = {m1}") == \
        f"{done}|bounced|t"
    assert q(ctx, f"SELECT count(*) FROM messages WHERE id = {m1}") == "0"
    r = ctx.ctl("queue", "delete", str(m2))
    assert r.out == f"deleted 1 recipient of queue id {m2}\n".encode(), r
    assert q(ctx, f"SELECT count(*) FROM queue WHERE message_id = {m2}") == "0"
    assert q(ctx, f"SELECT count(*) FROM messages WHERE id = {m2}") == "1"
    assert ctx.mailbox_count("bob@example.test") == 1
    fail(ctx.ctl("queue", "delete", str(m1), check=False), 1,
         f"queue id {m1} has no recipient left to deliver")
    fail(ctx.ctl("queue", "delete", str(m2), check=False), 1, f"unknown queue id {m2}")


def test_queue_bounce(ctx):
    clean(ctx)
    m1 = message(ctx)
    a = rcpt(ctx, m1, "a@remote.example", "deferred", attempts=2,
             extra={"last_code": "451", "last_reply": "'greylisted'",
                    "last_host": "'mx.remote.example'", "last_attempt": "now()"})
    b = rcpt(ctx, m1, "b@remote.example", "held")
    ok = rcpt(ctx, m1, "c@remote.example", "delivered")
    with PsqlSession(ctx.pgdir) as listener:
        listener.run("LISTEN pgmail_queue")
        r = ctx.ctl("queue", "bounce", str(m1))
        assert r.out == f"bounced 2 recipients of queue id {m1}\n".encode(), r
        assert heard(listener)  # pgmail-relay has DSNs to write
    rows = q(ctx, "SELECT id, state, dsn, last_code IS NULL, last_status, last_reply,"
                  " last_host IS NULL, finished_at IS NOT NULL, attempts FROM queue"
                  f" WHERE message_id = {m1} ORDER BY id").splitlines()
    assert rows == [f"{a}|bounced|failed|t|5.0.0|deleted by the administrator|t|t|2",
                    f"{b}|bounced|failed|t|5.0.0|deleted by the administrator|t|t|0",
                    f"{ok}|delivered||t|||t|t|0"], rows
    assert q(ctx, "SELECT string_agg(queue_id || ' ' || outcome || ' ' || status || ' ' || reply,"
                  " ',' ORDER BY id) FROM queue_attempts") == \
        f"{a} bounced 5.0.0 deleted by the administrator,{b} bounced 5.0.0 deleted by the administrator"
    # The DSN quotes the message's headers: the row stays until pgmail-relay wrote it.
    assert q(ctx, f"SELECT count(*) FROM messages WHERE id = {m1}") == "1"
    show = ctx.ctl("queue", "show", str(m1)).out.decode()
    assert "bounced: 5.0.0 deleted by the administrator" in show, show
    fail(ctx.ctl("queue", "bounce", str(m1), check=False), 1,
         f"queue id {m1} has no recipient left to deliver")

    # The null sender gets no DSN (no loops), so nothing needs its message any more.
    m2 = message(ctx, sender="")
    rcpt(ctx, m2, "x@remote.example", "queued", sender="")
    ctx.ctl("queue", "bounce", str(m2))
    assert q(ctx, f"SELECT state, dsn IS NULL FROM queue WHERE message_id = {m2}") == "bounced|t"
    assert q(ctx, f"SELECT count(*) FROM messages WHERE id = {m2}") == "0"
    fail(ctx.ctl("queue", "bounce", "4040", check=False), 1, "unknown queue id 4040")


def test_queue_usage(ctx):
    r = ctx.ctl("queue", "--help")
    assert r.rc == 0, r
    for verb in ("list [--all]", "show ID", "flush [ID]", "hold ID", "release ID", "delete ID",
                 "bounce ID"):
        assert f"pgmailctl queue {verb}".encode() in r.out, (verb, r.out)
    fail(ctx.ctl("queue", "requeue", "1", check=False), 2, 'unknown command "queue requeue"')
    fail(ctx.ctl("queue", "flush", "1", "2", check=False), 2, "too many arguments")
