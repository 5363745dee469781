"""milter: pgmail-smtpd's milter client (issue 14) against a scripted milter
(tests/lib/scripted_milter.py), over TCP behind systemd-socket-activate: negotiation,
events and macros, every verdict at every stage, header edits applied as Postfix applies
them, the default action for a milter that is down, stalls, closes mid-body or answers
garbage (no crash, nothing half-stored), forged Authentication-Results removed, the header
section bounded, several messages in one session. The real milters from Debian (rspamd,
OpenDKIM, OpenDMARC) are in test_milter_real.py.
"""

import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from harness import HOST, crlf, expect, send_mail, session  # noqa: E402
from scripted_milter import ScriptedMilter  # noqa: E402
from tlslib import log_lines  # noqa: E402

SENDER = "sender@remote.example"
ALICE, BOB = "alice@example.test", "bob@example.test"


def small(subject="small", body="hello\n", extra=""):
    return crlf(f"From: {SENDER}\nTo: {ALICE}\nSubject: {subject}\n{extra}\n{body}")


def env_for(*milters, **more):
    env = {"PGMAIL_MILTERS": " ".join(m.spec for m in milters),
           "PGMAIL_MILTER_COMMAND_TIMEOUT": 5, "PGMAIL_MILTER_CONTENT_TIMEOUT": 5,
           "PGMAIL_MILTER_CONNECT_TIMEOUT": 5}
    env.update({f"PGMAIL_{k.upper()}": v for k, v in more.items()})
    return env


def stored_headers(body):
    """The header section of a stored message (bytes) as a list of (name, raw field)."""
    head = body.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    fields = re.findall(rb"[^ \t\r\n][^:\r\n]*:.*?\r\n(?![ \t])", head, re.S)
    return [(f.split(b":", 1)[0].decode(), f) for f in fields]


def one_message(ctx, milters, msg, rcpts=(ALICE,), **more):
    """Send msg in one session through milters; returns (reply to the dot, server log)."""
    with ctx.tcp(env=env_for(*milters, **more)) as srv:
        with session(srv.port) as c:
            reply = send_mail(c, SENDER, list(rcpts), msg)
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
        return reply, srv.log()


def dialogue(ctx, milters, steps, **more):
    """One session through milters: each (command, expected reply prefix) in turn, then
    QUIT; returns the server log."""
    with ctx.tcp(env=env_for(*milters, **more)) as srv:
        with session(srv.port) as c:
            for command, want in steps:
                expect(c.cmd(command), want, command)
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
        return srv.log()


def test_negotiation_events_and_macros(ctx):
    msg = small("events", "line one\nline two\n")
    with ScriptedMilter() as m:
        reply, _ = one_message(ctx, [m], msg)
        expect(reply, "250 2.0.0", "final dot")
    # Protocol version 6; the header edits and quarantine offered, nothing else; every step.
    assert m.offered == (6, 0x31, 0x1ff7ff), m.offered
    stages = m.stages()
    assert stages[:5] == ["connect", "helo", "mail", "rcpt", "data"], stages
    assert stages[-3:] == ["body", "eom", "quit"], stages
    headers = [p for s, p in m.events if s == "header"]
    names = [h.split(b"\0")[0].decode() for h in headers]
    assert names == ["Received", "From", "To", "Subject"], names
    # Values without their leading space, folds as LF, no final line end.
    subj = headers[3].split(b"\0")
    assert subj[1] == b"events", subj
    received = headers[0].split(b"\0")[1]
    assert received.startswith(b"from client.example (127.0.0.1)\n\tby " + HOST.encode()), received
    assert b"\r" not in received
    body = b"".join(p for s, p in m.events if s == "body")
    assert body == b"line one\r\nline two\r\n", body
    conn = [p for s, p in m.events if s == "connect"][0]
    assert conn.startswith(b"unknown\x004") and conn.endswith(b"127.0.0.1\0"), conn
    assert m.events[1][1] == b"client.example\0"
    assert [p for s, p in m.events if s == "mail"][0] == f"<{SENDER}>\0".encode()
    assert [p for s, p in m.events if s == "rcpt"][0] == f"<{ALICE}>\0".encode()
    c = m.macros["C"]
    assert c["j"] == HOST and c["{daemon_name}"] == HOST and c["v"] == "pgmail", c
    assert c["{client_addr}"] == "127.0.0.1" and c["_"] == "unknown [127.0.0.1]", c
    assert m.macros["M"]["{mail_addr}"] == SENDER
    assert m.macros["R"]["{rcpt_addr}"] == ALICE
    stored = ctx.messages()
    assert len(stored) == 1
    assert m.macros["E"]["i"] == str(stored[0].id), (m.macros["E"], stored[0].id)


