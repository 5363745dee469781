"""smtp_delivery: what pgmail-smtpd stores for a message, seen through SQL: the one notice an
authenticated sender gets for unknown local recipients (bounded, well-formed, delivered
whatever the quota, by the database's own delivery function), the account list of a
message with many overlapping aliases (each account once), and what a leading dot means
after a bare LF (bare_newline = normalize).

The handler reads a pipelined session from stdin (ctx.smtpd): a pipe counts as a local
peer, so AUTH PLAIN is offered without TLS.
"""

import re

from harness import PASSWORDS, CAROL_QUOTA, crlf, dot_stuff, plain_blob

ALICE = "alice@example.test"
CAROL = "carol@example.test"

# shared/mail_limits.h LIM_NOTICE and RFC 5322 2.1.1.
LIM_NOTICE = 16384
LINE_MAX = 998

REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")


def replies(out):
    """The final lines of the replies in out, as (code, text)."""
    got = []
    for ln in out.split(b"\r\n"):
        m = REPLY.match(ln)
        if m and m.group(2) == b" ":
            got.append((m.group(1).decode(), m.group(3).decode("utf-8", "replace")))
    return got


def session(user, rcpts, message, sender=None):
    """A whole pipelined session: EHLO, AUTH PLAIN as user, one transaction, QUIT."""
    sender = user if sender is None else sender
    return (b"EHLO client.example\r\n"
            + f"AUTH PLAIN {plain_blob(user, PASSWORDS[user])}\r\n".encode()
            + f"MAIL FROM:<{sender}>\r\n".encode()
            + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
            + b"DATA\r\n" + dot_stuff(message) + b".\r\nQUIT\r\n")


def run(ctx, data, env=None):
    r = ctx.smtpd(data, env=env, timeout=120)
    assert r.rc == 0, f"pgmail-smtpd exited {r.rc}: {r.err[-500:]!r}"
    return replies(r.out)


def final_reply(got):
    """The reply to the final dot: the one before QUIT's 221."""
    assert got and got[-1][0] == "221", got[-3:]
    return got[-2]


def notices(ctx):
    """The notices stored (null reverse-path), checked by SQL: sender, size, mailbox."""
    return [m for m in ctx.messages() if m.sender == ""]


def body_of(notice):
    head, sep, body = notice.body.partition(b"\r\n\r\n")
    assert sep, f"notice without header/body separator: {notice.body[:300]!r}"
    return body


def assert_well_formed(notice):
    """RFC 5322 2.1.1 and the declared charset=utf-8, 8bit: CRLF only, no NUL, lines of at
    most 998 octets, the body valid UTF-8."""
    raw = notice.body
    assert b"\0" not in raw, "the notice holds a NUL"
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b""), (
        "the notice holds a bare CR or LF")
    assert raw.endswith(b"\r\n"), raw[-40:]
    long = [len(ln) for ln in raw.split(b"\r\n") if len(ln) > LINE_MAX]
    assert not long, f"lines of {long} octets (RFC 5322 2.1.1 allows {LINE_MAX})"
    try:
        body_of(notice).decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"the notice's body is not UTF-8: {e}")
    assert notice.size == len(raw)


def unfold(body):
    """The notice's text with the line breaks pgmail inserted taken out again: a break
    after white space, or between two characters of a word."""
    return body.replace(b"\r\n", b"")


# -- one bounded notice per message ----------------------------------------------------------

