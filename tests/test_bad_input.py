"""bad_input: hostile and broken input to both handlers, each with the reply it must get.

SMTP: over-long command and DATA lines, NUL bytes, bare CR and bare LF, 8-bit and invalid
UTF-8 in commands, addresses with quotes, comments, source routes, IP literals and 300-octet
local parts, MAIL parameters out of range, 10,000 RCPT commands, AUTH blobs of 100 KiB and
invalid base64, SQL metacharacters in every field, pipelined floods, commands before the
greeting, and the SMTP smuggling variants of the 2023 advisories (bare LF / bare CR around
the dot), in both bare_newline modes.
POP3: long lines, NUL, bare CR/LF, 8-bit, floods, SQL metacharacters, oversized and
invalid AUTH, and bad message numbers (0, -1, 99999999999999999999, 2^64+1, 1x, ...).
Configuration: a hostname that is neither a domain name nor an address literal (in the
file, the environment, or the system's own name) answers the client 421 4.3.5 / -ERR
[SYS/PERM] and is logged naming where it came from.
Both: slow clients that trickle one byte every 0.5 s into a command line (or a DATA line)
are timed out per line (RFC 5321 4.5.3.2), not kept for ever.

Most cases are scripts piped into the handler (a "step" is what is sent and the replies it
must get, matched by prefix); some need TCP. Each script keeps under the error tarpit
(10 errors) unless the tarpit is what it tests. Every run must exit 0 (no crash; under the
sanitizers no report), log only printable text (habit 11), and store exactly what it says.
"""

import base64
import os
import re
import sys
import time

import harness
import pop3lib
from harness import PASSWORDS, Client, crlf, dot_stuff, plain_blob
from pop3lib import Pop3Client, pop3_tcp
from tlslib import dribble, log_lines

SENDER = "sender@remote.example"
ALICE = "alice@example.test"
BOB = "bob@example.test"
EHLO = (b"EHLO client.example\r\n", ["250"])


# ---------------------------------------------------------------------------------------
# Running scripts

def replies_of(out):
    """Handler output (bytes) as a list of replies: SMTP multi-line replies joined with
    '\\n'; POP3 lines one by one. Raises on a line that does not end in CRLF."""
    text = out.decode("latin-1")
    lines = text.split("\r\n")
    tail = lines.pop()
    assert tail == "", f"output does not end in CRLF: ...{text[-80:]!r}"
    for ln in lines:
        assert "\n" not in ln and "\r" not in ln, f"bare CR or LF in a reply line: {ln!r}"
    return lines


def smtp_replies(out):
    joined, cur = [], []
    for ln in replies_of(out):
        cur.append(ln)
        if len(ln) < 4 or ln[3] != "-":
            joined.append("\n".join(cur))
            cur = []
    assert not cur, f"unfinished multi-line reply at the end: {cur}"
    return joined


def check_log(err, what):
    """Habit 11: client text in logs is made printable. Sanitizer reports are ASCII too."""
    bad = [b for b in set(err) if (b < 0x20 and b not in (9, 10)) or b > 0x7e]
    assert not bad, (f"{what}: the log holds unprintable bytes {sorted(bad)[:8]}: "
                     f"{err[:300]!r}")


def show(data, n=70):
    r = repr(data)
    return r if len(r) <= n else r[:n] + f"...({len(data)} octets)"


def run_smtp(ctx, steps, env=None, greeting=True, timeout=60, closes=False):
    """Pipe the steps' input into pgmail-smtpd in one go and match each step's replies
    (prefixes) in order. closes: the handler ends the session after the last step without
    a QUIT (otherwise QUIT is added and 221 expected). Returns (replies, Result)."""
    data = b"".join(s for s, _ in steps)
    if not closes:
        data += b"QUIT\r\n"
    r = ctx.smtpd(data, env=env, timeout=timeout)
    assert r.rc == 0, f"pgmail-smtpd exited {r.rc}; stderr {r.err[-500:]!r}"
    check_log(r.err, "pgmail-smtpd")
    got = smtp_replies(r.out)
    i = 0
    if greeting:
        assert got and got[0].startswith("220 "), f"no greeting: {got[:2]}"
        i = 1
    for send, want in steps:
        for w in want:
            assert i < len(got), (f"after {show(send)}: expected {w!r}, the session ended; "
                                  f"last replies {got[-3:]}")
            assert got[i].startswith(w), (f"after {show(send)}: expected {w!r}, got "
                                          f"{got[i][:200]!r}")
            i += 1
    if not closes:
        assert i < len(got) and got[i].startswith("221"), f"QUIT: got {got[i:i + 2]}"
        i += 1
    assert i == len(got), f"unexpected replies at the end: {got[i:i + 5]}"
    return got, r


def run_pop3(ctx, steps, env=None, closes=False, timeout=60):
    """The same for pgmail-pop3d: each step's replies are status lines (prefixes); a step
    whose expected entry is a tuple ('+OK', 'multi') also consumes the multi-line data."""
    data = b"".join(s for s, _ in steps)
    if not closes:
        data += b"QUIT\r\n"
    r = pop3lib.pop3d_pipe(ctx, data, env=env, timeout=timeout)
    assert r.rc == 0, f"pgmail-pop3d exited {r.rc}; stderr {r.err[-500:]!r}"
    check_log(r.err, "pgmail-pop3d")
    lines = replies_of(r.out)
    assert lines and lines[0].startswith("+OK"), f"no greeting: {lines[:2]}"
    i = 1
    for send, want in steps:
        for w in want:
            multi = isinstance(w, tuple)
            w = w[0] if multi else w
            assert i < len(lines), f"after {show(send)}: expected {w!r}, the session ended"
            assert lines[i].startswith(w), (f"after {show(send)}: expected {w!r}, got "
                                            f"{lines[i][:200]!r}")
            i += 1
            if multi:
                while lines[i] != ".":
                    i += 1
                i += 1
    if not closes:
        assert i < len(lines) and lines[i].startswith("+OK"), f"QUIT: got {lines[i:i + 2]}"
        i += 1
    assert i == len(lines), f"unexpected lines at the end: {lines[i:i + 5]}"
    return lines, r


