#!/usr/bin/env python3
"""client.py - tiny TCP clients for tests/units/boot.sh (run inside the test's network namespace).

  client.py talk PORT LINE...    send each LINE (CRLF added; "\\n" inside becomes CRLF) after
                                 reading one reply; print "S: ..." and "C: ..." lines
  client.py pop3 PORT LINE...    the same for POP3: multi-line replies (RETR, TOP, LIST, UIDL,
                                 CAPA) are read to the terminating "."
  client.py read PORT            print everything the server sends until it closes
  client.py hold PORT N          open N connections from 127.0.0.1 at once, then print how many
                                 got a greeting ("greeted=K")
  client.py burst PORT N         connect and close at once N times, each from its own source
                                 address in 127.0.0.0/8; print "connect_errors=E"
"""
import socket
import sys


def talk(port, lines, pop3=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f = s.makefile("rb")

    def reply(multi=False):
        # one reply: SMTP continuation lines ("250-..."), or a POP3 multi-line body to "."
        first = True
        while True:
            line = f.readline()
            if not line:
                print("S: <EOF>")
                return False
            line = line.decode(errors="replace").rstrip("\r\n")
            print("S: " + line)
            if pop3:
                if first and not (multi and line.startswith("+OK")):
                    return True
                if not first and line == ".":
                    return True
                first = False
            elif len(line) < 4 or line[3] != "-":
                return True

    ok = reply()
    for line in lines:
        if not ok:
            break
        print("C: " + line[:60])
        s.sendall(line.replace("\\n", "\r\n").encode() + b"\r\n")
        words = line.upper().split()
        multi = pop3 and bool(words) and (
            words[0] in ("RETR", "TOP", "CAPA") or (words[0] in ("LIST", "UIDL") and len(words) == 1))
        ok = reply(multi)
    s.close()


def read(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    sys.stdout.write(data.decode(errors="replace"))


def hold(port, n):
    socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(n)]
    greeted = 0
    for s in socks:
        try:
            if s.recv(512)[:1] in (b"2", b"+"):
                greeted += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    print("greeted=%d" % greeted)


def burst(port, n):
    errors = 0
    for i in range(n):
        s = socket.socket()
        try:
            s.bind(("127.%d.%d.%d" % (1 + i // 62500, (i // 250) % 250, 1 + i % 250), 0))
            s.connect(("127.0.0.1", port))
        except OSError:
            errors += 1
        s.close()
    print("connect_errors=%d" % errors)


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "talk":
        talk(port, sys.argv[3:])
    elif cmd == "pop3":
        talk(port, sys.argv[3:], pop3=True)
    elif cmd == "read":
        read(port)
    elif cmd == "hold":
        hold(port, int(sys.argv[3]))
    elif cmd == "burst":
        burst(port, int(sys.argv[3]))
    else:
        sys.exit("client.py: unknown command " + cmd)


if __name__ == "__main__":
    main()