def test_thousand_unknown_recipients_one_bounded_notice(ctx):
    # The amplification of issue 12: one message with a 3,000-character Subject and a 70 KB
    # body to 1,000 unknown local recipients used to store 1,000 notices of ~67 KB each.
    subject = "S" * 3000
    body = "".join(f"line {i:05d} " + "b" * 60 + "\n" for i in range(1000))  # ~71 KB
    msg = crlf(f"From: {ALICE}\nSubject: {subject}\n\n{body}")
    rcpts = [f"nobody{i}@example.test" for i in range(1000)]
    got = run(ctx, session(ALICE, rcpts, msg))
    assert [g[0] for g in got[4:1004]] == ["250"] * 1000, got[3:6]  # after greeting, EHLO, AUTH, MAIL
    assert final_reply(got)[0] == "250", got[-2]
    # By SQL: one message, the notice, in alice's mailbox, bounded, and counted.
    rows = ctx.psql("SELECT count(*), max(size), max(octet_length(body)), min(sender)"
                    " FROM messages").strip()
    count, size, octets, sender = rows.split("|")
    assert count == "1", f"{count} messages stored for one message to 1,000 unknown recipients"
    assert int(size) == int(octets) <= LIM_NOTICE, f"the notice is {size} octets"
    assert sender == "", f"notice from {sender!r}, not the null reverse-path"
    assert ctx.mailbox_count(ALICE) == 1 and ctx.mailbox_count() == 1
    assert ctx.used_bytes(ALICE) == int(size)
    (n,) = notices(ctx)
    assert_well_formed(n)
    text = body_of(n)
    assert text.startswith(b"Recipient nobody0@example.test was not found.\r\n"
                           b"Recipient nobody1@example.test was not found.\r\n"), text[:200]
    listed = len(re.findall(rb"^Recipient nobody\d+@example\.test was not found\.\r$",
                            text, re.M))
    assert 0 < listed < 1000, listed
    assert f"\r\nAnd {1000 - listed} more recipients were not found.\r\n".encode() in text
    flat = unfold(text)
    assert b"Email with subject SSSS" in flat and b"S" * 3000 not in flat
    assert b", body: line 00000 " in flat
    assert text.endswith(b"[... the rest of the body is not quoted] was not sent.\r\n"
                         b"Please try again with another recipient.\r\n"), text[-200:]


def test_notice_names_each_unknown_recipient_and_the_message_once(ctx):
    msg = crlf(f"From: {ALICE}\nSubject: Lunch\n\nAre you free today\nat noon?\n")
    rcpts = ["nobody@example.test", "bob@example.test", "ghost@example.test"]
    got = run(ctx, session(ALICE, rcpts, msg))
    assert final_reply(got)[0] == "250", got[-2]
    assert ctx.mailbox_count("bob@example.test") == 1
    (n,) = notices(ctx)
    assert n.recipients == [ALICE]
    assert_well_formed(n)
    assert body_of(n) == (b"Recipient nobody@example.test was not found.\r\n"
                          b"Recipient ghost@example.test was not found.\r\n"
                          b"Email with subject Lunch, body: Are you free today\r\n"
                          b"at noon? was not sent.\r\n"
                          b"Please try again with another recipient.\r\n"), body_of(n)


# -- well-formed notices ---------------------------------------------------------------------

def test_notice_long_subject_is_folded_within_998_octets(ctx):
    # A 3,000-character Subject made a 2,022-octet line; with words it is broken after
    # white space, without any between two characters; either way no line passes 998.
    for subject in (" ".join(["word"] * 600), "x" * 3000, "\u00e9" * 1500):
        ctx.reset_mail()
        msg = crlf(f"Subject: {subject}\n\nshort body\n")
        got = run(ctx, session(ALICE, ["nobody@example.test"], msg))
        assert final_reply(got)[0] == "250", got[-2]
        (n,) = notices(ctx)
        assert_well_formed(n)
        flat = unfold(body_of(n)).decode("utf-8")
        quoted = flat.split("Email with subject ", 1)[1].split(", body: ", 1)[0]
        assert subject.startswith(quoted) and 900 <= len(quoted.encode()) <= LINE_MAX, (
            f"quoted Subject of {len(quoted.encode())} octets: {quoted[:40]!r}")
        assert "short body was not sent." in flat