def cmd(line, *want):
    """A step: one command line (str or bytes; CRLF added) and its expected replies."""
    if isinstance(line, str):
        line = line.encode("latin-1")
    return (line + b"\r\n", list(want))


def raw(data, *want):
    """A step of raw bytes, sent as they are."""
    return (data, list(want))


def tx(sender=SENDER, rcpts=(BOB,), body=b"Subject: t\r\n\r\nhello\r\n", stuff=True):
    """Steps of one whole transaction answered 250 at every stage."""
    steps = [cmd(f"MAIL FROM:<{sender}>", "250 2.1.0")]
    steps += [cmd(f"RCPT TO:<{r}>", "250 2.1.5") for r in rcpts]
    steps.append(cmd("DATA", "354"))
    steps.append(raw((dot_stuff(body) if stuff else body) + b".\r\n", "250 2.0.0"))
    return steps


def stored_originals(ctx):
    """[(sender, recipients, original message)] of what was stored, oldest first."""
    return [(m.sender, m.recipients, harness.split_stored(m.body)[2]) for m in ctx.messages()]


def tables_intact(ctx):
    got = ctx.psql("SELECT count(*) FROM accounts").strip()
    assert got == "3", f"accounts has {got} rows, expected the 3 fixtures"
    for t in ("domains", "aliases", "messages", "mailbox"):
        ctx.psql(f"SELECT count(*) FROM {t}")


# ---------------------------------------------------------------------------------------
# SMTP: long lines

def test_smtp_command_line_at_and_over_the_limit(ctx):
    exact = b"NOOP " + b"x" * (2048 - 2 - 5)  # 2048 octets with CRLF: LIM_SMTP_LINE
    run_smtp(ctx, [
        EHLO,
        cmd(exact, "250 2.0.0"),
        cmd(exact + b"x", "500 5.5.2"),
        cmd(b"NOOP " + b"A" * (1 << 20), "500 5.5.2"),
        raw(b"NOOP " + b"B" * (1 << 20) + b"\n", "500 5.5.2"),
        cmd("RSET " + "C" * 5000, "500 5.5.2"),
        cmd("NOOP", "250 2.0.0"),  # in step
    ])


def test_smtp_unterminated_long_line_at_eof(ctx):
    # a line that never ends is not a command: no reply, a clean exit
    run_smtp(ctx, [EHLO, raw(b"MAIL FROM:<" + b"a" * 300000)], closes=True)
    run_smtp(ctx, [EHLO, raw(b"QUIT")], closes=True)  # not even QUIT without its line end


def test_smtp_long_data_lines_stored_exactly(ctx):
    one_mib = b"Subject: long\r\n\r\n" + b"L" * (1 << 20) + b"\r\n"
    # a line whose second 64 KiB piece starts with a dot: not a line start, kept
    boundary = b"Subject: piece\r\n\r\n" + b"a" * 65536 + b"." + b"b" * 10 + b"\r\n"
    # a 100 KiB line of dots (stuffed by the client, unstuffed once by the server)
    dots = b"Subject: dots\r\n\r\n" + b"." * 100000 + b"\r\n.\r\n..\r\n"
    steps = [EHLO] + tx(body=one_mib) + tx(body=boundary) + tx(body=dots)
    run_smtp(ctx, steps)
    got = [o for _, _, o in stored_originals(ctx)]
    assert got == [one_mib, boundary, dots], (
        f"stored messages differ from what was sent: lengths {[len(g) for g in got]} vs "
        f"{[len(one_mib), len(boundary), len(dots)]}")


# ---------------------------------------------------------------------------------------
# SMTP: NUL, bare CR, bare LF, 8-bit

def test_smtp_nul_bytes(ctx):
    body = b"Subject: nul\r\n\r\nbefore\0after\r\n\0\r\n"
    run_smtp(ctx, [
        EHLO,
        cmd(b"NO\0OP", "500 5.5.1"),
        cmd(b"\0", "500 5.5.1"),
        cmd(b"MAIL FROM:<a\0b@remote.example>", "500 5.5.1"),
        cmd(f"MAIL FROM:<{SENDER}>\0".encode(), "500 5.5.1"),
        cmd("NOOP", "250"),
    ] + tx(body=body))
    got = stored_originals(ctx)
    assert [o for _, _, o in got] == [body], f"NUL bytes in DATA not stored as sent: {got}"


