"""log: client and server text in the handlers' logs can never split or forge a record.

shared/log.c escapes every string argument of log_event in one place (tests/unit/test_log.c
checks the formatter itself). Here: every log_event format in the C sources uses only
conversions it knows (any other would be refused at run time, loudly), and real sessions
whose client text holds CR, LF, quotes, backslashes, spaces and 8-bit bytes (a user name
like `x" event=login user=admin\\r\\nforged`, quoted local parts with spaces) leave only
well-formed records: one line each, starting with the program, event, session and peer,
then key=value pairs whose keys are the handler's own.
"""

import glob
import os
import re

import pop3lib
from harness import b64

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FORGED = b'x" event=login user=admin\r\nforged=yes result=ok'
VALUE = r'(?:"(?:\\["\\]|\\x[0-9a-f]{2}|[ !#-\[\]-~])*"|(?:\\["\\]|\\x[0-9a-f]{2}|[!#-\[\]-~])*)'
RECORD = re.compile(r'^(pgmail-[a-z0-9]+)\[\d+\]: event=([a-z-]+) session=\S+ peer=\S+'
                    rf'((?: [a-z-]+={VALUE})*)$')
PAIR = re.compile(rf' ([a-z-]+)=({VALUE})')
SUPPORTED = re.compile(r'%(?:%|[-+ #0]*\d*(?:hh|h|ll|l|z)?[diuxX]|(?:\.(?:\d+|\*))?[sc])')


def test_every_log_format_uses_known_conversions(ctx):
    calls = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "*", "*.c"))):
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"\blog_event\s*\(([^;]*?)\);", text, re.S):
            calls += 1
            for fmt in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)):
                rest = SUPPORTED.sub("", fmt)
                assert "%" not in rest, (f"{os.path.relpath(path, ROOT)}: log_event format "
                                         f"{fmt!r} uses a conversion log_format refuses")
    assert calls >= 30, f"only {calls} log_event calls found: is the scan still right?"


def records(err):
    """The log (bytes) as [(program, event, [(key, value), ...])], asserting that every line
    is one well-formed record."""
    out = []
    text = err.decode("latin-1")
    for ln in text.split("\n")[:-1]:
        m = RECORD.match(ln)
        assert m, f"not one well-formed log record: {ln!r}"
        pairs = PAIR.findall(m.group(3))
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"a key twice (forged?): {ln!r}"
        out.append((m.group(1), m.group(2), pairs))
    assert text.endswith("\n"), f"the log does not end with a whole line: {text[-200:]!r}"
    return out


def by_event(recs, event):
    return [dict(p) for _, e, p in recs if e == event]


def test_smtp_client_text_cannot_forge_log_records(ctx):
    script = (b"EHLO client.example\r\n"
              b"AUTH PLAIN " + b64(b"\0" + FORGED + b"\0wrong").encode() + b"\r\n"
              b"AUTH LOGIN " + b64(b'a\\b"c d\xc3\xa9').encode() + b"\r\n" + b64("wrong").encode()
              + b"\r\n"
              b"MAIL FROM:<sender@remote.example>\r\n"
              b'RCPT TO:<"x reason=relay user=admin"@example.test>\r\n'
              b'RCPT TO:<"a\\"b\\\\c"@example.test>\r\n'
              b"QUIT\r\n")
    r = ctx.smtpd(script, env={"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"})
    recs = records(r.err)
    auth = by_event(recs, "auth")
    assert len(auth) == 2 and all(a["result"] == "fail" for a in auth), auth
    assert all("event" not in a and "forged" not in "".join(a) for a in auth), auth
    rejected = by_event(recs, "rcpt-rejected")
    assert len(rejected) == 2 and all("user" not in x for x in rejected), rejected
    assert "\\x20" in rejected[0]["rcpt"], rejected


def test_pop3_client_text_cannot_forge_log_records(ctx):
    script = (b'USER x" result=ok user=admin\xff\r\nPASS wrong\r\n'
              b"AUTH PLAIN " + b64(b"\0" + FORGED + b"\0wrong").encode() + b"\r\n"
              b"QUIT\r\n")
    r = pop3lib.pop3d_pipe(ctx, script, env={"PGMAIL_AUTH_FAILURE_DELAY_MS": "0"})
    recs = records(r.err)
    auth = by_event(recs, "auth")
    assert len(auth) == 2 and all(a["result"] == "fail" for a in auth), auth
    assert all(a["user"] != "admin" for a in auth), auth