def test_auth_macros(ctx):
    with ScriptedMilter() as m, ctx.tcp(env=env_for(m)) as srv:
        with session(srv.port, auth=ALICE) as c:
            expect(send_mail(c, ALICE, [BOB], small("submitted")), "250 2.0.0", "dot")
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
    assert m.macros["M"]["{auth_type}"] == "PLAIN", m.macros["M"]
    assert m.macros["M"]["{auth_authen}"] == ALICE, m.macros["M"]


def test_header_edits_as_postfix_applies_them(ctx):
    # add appends; insert 0 goes to the top (above our Received); change 1 of Subject
    # replaces it; an empty change deletes; a change of a field that is not there adds it.
    eom = [("add", "X-Added", "one"), ("insert", 0, "X-Top", "top"),
           ("insert", 2, "X-Third", "after received and from"),
           ("change", 1, "Subject", "changed\n\tfolded"), ("change", 1, "To", ""),
           ("change", 1, "X-Missing", "appended"), "continue"]
    msg = small("original", "body stays\n")
    with ScriptedMilter({"eom": eom}) as m:
        reply, _ = one_message(ctx, [m], msg)
    expect(reply, "250 2.0.0", "final dot")
    body = ctx.messages()[0].body
    names = [n for n, _ in stored_headers(body)]
    assert names == ["Return-Path", "X-Top", "Received", "X-Third", "From", "Subject",
                     "X-Added", "X-Missing"], names
    fields = dict(stored_headers(body))
    assert fields["Subject"] == b"Subject: changed\r\n\tfolded\r\n", fields["Subject"]
    assert fields["X-Added"] == b"X-Added: one\r\n"
    assert body.endswith(b"\r\n\r\nbody stays\r\n"), body[-40:]
    # The stored size is the row's, exactly (CHECK size = octet_length(body)), and POP3
    # reads what was stored.
    assert ctx.messages()[0].size == len(body)


def test_reject_with_own_reply_then_next_message(ctx):
    count = {"n": 0}

    def eom(_payload):
        count["n"] += 1
        return [("reply", "554 5.7.1 Spam message rejected")] if count["n"] == 1 else ["continue"]

    with ScriptedMilter({"eom": eom}) as m, ctx.tcp(env=env_for(m)) as srv:
        with session(srv.port) as c:
            expect(send_mail(c, SENDER, [ALICE], small("spam")), "554 5.7.1 Spam message rejected",
                   "first message")
            expect(send_mail(c, SENDER, [ALICE], small("ham")), "250 2.0.0", "second message")
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
        assert len(log_lines(srv, "milter-reject")) == 1, srv.log()
    stored = ctx.messages()
    assert len(stored) == 1 and b"Subject: ham" in stored[0].body


def test_multiline_reply_and_plain_verdicts(ctx):
    cases = [(["reject"], "550 5.7.1 Command rejected"),
             (["tempfail"], "451 4.7.1 Service unavailable"),
             ([("reply", "550-5.7.1 first line\r\n550 5.7.1 second line")], "550-5.7.1 first line"),
             ([("reply", "421 4.7.0 later")], "421 4.7.0 later")]
    for actions, want in cases:
        with ScriptedMilter({"eom": actions}) as m:
            reply, _ = one_message(ctx, [m], small("verdict"))
        expect(reply, want, str(actions))
    assert ctx.message_count() == 0


def test_rcpt_reject_refuses_that_recipient_only(ctx):
    def rcpt(payload):
        return [("reply", "550 5.7.1 not this one")] if b"bob@" in payload else ["continue"]

    with ScriptedMilter({"rcpt": rcpt}) as m, ctx.tcp(env=env_for(m)) as srv:
        with session(srv.port) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250", "MAIL")
            expect(c.cmd(f"RCPT TO:<{BOB}>"), "550 5.7.1 not this one", "RCPT bob")
            expect(c.cmd(f"RCPT TO:<{ALICE}>"), "250", "RCPT alice")
            expect(c.cmd("DATA"), "354", "DATA")
            c.send(small("for alice") + b".\r\n")
            expect(c.reply(), "250 2.0.0", "dot")
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
    stored = ctx.messages()
    assert len(stored) == 1 and stored[0].recipients == [ALICE], stored


