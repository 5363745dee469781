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


if __name__ == "__main__":
    main()