def test_notice_replaces_invalid_utf8(ctx):
    # The notice says charset=utf-8: bytes that are not UTF-8 (Latin-1, a lone
    # continuation byte, a surrogate, an overlong form, a truncated sequence, NUL) become
    # U+FFFD; valid characters stay.
    subject = b"caf\xe9 \xc3\xa9t\xc3\xa9"
    body = (b"latin-1 \xe9t\xe9\r\nlone \x80 surrogate \xed\xa0\x80 overlong \xc0\xaf\r\n"
            b"emoji \xf0\x9f\x98\x80 nul \x00 cut \xe2\x82\r\n")
    msg = b"Subject: " + subject + b"\r\n\r\n" + body
    got = run(ctx, session(ALICE, ["nobody@example.test"], msg))
    assert final_reply(got)[0] == "250", got[-2]
    (n,) = notices(ctx)
    assert_well_formed(n)
    text = body_of(n).decode("utf-8")
    assert "Email with subject caf\ufffd \u00e9t\u00e9, body: latin-1 \ufffdt\ufffd\r\n" in text
    assert "lone \ufffd surrogate \ufffd\ufffd\ufffd overlong \ufffd\ufffd\r\n" in text
    assert "emoji \U0001F600 nul \ufffd cut \ufffd\ufffd was not sent." in text


def test_notice_quote_cut_at_a_line_end(ctx):
    # Lines of two-octet characters, one of them longer than 998 octets without a space:
    # that one is broken between characters, and the quote is cut at the end of a line of
    # the original, never inside one or inside a UTF-8 sequence.
    lines = [("\u00e9" * 7 + " ") * 10 for _ in range(200)]
    lines[3] = "\u00e9" * 1500
    msg = crlf("Subject: cut\n\n" + "\n".join(lines) + "\n")
    got = run(ctx, session(ALICE, ["nobody@example.test"], msg))
    assert final_reply(got)[0] == "250", got[-2]
    (n,) = notices(ctx)
    assert_well_formed(n)
    text = body_of(n).decode("utf-8")
    quote = text.split(", body: ", 1)[1].split("[... the rest of the body is not quoted]")[0]
    assert quote.endswith("\r\n"), f"the quote ends inside a line: {quote[-60:]!r}"
    got_lines = quote[:-2].split("\r\n")
    # line 3 comes back in pieces of at most 998 octets (499 characters), whole characters
    assert got_lines[:3] == lines[:3], got_lines[:3]
    pieces = got_lines[3:3 + 4]
    assert "".join(pieces) == lines[3] and all(len(p.encode()) <= LINE_MAX for p in pieces)
    assert len(got_lines) > 7 and got_lines[7:] == lines[4:4 + len(got_lines) - 7], (
        "the quote is not whole lines of the original")
    assert 3000 < len(quote.encode()) <= 4096, len(quote.encode())


# -- the notice and the quota ----------------------------------------------------------------

def test_notice_delivered_over_quota_and_counted(ctx):
    # The notice is the sender's only word that the message went nowhere: it is delivered
    # even when it takes the mailbox past its quota (bounded, one per message: migrations/005),
    # and counted, so the next ordinary message to that mailbox is refused.
    ctx.psql(f"UPDATE accounts SET used_bytes = {CAROL_QUOTA} - 1 WHERE address = '{CAROL}'")
    msg = crlf("Subject: full\n\nto nobody\n")
    got = run(ctx, session(CAROL, ["nobody@example.test"], msg))
    assert final_reply(got)[0] == "250", got[-2]
    (n,) = notices(ctx)
    assert n.recipients == [CAROL]
    assert ctx.used_bytes(CAROL) == CAROL_QUOTA - 1 + n.size
    got = run(ctx, session(ALICE, [CAROL], crlf("Subject: more\n\nfor carol\n")))
    assert got[4][0] == "452", f"RCPT to a full mailbox: {got[4]}"