def test_mail_and_data_stage_refusals(ctx):
    mail, rcpt = f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{ALICE}>"
    with ScriptedMilter({"mail": ["tempfail"]}) as m:
        # No transaction after a refused MAIL.
        dialogue(ctx, [m], [(mail, "451 4.7.1"), (rcpt, "503")])
    with ScriptedMilter({"data": [("reply", "554 5.7.1 no data today")]}) as m:
        dialogue(ctx, [m], [(mail, "250"), (rcpt, "250"), ("DATA", "554 5.7.1 no data today")])
    # The milter that refused is out of the message: it is owed no abort.
    assert "abort" not in m.stages(), m.stages()
    # A transaction that ends early (RSET) is aborted for the milters that are in it.
    with ScriptedMilter() as m:
        dialogue(ctx, [m], [(mail, "250"), (rcpt, "250"), ("RSET", "250")])
    assert m.stages() == ["connect", "helo", "mail", "rcpt", "abort", "quit"], m.stages()
    assert ctx.message_count() == 0


def test_discard(ctx):
    with ScriptedMilter({"eom": ["discard"]}) as m:
        reply, log = one_message(ctx, [m], small("discard me"))
    expect(reply, "250 2.0.0 OK: message discarded", "dot")
    assert "event=milter-discard" in log, log
    assert ctx.message_count() == 0


def down_spec():
    """A loopback port where nothing listens (bound, then closed)."""
    with ScriptedMilter() as m:
        spec = m.spec
    return spec


class Spec:
    def __init__(self, spec):
        self.spec = spec


def test_milter_down_default_actions(ctx):
    dead = Spec(down_spec())
    # tempfail (the default): nothing gets through unfiltered, nothing is lost.
    with ctx.tcp(env=env_for(dead)) as srv:
        with session(srv.port) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "451 4.7.1", "MAIL, milter down")
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
        lines = log_lines(srv, "milter-unavailable")
        assert len(lines) == 1 and "action=tempfail" in lines[0], srv.log()
    with ctx.tcp(env=env_for(dead, milter_default_action="reject")) as srv:
        with session(srv.port) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "550 5.7.1", "MAIL, milter down, reject")
            expect(c.cmd("QUIT"), "221")
    assert ctx.message_count() == 0
    reply, log = one_message(ctx, [dead], small("unfiltered"), milter_default_action="accept")
    expect(reply, "250 2.0.0", "accept: stored unfiltered")
    assert "event=milter-unavailable" in log and "action=accept" in log, log
    assert ctx.message_count() == 1


def test_broken_milters_never_half_store(ctx):
    big = "x" * 70 + "\n"
    msg = small("broken", big * 2000)  # ~140 KiB: more than two body chunks
    cases = {
        "stall in the body": {"body": ["stall"]},
        "close mid-body": {"body": lambda p, n=[0]: (n.append(1) or
                                                      (["close"] if len(n) > 2 else ["continue"]))},
        "garbage at end of headers": {"eoh": ["garbage"]},
        "a 4 GiB packet announced": {"eom": ["badlength"]},
        "bad custom reply (2xx)": {"eom": [("reply", "250 2.0.0 fine")]},
        "reply text with a line break into a new line": {"eom": [("reply", "550 5.7.1 a\r\nX")]},
        "header value that injects a field": {"eom": [("add", "X-A", "v\r\nBcc: evil"),
                                                      "continue"]},
        "header edit before the end": {"eoh": [("add", "X-Early", "1"), "continue"]},
    }
    for what, script in cases.items():
        with ScriptedMilter(script) as m:
            reply, log = one_message(ctx, [m], msg, milter_content_timeout=1,
                                     milter_command_timeout=1)
        expect(reply, "451 4.7.1", what)
        assert "event=milter-unavailable" in log, (what, log)
        assert ctx.message_count() == 0, what
    # A milter that asks for steps we did not offer is unavailable from the start.
    with ScriptedMilter(protocol=0x40000000) as m, ctx.tcp(env=env_for(m)) as srv:
        with session(srv.port) as c:
            expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "451 4.7.1", "negotiation refused")
            expect(c.cmd("QUIT"), "221")
        srv.wait_handlers()
        assert "negotiation refused" in srv.log(), srv.log()


def test_body_chunks_skip_and_large_message(ctx):
    line = "0123456789" * 7 + "\n"
    msg = small("large", line * 5000)  # ~355 KiB
    with ScriptedMilter() as m:
        reply, _ = one_message(ctx, [m], msg)
    expect(reply, "250 2.0.0", "dot")
    chunks = [p for s, p in m.events if s == "body"]
    assert all(len(c) <= 65535 for c in chunks) and len(chunks) >= 6, [len(c) for c in chunks]
    assert b"".join(chunks) == crlf(line * 5000)
    stored = ctx.messages()[0]
    assert stored.body.endswith(crlf(line * 5000)) and stored.size == len(stored.body)
    ctx.reset_mail()
    with ScriptedMilter({"body": ["skip"]}) as m:
        reply, _ = one_message(ctx, [m], msg)
    expect(reply, "250 2.0.0", "dot after skip")
    assert m.stages().count("body") == 1, m.stages()
    assert "eom" in m.stages()