def test_smtp_bare_cr_and_bare_lf_in_commands(ctx):
    # A bare LF ends a command (as in Postfix); a bare CR never does: the text after it is
    # never run as a command of its own, so client and server stay in step.
    run_smtp(ctx, [
        EHLO,
        raw(b"NOOP\n", "250 2.0.0"),
        raw(b"NOOP\rQUIT\r\n", "250 2.0.0"),  # no 221: QUIT after a bare CR is not a command
        raw(b"RSET\r\r\n", "250 2.0.0"),
        raw(b"\r\n", "500 5.5.1"),
        raw(b"\n", "500 5.5.1"),
        raw(b"MAIL FROM:<" + SENDER.encode() + b">\rRCPT TO:<bob@example.test>\r\n", "2"),
        raw(b"DATA\r\n", "503 5.5.1"),  # the RCPT behind the bare CR did not happen
        cmd("RSET", "250"),
    ] + tx())
    assert ctx.mailbox_count(BOB) == 1


def test_smtp_8bit_and_invalid_utf8_in_commands(ctx):
    run_smtp(ctx, [
        cmd(b"EHLO h\xffst.example", "501 5.5.4"),
        cmd(b"HELO \xed\xa0\x80", "501 5.5.4"),
        EHLO,
        cmd(b"NO\xffOP", "500 5.5.1"),
        cmd(b"\xc0\x80", "500 5.5.1"),
        cmd(b"NOOP \xff\xfe\xfd", "250 2.0.0"),
        cmd(b"MAIL FROM:<\xc3\xa9t\xc3\xa9@remote.example>", "501 5.1.7"),
        cmd(f"MAIL FROM:<{SENDER}>", "250 2.1.0"),
        cmd(b"RCPT TO:<b\xffob@example.test>", "501 5.1.3"),
        cmd(b"RCPT TO:<bob@ex\xe4mple.test>", "501 5.1.3"),
        cmd(b"RCPT TO:<bob@example.test> \xff", "555 5.5.4"),
    ])
    assert ctx.message_count() == 0


