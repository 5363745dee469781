#!/usr/bin/env python3
"""seed.py - (re)make the committed seed corpora in tests/fuzz/corpus/ from the transcript
tests (tests/smtp/*.in, tests/pop3/*.in) and a few hand-made inputs. Session seeds start
with one byte that picks the failing database statement (0: none; see memstore.h)."""

import base64
import glob
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from test_transcripts import parse_in  # noqa: E402


def put(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def main():
    root = os.path.dirname(HERE)
    for proto in ("smtp", "pop3"):
        for path in sorted(glob.glob(os.path.join(root, proto, "*.in"))):
            with open(path, "rb") as f:
                data = parse_in(f.read())
            if len(data) < 50000:
                put(proto, b"\0" + data)
                put(proto, b"\x05" + data)  # the fifth statement fails
    plain = base64.b64encode(b"\0alice@example.test\0secret")
    put("smtp", b"\0EHLO x\r\nAUTH PLAIN " + plain + b"\r\nMAIL FROM:<alice@example.test>\r\n"
        b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        b"Subject: s\r\n\r\n..x\r\nbare\n.\nlf\r\n.\r\nQUIT\r\n")
    # remote recipients: the outbound room (two in memstore), a quoted one, a duplicate
    put("smtp", b"\0EHLO x\r\nAUTH PLAIN " + plain + b"\r\nMAIL FROM:<alice@example.test>\r\n"
        b"RCPT TO:<a@remote.test>\r\nRCPT TO:<\"q\\\\\\\"x\"@remote.test>\r\n"
        b"RCPT TO:<a@remote.test>\r\nRCPT TO:<c@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
        b"DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    put("pop3", b"\0AUTH PLAIN " + plain + b"\r\nSTAT\r\nLIST\r\nUIDL\r\nTOP 1 1\r\nRETR 3\r\n"
        b"DELE 2\r\nRETR 2\r\nRSET\r\nDELE 1\r\nQUIT\r\n")
    for s in (b"\x03\x10EHLO x\r\nMAIL FROM:<a@b>\r\n", b"\x01\x02a\r\r\nb\n\r\n.\r\n",
              b"\x40\x05" + b"x" * 100 + b"\r\n"):
        put("reader", s)
    for s in (b"\x01<alice@example.test> SIZE=100 BODY=8BITMIME", b"\x00<@a,@b:c@d.test>",
              b"\x01<>", b'\x00<"q@x"@[192.0.2.1]>', b"\x06<Alice+tag-x@Example.TEST>"):
        put("address", s)
    for s in (b"AGFsaWNlAHNlY3JldA==", b"Zm8=", b"Zm9v", b""):
        put("base64", s)
    put("config", b"# c\nhostname = mx.example.test\nmessage_size_limit = 2048\n"
        b"bare_newline = reject\nallow_plaintext_auth = yes\nrecipient_delimiter = +\n")
    relay_seeds()


def relay_seeds():
    """pgmail-relay's reply parser (data[0]: bit 0 = EHLO, the rest the largest read) and
    its DSN composer (data[0]: recipients and delays, data[1]: the code; NUL-separated
    fields; the header section last)."""
    ehlo = (b"250-mx.remote.test Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
            b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n250-8BITMIME\r\n"
            b"250 SMTPUTF8\r\n")
    put("reply", b"\x7f" + ehlo)
    put("reply", b"\x01" + ehlo)  # one byte per read
    put("reply", b"\x7e220 mx.remote.test ESMTP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4Xyz\r\n221 2.0.0 Bye\r\n")
    put("reply", b"\x7e550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        b"550-5.1.1 Please try\r\n550 5.1.1 https://support.example/?p=1 x - gsmtp\r\n"
        b"452 4.2.2 over quota\n421 4.7.0 Try again later, closing connection.\r\n")
    put("reply", b"\x02250-first\r\n251 other code\r\n")
    put("reply", b"\x7e" + b"250-" + b"x" * 1500 + b"\r\n250 5.5.5 \x80\xff\t\x00 end\r\n2")
    hdrs = (b"Received: from x\r\n\tby y\r\nFrom: <alice@example.test>\r\n"
            b"Subject: =?UTF-8?Q?h=C3=A9?= \xc3\xa9\r\n\r\nbody\r\n")
    put("dsn", b"\x00\xad" + b"\0".join([
        b"mx.example.test", b"alice@example.test", b"bob@remote.test", b"5.1.1",
        b"mx1.remote.test", b"5.1.1 The email account does not exist"]) + b"\0" + hdrs)
    put("dsn", b"\x0d\xc8" + b"\0".join([
        b"mx.example.test", b"alice@example.test",
        b"a@remote.test", b"4.4.1", b"", b"connection refused",
        b"b@remote.test", b"4.2.2", b"mx.remote.test", b"over quota " * 120]) + b"\0" + hdrs)
    put("dsn", b"\x01\x00" + b"\0".join([
        b"mx\r\nX: y", b"a\r\n\r\n--=_pgmail-dsn-4242", b"r\nTo: x", b"5.0.0\r\nA: b",
        b"h\r\nStatus: 2.0.0", b"text\r\n--=_pgmail-dsn-4242--\r\n\r\n."]) + b"\0\0a\rb\nc")
    # pgmail-metrics' request reader (data[0]: the largest read).
    put("http", b"\x3fGET /metrics HTTP/1.1\r\nHost: localhost:9087\r\nUser-Agent: Prometheus/2.42.0"
                b"\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4"
                b"\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
    put("http", b"\x00HEAD /metrics?x=1 HTTP/1.0\n\n")
    put("http", b"\x05POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    put("http", b"\x3f\r\n\r\nBREW /pot HTTP/1.1\r\nHost : x\r\n folded\r\n\r\n")
    put("http", b"\x3fGET /" + b"a" * 4100 + b" HTTP/1.1\r\n\r\n")
    put("http", b"\x3fGET /metrics HTTP/1.1\r\nHost: a\"b\\\\c\r\n" + b"X: y\r\n" * 70 + b"\r\n")


if __name__ == "__main__":
    main()
