"""stats: pgmailctl stats [--since DURATION] [--json] against the real PostgreSQL, with mail
sent through pgmail-smtpd and queue rows as pgmail-relay leaves them: the figures equal what
the test made, the window cuts off older mail, JSON parses, bad durations are refused.
"""

import json

import harness

ALICE, BOB = "alice@example.test", "bob@example.test"


def send(ctx, sender, rcpts, text):
    data = f"EHLO client.example\r\nMAIL FROM:<{sender}>\r\n".encode()
    data += "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts).encode()
    data += b"DATA\r\n" + harness.crlf(text) + b".\r\nQUIT\r\n"
    before = ctx.message_count()
    r = ctx.smtpd(data)
    assert ctx.message_count() == before + 1, r


def stats(ctx, *args):
    return json.loads(ctx.ctl("stats", "--json", *args).out)


def test_stats_counts_what_was_done(ctx):
    send(ctx, "big@remote.example", [ALICE, BOB], "Subject: big\n\n" + "x" * 5000 + "\n")
    send(ctx, "small@remote.example", [ALICE], "Subject: small\n\nhi\n")
    # An old message, outside a 1h window.
    send(ctx, "old@remote.example", [BOB], "Subject: old\n\nold\n")
    ctx.psql("UPDATE messages SET received_at = now() - interval '3 days' WHERE sender LIKE 'old@%';"
             " UPDATE mailbox SET received_at = now() - interval '3 days'"
             "  WHERE message_id IN (SELECT id FROM messages WHERE sender LIKE 'old@%')")
    sizes = {m.sender: m.size for m in ctx.messages()}
    mid = ctx.messages()[0].id
    ctx.psql(f"INSERT INTO queue (message_id, sender, recipient, domain, state, arrived_at, account_id)"
             f" VALUES ({mid}, 'alice@example.test', 'x@remote.example', 'remote.example', 'deferred',"
             f"  now() - interval '30 minutes', (SELECT id FROM accounts WHERE address = '{ALICE}')),"
             f" ({mid}, 'alice@example.test', 'y@remote.example', 'remote.example', 'held', now(), NULL);"
             f" INSERT INTO queue (message_id, sender, recipient, domain, state, finished_at)"
             f" VALUES ({mid}, 'alice@example.test', 'z@remote.example', 'remote.example', 'bounced', now());"
             " INSERT INTO queue_attempts (queue_id, outcome)"
             " SELECT id, 'deferred' FROM queue WHERE state = 'deferred'"
             " UNION ALL SELECT id, 'delivered' FROM queue WHERE state = 'held'")
    s = stats(ctx, "--since", "1h")
    assert s["since_seconds"] == 3600
    assert s["in"] == {"messages": 2, "bytes": sizes["big@remote.example"] + sizes["small@remote.example"]}, s
    assert s["out"] == {"delivered": 1, "deferrals": 1, "bounces": 1}, s
    assert s["queue"]["deferred"] == 1 and s["queue"]["held"] == 1 and s["queue"]["queued"] == 0
    assert 1790 <= s["queue"]["oldest_deferred_seconds"] <= 1900, s["queue"]
    assert [x["address"] for x in s["top_senders"]] == ["big@remote.example", "small@remote.example"]
    assert s["top_senders"][0] == {"address": "big@remote.example", "messages": 1,
                                   "bytes": sizes["big@remote.example"]}
    rcpt = {x["address"]: x for x in s["top_recipients"]}
    assert rcpt[ALICE]["messages"] == 2 and rcpt[BOB]["messages"] == 1, rcpt
    assert rcpt["x@remote.example"]["bytes"] == sizes["big@remote.example"], rcpt
    assert s["top_recipients"][0]["address"] == ALICE
    big = s["biggest_mailboxes"]
    assert big[0]["address"] == ALICE and big[0]["bytes"] == ctx.used_bytes(ALICE), big
    assert {x["address"] for x in big} == {ALICE, BOB, "carol@example.test"}

    # The default window (24h) still lacks the 3-day-old message; 7d has it.
    assert stats(ctx)["in"]["messages"] == 2
    assert stats(ctx, "--since=7d")["in"]["messages"] == 3

    out = ctx.ctl("stats", "--since", "1h").out.decode()
    assert "the last 1h" in out and "mail in      2 messages" in out, out
    assert "top senders by volume" in out and "big@remote.example" in out, out
    assert "biggest mailboxes" in out


def test_stats_refuses_bad_durations(ctx):
    for bad in ("24", "h", "0h", "-1d", "1.5h", "99999999999d", "1y", "24 h"):
        r = ctx.ctl("stats", "--since", bad, check=False)
        assert r.rc == 2 and b"duration" in r.err and r.out == b"", (bad, r)


def test_stats_empty_database_is_zero_and_valid_json(ctx):
    ctx.psql("TRUNCATE queue, queue_attempts")
    s = stats(ctx)
    assert s["in"] == {"messages": 0, "bytes": 0} and s["top_senders"] == [], s
    assert s["queue"] == {"queued": 0, "deferred": 0, "held": 0, "oldest_deferred_seconds": 0}