def test_smtp_8bit_data_stored_exactly(ctx):
    body = (b"Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"\r\ncaf\xc3\xa9 \xff\xfe invalid \xed\xa0\x80 \xc0\x80\r\n")
    run_smtp(ctx, [cmd("EHLO client.example", "250"),
                   cmd(f"MAIL FROM:<{SENDER}> BODY=8BITMIME", "250 2.1.0"),
                   cmd(f"RCPT TO:<{BOB}>", "250"), cmd("DATA", "354"),
                   raw(body + b".\r\n", "250 2.0.0")])
    assert [o for _, _, o in stored_originals(ctx)] == [body]


# ---------------------------------------------------------------------------------------
# SMTP: addresses

def test_smtp_addresses_quotes_comments_routes_literals(ctx):
    run_smtp(ctx, [
        EHLO,
        cmd('MAIL FROM:<"john doe"@remote.example>', "250 2.1.0"),
        cmd('RCPT TO:<"nobody here"@example.test>', "550 5.1.1"),
        cmd(f"RCPT TO:<{BOB}>", "250 2.1.5"),
        cmd("RCPT TO:<@relay.example,@other.example:alice@example.test>", "250 2.1.5"),
        cmd("RCPT TO:<@relay.example alice@example.test>", "501 5.1.3"),
        cmd("RCPT TO:<alice(comment)@example.test>", "501 5.1.3"),
        cmd("RCPT TO:<alice@example.test> (comment)", "555 5.5.4"),
        cmd("RCPT TO:(comment)<alice@example.test>", "501 5.1.3"),
        cmd("RCPT TO:<bob@[127.0.0.1]>", "554 5.7.1"),
        cmd("RCPT TO:<bob@[IPv6:::1]>", "554 5.7.1"),
        cmd("RCPT TO:<bob@[]>", "501 5.1.3"),
        cmd("RCPT TO:<bob@[1.2.3.4]x>", "501 5.1.3"),
        cmd("DATA", "354"),
        raw(b"Subject: routes\r\n\r\nx\r\n.\r\n", "250 2.0.0"),
    ])
    got = ctx.messages()
    assert len(got) == 1 and sorted(got[0].recipients) == [ALICE, BOB], got
    assert got[0].sender == '"john doe"@remote.example', got[0].sender


def test_smtp_quoted_local_part_is_the_same_mailbox(ctx):
    # RFC 5321 4.1.2 / RFC 5322 3.2.4: "bob" quoted is the same local part as bob (Postfix
    # strips quotes that are not needed before lookups); refusing it with 550 5.1.1 bounces
    # mail for an existing user.
    run_smtp(ctx, [EHLO, cmd(f"MAIL FROM:<{SENDER}>", "250"),
                   cmd('RCPT TO:<"bob"@example.test>', "250 2.1.5"),
                   cmd('RCPT TO:<"alice"@EXAMPLE.test>', "250 2.1.5")])


def test_smtp_address_lengths(ctx):
    run_smtp(ctx, [
        EHLO,
        cmd("MAIL FROM:<" + "a" * 300 + "@remote.example>", "501 5.1.7"),
        cmd("MAIL FROM:<@a.example:" + "b" * 65 + "@remote.example>", "501 5.1.7"),
        cmd("MAIL FROM:<" + "c" * 64 + "@" + "d" * 63 + ".example>", "250 2.1.0"),
        cmd("RCPT TO:<" + "a" * 300 + "@example.test>", "501 5.1.3"),
        cmd("RCPT TO:<" + "a" * 65 + "@example.test>", "501 5.1.3"),
        cmd("RCPT TO:<" + "a" * 64 + "@example.test>", "550 5.1.1"),
        cmd("RCPT TO:<bob@" + "e" * 64 + ".example.test>", "501 5.1.3"),
        cmd("RCPT TO:<bob@" + ("f" * 62 + ".") * 4 + "test>", "501 5.1.3"),  # domain > 255
        cmd("RCPT TO:<" + "x" * 64 + "@" + ("g" * 62 + ".") * 3 + "example>", "501 5.1.3"),
    ])


def test_smtp_address_syntax(ctx):
    run_smtp(ctx, [
        EHLO,
        cmd("MAIL FROM:alice@remote.example", "501 5.1.7"),
        cmd("MAIL FROM:<<a@remote.example>>", "501 5.1.7"),
        cmd("MAIL FROM:<a@remote.example>x", "501 5.1.7"),
        cmd("MAIL FROM:<a@remote.example", "501 5.1.7"),
        cmd("MAIL FROM:<a..b@remote.example>", "501 5.1.7"),
        cmd("MAIL FROM: <a@remote.example>", "250 2.1.0"),
        cmd("RCPT TO:<>", "501 5.1.3"),
        cmd("RCPT TO:bob@example.test", "501 5.1.3"),
        cmd("RCPT TO:<Postmaster>", "250 2.1.5"),
        cmd("RSET", "250"),
        cmd("MAIL FROM:<>", "250 2.1.0"),
    ])


def test_smtp_mail_parameters_out_of_range(ctx):
    run_smtp(ctx, [
        EHLO,
        cmd(f"MAIL FROM:<{SENDER}> SIZE=99999999999999999999", "552 5.3.4"),
        cmd(f"MAIL FROM:<{SENDER}> SIZE=-1", "501 5.5.4"),
        cmd(f"MAIL FROM:<{SENDER}> SIZE=1x", "501 5.5.4"),
        cmd(f"MAIL FROM:<{SENDER}> SIZE=", "501 5.5.4"),
        cmd(f"MAIL FROM:<{SENDER}> BODY=BINARYMIME", "501 5.5.4"),
        cmd(f"MAIL FROM:<{SENDER}> X" + "Y" * 1000 + "=1", "555 5.5.4"),
        cmd(f"MAIL FROM:<{SENDER}> SIZE=10 SIZE=1000000000000", "552 5.3.4"),
        cmd(f"MAIL FROM:<{SENDER}> SIZE=100 BODY=8BITMIME AUTH=<>", "250 2.1.0"),
    ])


# ---------------------------------------------------------------------------------------
# SMTP: many recipients

def _rcpt_flood(ctx, n, extra=b"", env=None):
    data = (b"EHLO client.example\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n"
            + b"".join(b"RCPT TO:<alice+%d@example.test>\r\n" % i for i in range(n)) + extra)
    t0 = time.monotonic()
    r = ctx.smtpd(data, env=env, timeout=80)
    took = time.monotonic() - t0
    assert r.rc == 0, f"pgmail-smtpd exited {r.rc}"
    check_log(r.err, "pgmail-smtpd")
    return smtp_replies(r.out)[3:], took  # after greeting, EHLO, MAIL


def test_smtp_ten_thousand_rcpt(ctx):
    # 1000 recipients (the default max_recipients) are accepted; every RCPT after that is
    # 452 4.5.3 (RFC 5321 4.5.3.1.10). Those count toward the error limit here, so the
    # session may end with 421 4.7.0 - but never with a 5xx, never storing anything.
    if ctx.san:  # the tarpit makes this 10 s; under the sanitizers, 1,010 are enough
        got, _ = _rcpt_flood(ctx, 1010, b"QUIT\r\n")
        assert [g[:9] for g in got] == ["250 2.1.5"] * 1000 + ["452 4.5.3"] * 10 + [
            "221 2.0.0"], collections_count([g[:9] for g in got])
        return
    got, took = _rcpt_flood(ctx, 10000, b"QUIT\r\n")
    codes = [g[:9] for g in got]
    assert codes[:1000] == ["250 2.1.5"] * 1000, f"the first 1000: {collections_count(codes[:1000])}"
    rest = codes[1000:]
    assert rest and all(c == "452 4.5.3" for c in rest[:-1]), collections_count(rest)
    assert rest[-1] in ("452 4.5.3", "421 4.7.0", "221 2.0.0"), rest[-3:]
    assert took < 60, f"10,000 RCPT took {took:.0f}s"
    assert ctx.message_count() == 0


def test_smtp_recipient_overshoot_then_data(ctx):
    # A client that pipelines more RCPTs than the server's limit gets 452 for the excess
    # and goes on with DATA for the ones accepted (RFC 5321 4.5.3.1.10: 452, and the client
    # "SHOULD" then send the rest later; Postfix lets smtpd_recipient_overshoot_limit =
    # 1000 excess RCPTs pass without counting them as errors). So 25 too many must not end
    # the session before DATA.
    if ctx.san:
        return  # protocol logic, 10 s of tarpit when it fails: the normal pass suffices
    env = {"PGMAIL_MAX_RECIPIENTS": "50"}
    msg = dot_stuff(crlf("Subject: overshoot\n\nto many\n")) + b".\r\n"
    got, took = _rcpt_flood(ctx, 75, b"DATA\r\n" + msg + b"QUIT\r\n", env=env)
    codes = [g[:9] for g in got]
    assert codes[:50] == ["250 2.1.5"] * 50, collections_count(codes[:50])
    assert codes[50:75] == ["452 4.5.3"] * 25, (
        f"RCPT 51-75 (over the limit of 50): {collections_count(codes[50:75])}")
    assert codes[75:] == ["354 End d", "250 2.0.0", "221 2.0.0"], (
        f"after 25 RCPTs over the limit, DATA did not go through: {got[74:]}")
    assert ctx.mailbox_count(ALICE) == 1


def collections_count(codes):
    import collections
    return dict(collections.Counter(codes))


# ---------------------------------------------------------------------------------------
# SMTP: AUTH

def test_smtp_auth_oversized_blobs(ctx):
    big = base64.b64encode(b"\0" + b"u" * 40000 + b"\0" + b"p" * 40000).decode()
    big += "A" * (100 * 1024 - len(big))  # 100 KiB of base64
    run_smtp(ctx, [
        EHLO,
        cmd("AUTH PLAIN " + big, "500 5.5.2"),
        cmd("AUTH PLAIN", "334"),
        cmd(big, "500 5.5.6"),
        cmd("AUTH LOGIN", "334 VXNlcm5hbWU6"),
        cmd(big, "500 5.5.6"),
        cmd("AUTH LOGIN", "334 VXNlcm5hbWU6"),
        cmd(base64.b64encode(ALICE.encode()).decode(), "334 UGFzc3dvcmQ6"),
        cmd(big, "500 5.5.6"),
        cmd("NOOP", "250"),
        # the longest continuation accepted (LIM_SMTP_AUTH_LINE with CRLF): no NULs inside,
        # so not a PLAIN credential: a failed login
        cmd("AUTH PLAIN", "334"),
        cmd("QUFB" * 3071, "535 5.7.8"),
        cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}", "235 2.7.0"),
    ], env={"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"})