def test_no_reply_steps_and_progress(ctx):
    # NR_HDR (0x80) | NOBODY (0x10): headers get no reply, the body is not sent.
    with ScriptedMilter({"header": [], "eom": ["progress", "progress", "continue"]},
                        protocol=0x80 | 0x10) as m:
        reply, _ = one_message(ctx, [m], small("quiet"))
    expect(reply, "250 2.0.0", "dot")
    assert "header" in m.stages() and "body" not in m.stages(), m.stages()


def test_unsupported_requests_are_ignored(ctx):
    with ScriptedMilter({"eom": [("raw", "q", b"quarantine me\0"), ("raw", "+", b"<x@y>\0"),
                                 "continue"]}) as m:
        reply, log = one_message(ctx, [m], small("kept"))
    expect(reply, "250 2.0.0", "dot")
    assert log.count("event=milter-ignored") == 2, log
    assert ctx.message_count() == 1


def test_two_milters_in_order(ctx):
    with ScriptedMilter({"eom": [("add", "X-First", "1"), "continue"]}) as a, \
            ScriptedMilter({"eom": [("add", "X-Second", "2"), "continue"]}) as b:
        reply, _ = one_message(ctx, [a, b], small("both"))
    expect(reply, "250 2.0.0", "dot")
    names = [n for n, _ in stored_headers(ctx.messages()[0].body)]
    assert names[-2:] == ["X-First", "X-Second"], names
    ctx.reset_mail()
    with ScriptedMilter({"mail": ["reject"]}) as a, ScriptedMilter() as b:
        with ctx.tcp(env=env_for(a, b)) as srv:
            with session(srv.port) as c:
                expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "550 5.7.1", "first milter refuses")
                expect(c.cmd("QUIT"), "221")
            srv.wait_handlers()
    assert "mail" not in b.stages(), b.stages()


def test_forged_authentication_results_removed(ctx):
    extra = (f"Authentication-Results: {HOST}; dkim=pass header.d=example.test\n"
             f"Authentication-Results: (comment) {HOST.upper()};\n spf=pass\n"
             "Authentication-Results: other.example; dkim=pass\n")
    for milters in ([], [ScriptedMilter()]):
        reply, log = one_message(ctx, milters, small("forged", extra=extra)) if milters else \
            (None, None)
        if not milters:
            with ctx.tcp(env={}) as srv:
                with session(srv.port) as c:
                    reply = send_mail(c, SENDER, [ALICE], small("forged", extra=extra))
                    expect(c.cmd("QUIT"), "221")
                srv.wait_handlers()
                log = srv.log()
        expect(reply, "250 2.0.0", "dot")
        body = ctx.messages()[-1].body
        assert body.count(b"Authentication-Results:") == 1, body
        assert b"Authentication-Results: other.example; dkim=pass" in body
        assert "event=header-removed" in log and "count=2" in log, log
        for m in milters:
            names = [p for s, p in m.events if s == "header"]
            assert not any(HOST.encode() in p and p.startswith(b"Authentication-Results")
                           for p in names), names
            m.stop()
        ctx.reset_mail()


def test_header_section_bounded(ctx):
    extra = "".join(f"X-Filler-{i}: {'y' * 60}\n" for i in range(40))  # ~3 KiB
    for milters in ([], [ScriptedMilter()]):
        env = env_for(*milters, header_size_limit=2048) if milters else \
            {"PGMAIL_HEADER_SIZE_LIMIT": 2048}
        with ctx.tcp(env=env) as srv:
            with session(srv.port) as c:
                expect(send_mail(c, SENDER, [ALICE], small("big head", extra=extra)),
                       "552 5.3.4 Message header size exceeds limit (2048 octets)", "dot")
                expect(send_mail(c, SENDER, [ALICE], small("small head")), "250 2.0.0",
                       "the next message")
                expect(c.cmd("QUIT"), "221")
        for m in milters:
            m.stop()
    assert ctx.message_count() == 2


def test_pipe_session_and_packets(ctx):
    # Driven through a pipe (no socket): the connect event says family 'U' (unknown).
    with ScriptedMilter() as m:
        r = ctx.smtpd(crlf(f"HELO pipe.example\nMAIL FROM:<{SENDER}>\nRCPT TO:<{ALICE}>\nDATA\n"
                           "Subject: piped\n\nbody\n.\nQUIT\n"), env=env_for(m))
        assert b"250 2.0.0 OK: message stored" in r.out, r.out
    conn = [p for s, p in m.events if s == "connect"][0]
    assert conn == b"unknown\0U", conn
    assert struct.pack(">I", 6) == struct.pack(">I", m.offered[0])