def test_unknown_recipient_refused_when_no_room_for_a_notice(ctx):
    # Once the sender's own mailbox is full, an unknown recipient is refused at RCPT (550
    # 5.1.1, as for an unauthenticated sender) instead of accepted for a notice: notices,
    # which enter the mailbox whatever its quota, cannot make it grow without bound.
    ctx.psql(f"UPDATE accounts SET used_bytes = {CAROL_QUOTA} WHERE address = '{CAROL}'")
    got = run(ctx, session(CAROL, ["nobody@example.test"], crlf("Subject: x\n\ny\n")))
    rcpt = [g for g in got if g[0] == "550"]
    assert rcpt and rcpt[0][1].startswith("5.1.1"), got
    assert notices(ctx) == []
    assert ctx.used_bytes(CAROL) == CAROL_QUOTA
    # a known recipient in the same situation is still accepted and delivered
    got = run(ctx, session(CAROL, [ALICE], crlf("Subject: ok\n\nfine\n")))
    assert final_reply(got)[0] == "250", got[-2]


# -- many recipients, overlapping aliases ----------------------------------------------------

def test_thousand_aliased_recipients_deliver_once_per_account(ctx):
    # 1,000 aliases, each to two of alice, bob and carol, plus the accounts themselves: the
    # message is stored once and each account gets one mailbox row (accounts.c keeps the
    # list distinct as RCPT builds it; the log says how many accounts the COPY named).
    ids = {a: int(ctx.psql(f"SELECT id FROM accounts WHERE address = '{a}'").strip())
           for a in (ALICE, "bob@example.test", CAROL)}
    order = list(ids.values())
    ctx.psql("INSERT INTO aliases (domain_id, address, account_id)"
             " SELECT a.domain_id, 'group' || g || '@example.test', t.id"
             " FROM generate_series(0, 999) g, accounts a,"
             f" LATERAL (VALUES (ARRAY[{order[0]}, {order[1]}, {order[2]}])) v(x),"
             " LATERAL (SELECT v.x[1 + g % 3] AS id UNION SELECT v.x[1 + (g + 1) % 3]) t"
             f" WHERE a.id = {order[0]}")
    try:
        rcpts = [f"group{i}@example.test" for i in range(1000)]
        data = (b"EHLO client.example\r\nMAIL FROM:<sender@remote.example>\r\n"
                + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
                + b"DATA\r\n" + crlf("Subject: all\n\nonce each\n") + b".\r\nQUIT\r\n")
        r = ctx.smtpd(data, timeout=120)
        assert r.rc == 0, r.err[-300:]
        got = replies(r.out)
        assert [g[0] for g in got[3:1003]] == ["250"] * 1000, got[2:5]  # after greeting, EHLO, MAIL
        assert final_reply(got)[0] == "250", got[-2]
        assert ctx.message_count() == 1
        for a in ids:
            assert ctx.mailbox_count(a) == 1, f"{a}: {ctx.mailbox_count(a)} mailbox rows"
        assert b" accounts=3 " in r.err, r.err[-400:]
    finally:
        ctx.psql("DELETE FROM aliases WHERE address LIKE 'group%@example.test'")


# -- a dot after a bare LF -------------------------------------------------------------------

def test_dot_after_bare_lf_is_kept(ctx):
    # bare_newline = normalize stores a bare LF as CRLF. Only a line that follows a CRLF
    # can be the end of the data (RFC 5321 4.1.1.4) or carry a transparency dot (4.5.2):
    # after a bare LF, "." and ".." are text and stored as sent (a "." line used to be
    # stored as an empty line).
    data = (b"EHLO client.example\r\nMAIL FROM:<sender@remote.example>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: dots\r\n\r\none\n.\r\ntwo\n..\r\nthree\r\n..four\r\n.\r\nQUIT\r\n")
    r = ctx.smtpd(data)
    assert r.rc == 0, r.err[-300:]
    assert final_reply(replies(r.out))[0] == "250", replies(r.out)
    (m,) = ctx.messages()
    assert m.body.endswith(b"Subject: dots\r\n\r\none\r\n.\r\ntwo\r\n..\r\nthree\r\n.four\r\n"), (
        m.body[-60:])