def test_smtp_auth_invalid_base64(ctx):
    run_smtp(ctx, [
        EHLO,
        cmd("AUTH PLAIN !!!!", "501 5.5.2"),
        cmd("AUTH PLAIN YWJj=", "501 5.5.2"),
        cmd("AUTH PLAIN ====", "501 5.5.2"),
        cmd("AUTH PLAIN Y", "501 5.5.2"),
        cmd(b"AUTH PLAIN \xff\xfe\xfd\xfc", "501 5.5.2"),
        cmd("AUTH LOGIN", "334"), cmd("*not base64*", "501 5.5.2"),
        cmd("AUTH LOGIN", "334"), cmd("=", "334"), cmd("%%%%", "501 5.5.2"),
        cmd("NOOP", "250"),
    ])


def test_smtp_auth_invalid_utf8_user_is_a_failed_login(ctx):
    # A user name that is not UTF-8 names no account: 535 5.7.8 after the failure delay,
    # like any unknown user - not 454 4.7.0 "temporary" (the database refused the bytes).
    env = {"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"}
    run_smtp(ctx, [
        EHLO,
        cmd("AUTH PLAIN " + base64.b64encode(b"\0\xff\xfeuser@example.test\0pw").decode(),
            "535 5.7.8"),
        cmd("AUTH LOGIN", "334"), cmd(base64.b64encode(b"\xc3\x28").decode(), "334"),
        cmd(harness.b64("pw"), "535 5.7.8"),
    ], env=env)


def test_smtp_auth_sql_metacharacters(ctx):
    env = {"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"}
    or_true = ALICE + "' OR '1'='1"
    drop = "'; DROP TABLE accounts;--"
    run_smtp(ctx, [
        EHLO,
        cmd(f"AUTH PLAIN {plain_blob(or_true, 'x')}", "535 5.7.8"),
        cmd(f"AUTH PLAIN {plain_blob(drop, chr(39) + ' OR 1=1 --')}", "535 5.7.8"),
    ], env=env)
    run_smtp(ctx, [
        EHLO,
        cmd("AUTH LOGIN", "334"),
        cmd(harness.b64("alice@example.test'--"), "334"),
        cmd(harness.b64("' OR ''='"), "535 5.7.8"),
        cmd(f"AUTH PLAIN {plain_blob('%', '%')}", "535 5.7.8"),
    ], env=env)
    tables_intact(ctx)


# ---------------------------------------------------------------------------------------
# SMTP: SQL metacharacters everywhere

def test_smtp_sql_metacharacters_in_envelope_and_helo(ctx):
    q_sender = "\"'; DROP TABLE accounts;--\"@remote.example"
    esc_sender = '"a\\\\b\\"c\\.\\n"@remote.example'  # backslashes for COPY to get wrong
    odd_sender = "o'hara%20{x}|y$1@remote.example"
    run_smtp(ctx, [
        cmd("EHLO ';DROP", "250"),
        cmd("MAIL FROM:<'; DROP TABLE accounts;--@example.test>", "501 5.1.7"),
        cmd(f"MAIL FROM:<{SENDER}>", "250"),
        cmd("RCPT TO:<'--@example.test>", "550 5.1.1"),
        cmd("RCPT TO:<bob'--@example.test>", "550 5.1.1"),
        cmd("RCPT TO:<bob@example.test'-->", "501 5.1.3"),
        cmd("RCPT TO:<\"'; DROP TABLE accounts;--\"@example.test>", "550 5.1.1"),
        cmd("RCPT TO:<%@example.test>", "550 5.1.1"),
        cmd("RCPT TO:<bob@%>", "501 5.1.3"),
        cmd("RSET", "250"),
    ] + tx(sender=q_sender) + tx(sender=esc_sender) + tx(sender=odd_sender))
    got = stored_originals(ctx)
    assert [s for s, _, _ in got] == [q_sender, esc_sender, odd_sender], (
        f"senders stored as {[s for s, _, _ in got]}")
    for m in ctx.messages():
        assert b"Received: from ';DROP " in m.body, m.body[:200]
    tables_intact(ctx)


# ---------------------------------------------------------------------------------------
# SMTP: floods and timing

def test_smtp_pipelined_noop_flood(ctx):
    n = 50000
    r = ctx.smtpd(b"EHLO client.example\r\n" + b"NOOP\r\n" * n + b"QUIT\r\n", timeout=60)
    assert r.rc == 0
    got = smtp_replies(r.out)
    assert len(got) == n + 3, f"{len(got)} replies to {n + 2} commands and the greeting"
    assert set(got[2:-1]) == {"250 2.0.0 OK"}, collections_count(got[2:-1])
    assert got[-1].startswith("221")


def test_smtp_pipelined_transaction_flood(ctx):
    n = 200
    steps = [EHLO]
    for i in range(n):
        steps += tx(body=crlf(f"Subject: flood {i}\n\n.{i}\n"))
    run_smtp(ctx, steps)
    got = stored_originals(ctx)
    assert len(got) == n, f"{len(got)} of {n} pipelined messages stored"
    for i, (_, rcpts, orig) in enumerate(got):
        assert orig == crlf(f"Subject: flood {i}\n\n.{i}\n") and rcpts == [BOB], (i, orig)


def test_smtp_commands_before_greeting(ctx):
    # pgmail has no greet pause: a client that talks first is served in order (replies come
    # after the greeting), and nothing it sent is lost or answered twice.
    with ctx.tcp() as srv, Client(srv.port) as c:
        c.send(b"EHLO early.example\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n"
               b"RCPT TO:<bob@example.test>\r\nQUIT\r\n")
        got = c.replies_until_close(10)
    assert [g[:3] for g in got] == ["220", "250", "250", "250", "221"], got


# ---------------------------------------------------------------------------------------
# SMTP smuggling (2023 advisories): only <CRLF>.<CRLF> ends the data

SMUGGLE_SEQS = [
    b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r.\n", b"\n.\r",
    b"\n.\r\r\n", b"\r\n.\r\r\n", b"\r\n.\r \r\n", b"\r\n.\0\r\n", b"\r\n\0.\r\n",
    b"\r\r\n.\r\r\n", b"\r\n.\n\r\n", b"\r\n \r\n.\n",
]
SMUGGLED = (b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled text\r\n")


def _smuggling(ctx, mode):
    """Every variant in one session per handful (a 550 counts toward the tarpit): each
    transaction to alice carries the variant, then a smuggled transaction to bob, then the
    real end of data. Each must be one message to alice holding the smuggled text (or, in
    reject mode with a bare LF in it, refused whole); bob must get nothing."""
    env = {"PGMAIL_BARE_NEWLINE": mode}
    expected = {}
    for start in range(0, len(SMUGGLE_SEQS), 8):
        steps = [EHLO]
        for k, seq in enumerate(SMUGGLE_SEQS[start:start + 8], start):
            data = b"Subject: outer %d\r\n\r\nbefore" % k + seq + SMUGGLED + b".\r\n"
            bare_lf = re.search(rb"(?<!\r)\n", b"before" + seq + b"M") is not None
            want = "550 5.5.2" if (mode == "reject" and bare_lf) else "250 2.0.0"
            expected[k] = want
            steps += [cmd(f"MAIL FROM:<{SENDER}>", "250"), cmd(f"RCPT TO:<{ALICE}>", "250"),
                      cmd("DATA", "354"), raw(data, want)]
        try:
            run_smtp(ctx, steps, env=env)
        except AssertionError as e:
            raise AssertionError(f"bare_newline={mode}: {e}") from None
    assert ctx.mailbox_count(BOB) == 0, (
        f"bare_newline={mode}: smuggling reached bob: {ctx.messages()}")
    stored = {}
    for m in ctx.messages():
        k = int(re.search(rb"Subject: outer (\d+)", m.body).group(1))
        assert k not in stored, f"variant {SMUGGLE_SEQS[k]!r} stored twice"
        stored[k] = m
        assert m.recipients == [ALICE], f"variant {SMUGGLE_SEQS[k]!r}: {m}"
        assert b"smuggled text" in m.body, f"variant {SMUGGLE_SEQS[k]!r}: {m.body[-200:]!r}"
    for k, want in expected.items():
        assert (k in stored) == want.startswith("250"), (
            f"bare_newline={mode}, variant {SMUGGLE_SEQS[k]!r}: answered {want} but "
            f"{'stored' if k in stored else 'not stored'}")


def test_smtp_smuggling_variants_normalize(ctx):
    _smuggling(ctx, "normalize")


def test_smtp_smuggling_variants_reject(ctx):
    _smuggling(ctx, "reject")


# ---------------------------------------------------------------------------------------
# POP3

def _two_messages(ctx):
    for i in (1, 2):
        pop3lib.insert_message(ctx, ALICE, crlf(f"Subject: m{i}\n\nbody {i}\n"))


LOGIN = [cmd(f"USER {ALICE}", "+OK"), cmd(f"PASS {PASSWORDS[ALICE]}", "+OK")]


def test_pop3_long_lines_nul_bare_cr_lf(ctx):
    _two_messages(ctx)
    exact = b"USER " + b"a" * (255 - 2 - 5)  # 255 octets with CRLF: LIM_POP3_LINE
    run_pop3(ctx, [
        cmd(exact, "+OK"),
        cmd(exact + b"a", "-ERR"),
        cmd(b"CAPA " + b"x" * (1 << 20), "-ERR"),
        raw(b"CAPA\n", ("+OK", "multi")),
        cmd(b"US\0ER alice", "-ERR"),
        cmd(b"USER al\0ice@example.test", "-ERR"),
        raw(b"\r\n", "-ERR"),
        cmd(b"CA\xffPA", "-ERR"),
    ] + LOGIN + [
        raw(b"NOOP\rQUIT\r\n", "+OK"),  # QUIT after a bare CR is not a command
        raw(b"STAT\n", "+OK 2 "),
        cmd(b"LIST " + b"1" * 300, "-ERR"),
        cmd("LIST 1", "+OK 1 "),
    ])


def test_pop3_bad_message_numbers(ctx):
    _two_messages(ctx)
    bad = ["LIST 0", "LIST -1", "LIST 99999999999999999999", "LIST 18446744073709551617",
           "LIST 18446744073709551616", "LIST 4294967297", "LIST 1x", "LIST +1", "LIST 0x1"]
    bad2 = ["RETR 3", "RETR 0", "DELE 0", "DELE -1", "UIDL 99999999999999999999",
            "TOP 1 -1", "TOP 1 99999999999999999999", "TOP 1 1x", "TOP 1 2 3"]
    bad3 = ["TOP 0 1", "TOP 99999999999999999999 0", "RETR", "DELE 1 2", "RETR 1x",
            "LIST 1 1", "UIDL -0", "RETR 2147483649", "DELE 4294967298"]
    for group in (bad, bad2, bad3):
        run_pop3(ctx, LOGIN + [cmd(c, "-ERR") for c in group] + [cmd("STAT", "+OK 2 ")])
    run_pop3(ctx, LOGIN + [cmd("DELE 1", "+OK"), cmd("DELE 1", "-ERR"), cmd("RETR 1", "-ERR"),
                           cmd("LIST 1", "-ERR"), cmd("RSET", "+OK 2 "),
                           cmd("RETR 1", ("+OK", "multi")), cmd("TOP 2 0", ("+OK", "multi"))])
    assert ctx.mailbox_count(ALICE) == 2


def test_pop3_flood_and_error_limit(ctx):
    _two_messages(ctx)
    n = 20000
    lines, _ = run_pop3(ctx, LOGIN + [raw(b"NOOP\r\n" * n, *(["+OK"] * n))])
    run_pop3(ctx, [raw(b"XYZZY\r\n" * 1000, *(["-ERR"] * 11))], closes=True)
    run_pop3(ctx, LOGIN + [raw(b"STAT 1\r\n" * 1000, *(["-ERR"] * 11))], closes=True)
    assert ctx.mailbox_count(ALICE) == 2


DROP = "'; DROP TABLE accounts;--"


def test_pop3_sql_metacharacters_in_logins(ctx):
    env = {"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"}
    run_pop3(ctx, [
        cmd("USER ' OR '1'='1", "+OK"), cmd("PASS ' OR '1'='1", "-ERR [AUTH]"),
        cmd("USER alice@example.test'--", "+OK"), cmd(f"PASS {PASSWORDS[ALICE]}", "-ERR [AUTH]"),
    ], env=env)
    run_pop3(ctx, [
        cmd(f"AUTH PLAIN {plain_blob(DROP, 'x')}", "-ERR [AUTH]"),
        cmd(f"AUTH PLAIN {plain_blob('%', '%')}", "-ERR [AUTH]"),
    ], env=env)
    tables_intact(ctx)


def test_pop3_invalid_utf8_user_is_a_failed_login(ctx):
    # as for SMTP: -ERR [AUTH], not -ERR [SYS/TEMP] (RFC 3206: SYS/TEMP is a problem of the
    # server that may go away; this answer never changes)
    env = {"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"}
    run_pop3(ctx, [
        cmd(b"USER \xff\xfe\xc0\x80", "+OK"), cmd(b"PASS \xed\xa0\x80", "-ERR [AUTH]"),
        cmd("AUTH PLAIN " + base64.b64encode(b"\0\xc3\x28@example.test\0pw").decode(),
            "-ERR [AUTH]"),
    ], env=env)


def test_pop3_auth_oversized_and_invalid(ctx):
    big = "QUFB" * (100 * 1024 // 4)
    run_pop3(ctx, [
        cmd("AUTH PLAIN " + big, "-ERR"),
        cmd("AUTH PLAIN", "+ "),
        cmd(big, "-ERR"),
        cmd("AUTH PLAIN !!!!", "-ERR"),
        cmd("AUTH PLAIN", "+ "), cmd("YWJj=", "-ERR"),
        cmd("AUTH PLAIN", "+ "), cmd("QUFB" * 3071, "-ERR [AUTH]"),
        cmd("CAPA", ("+OK", "multi")),
        cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}", "+OK"),
    ], env={"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"})


def test_pop3_commands_before_greeting(ctx):
    _two_messages(ctx)
    with pop3_tcp(ctx) as srv:
        c = Pop3Client(srv.port, greet=False)
        c.send(f"USER {ALICE}\r\nPASS {PASSWORDS[ALICE]}\r\nSTAT\r\nQUIT\r\n")
        got = [c.status() for _ in range(5)]
        assert c.closed(5)
        c.close()
    assert [g[:3] for g in got] == ["+OK"] * 5 and got[3].startswith("+OK 2 "), got


# ---------------------------------------------------------------------------------------
# Slow clients: a line must arrive whole within the timeout (2 s here), whatever trickles in

def trickled(c, line):
    """Trickle line into Client/Pop3Client c one byte every 0.5 s; assert the server spoke
    (or closed) before the line was complete, after at least the timeout."""
    sent = dribble(c.sock, [line[i:i + 1] for i in range(len(line))], 0.5)
    assert sent < len(line), "the server waited for the whole trickled line"
    assert sent >= 3, f"the server gave up after {sent} bytes, before the 2 s timeout"


def test_smtp_trickled_command_and_data_line_time_out(ctx):
    with ctx.tcp(env={"PGMAIL_SMTP_TIMEOUT": "2"}) as srv:
        with Client(srv.port) as c:
            assert c.reply().startswith("220 ")
            trickled(c, b"EHLO a-client-that-types-one-letter-at-a-time.example\r\n")
            assert c.reply().startswith("421 4.4.2 "), "timeout reply"
            assert c.closed(), "the session stayed open after 421"
        with harness.session(srv.port) as c:
            assert c.cmd(f"MAIL FROM:<{SENDER}>").startswith("250")
            assert c.cmd(f"RCPT TO:<{BOB}>").startswith("250")
            assert c.cmd("DATA").startswith("354")
            c.send(b"Subject: slow\r\n\r\n")
            trickled(c, b"a body line that takes one second per two letters\r\n.\r\n")
            assert c.reply().startswith("421 4.4.2 "), "timeout reply in DATA"
            assert c.closed(), "the session stayed open after 421"
        assert srv.wait_handlers(10), "a handler outlived its timeout"
        aborted = log_lines(srv, "data-aborted")
        assert len(aborted) == 1 and "reason=timeout" in aborted[0], aborted
        # (The disconnect after a DATA timeout is issue 12 point 16's: only the first here.)
        ends = log_lines(srv, "disconnect")
        assert len(ends) == 2 and "reason=timeout" in ends[0], ends
    assert ctx.messages() == [], "a timed-out message was stored"


def test_pop3_trickled_command_times_out(ctx):
    with pop3_tcp(ctx, env={"PGMAIL_POP3_TIMEOUT": "2"}) as srv:
        with Pop3Client(srv.port) as c:
            trickled(c, b"USER alice@example.test\r\n")
            assert c.closed(), "the session stayed open after the timeout"
        with Pop3Client(srv.port) as c:
            c.login()
            trickled(c, b"LIST 1 2 3 4 5 6 7 8 9\r\n")
            assert c.closed(), "the session stayed open after the timeout"
        assert srv.wait_handlers(10), "a handler outlived its timeout"
        ends = log_lines(srv, "disconnect")
        assert len(ends) == 2 and all("reason=timeout" in ln for ln in ends), ends


# ---------------------------------------------------------------------------------------
# A hostname that is not a domain name never reaches the greeting, Received: or bounces

SMTP_CONFIG_ERROR = b"421 4.3.5 Server configuration error, closing connection\r\n"
POP3_CONFIG_ERROR = b"-ERR [SYS/PERM] Server configuration error\r\n"


def config_refused(r, reply, *where):
    assert r.out == reply, f"expected only {reply!r}, got {r.out[:300]!r}"
    err = r.err.decode("latin-1")
    assert "event=config-error" in err and all(w in err for w in where), err[-800:]


def test_bad_hostname_refused_with_config_error(ctx):
    for name in ("", "a b", "a>b", "mx.example.test.", "-mx.example.test", "[192.0.2.300]"):
        r = ctx.smtpd(b"EHLO client.example\r\nQUIT\r\n", env={"PGMAIL_HOSTNAME": name})
        config_refused(r, SMTP_CONFIG_ERROR, "PGMAIL_HOSTNAME", "hostname")
    path = os.path.join(ctx.tmp, "bad-hostname.conf")
    with open(path, "w") as f:
        f.write("# our name\nhostname = mail example\n")
    env = {"PGMAIL_CONFIG": path, "PGMAIL_HOSTNAME": None}
    config_refused(ctx.smtpd(b"QUIT\r\n", env=env), SMTP_CONFIG_ERROR, f"{path}:2:",
                   "key 'hostname'")
    config_refused(pop3lib.pop3d_pipe(ctx, b"QUIT\r\n", env=env), POP3_CONFIG_ERROR,
                   f"{path}:2:", "key 'hostname'")
    for name in ("[192.0.2.1]", "[IPv6:2001:db8::1]", "mx"):
        run_smtp(ctx, [EHLO], env={"PGMAIL_HOSTNAME": name})


def test_bad_system_hostname_refused_with_config_error(ctx):
    """Without a hostname key the system's name is used: when it is no domain name, the
    handler says so (run in a UTS namespace of its own whose host name is 'a b')."""
    setname = ("import os, socket, sys; socket.sethostname(sys.argv[1]); "
               "os.execv(sys.argv[2], sys.argv[2:])")
    env = ctx.env({"PGMAIL_HOSTNAME": None})
    for name, good in (("a b", False), ("mx.example.test", True)):
        argv = ["unshare", "--user", "--map-root-user", "--uts", sys.executable, "-c", setname,
                name, ctx.smtpd_bin]
        r = harness.pipe_run(ctx, argv, b"QUIT\r\n", env, what="pgmail-smtpd")
        if good:
            assert r.out.startswith(b"220 mx.example.test "), r.out[:200]
        else:
            config_refused(r, SMTP_CONFIG_ERROR, "system's host name 'a b'",
                           "set hostname in /dev/null")
