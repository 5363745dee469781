"""scripted_milter.py - a milter (Sendmail's mail filter protocol, version 6) that answers
from a script, for the tests of pgmail-smtpd's milter client in the cases no real milter
can be made to produce on demand: a stall, a close in the middle of the body, garbage, every
reply code at every stage, every header edit.

    with ScriptedMilter(script) as m:
        env["PGMAIL_MILTERS"] = m.spec          # "inet:127.0.0.1:PORT"
        ...
        m.events                                 # [(stage, payload), ...] of all sessions

script maps a stage ("connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body",
"eom") to a list of actions sent in order, or to a function (payload) -> list. An action is
"continue", "accept", "reject", "tempfail", "discard", "skip", "progress",
("reply", "550 5.7.1 text"), ("add", name, value), ("insert", index, name, value),
("change", index, name, value), ("raw", cmd_char, bytes) (anything, on purpose), "stall"
(read on, answer nothing), "close" (close the connection), "garbage" (a packet that is not
the protocol). A stage not in the script is answered "continue". actions and protocol are
what the milter asks for at negotiation.

Python 3 standard library only. Each connection has a thread; stop() closes the listening
socket and every connection the milter holds (use it as a context manager).
"""

import socket
import struct
import threading

STAGES = {b"C": "connect", b"H": "helo", b"M": "mail", b"R": "rcpt", b"T": "data",
          b"L": "header", b"N": "eoh", b"B": "body", b"E": "eom"}
SIMPLE = {"continue": b"c", "accept": b"a", "reject": b"r", "tempfail": b"t",
          "discard": b"d", "skip": b"s", "progress": b"p"}
ADDHDRS, CHGHDRS = 0x01, 0x10


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def read_packet(sock):
    """(command byte, data) of the next packet, or None when the peer closed."""
    buf = b""
    want = 4
    while len(buf) < want:
        part = sock.recv(want - len(buf))
        if not part:
            return None
        buf += part
        if want == 4 and len(buf) == 4:
            want = 4 + struct.unpack(">I", buf)[0]
    return (buf[4:5], buf[5:]) if len(buf) > 4 else None


def encode(action):
    if isinstance(action, str):
        if action in SIMPLE:
            return packet(SIMPLE[action])
        if action == "garbage":
            return packet(b"Z", b"\x00\x01 not a milter reply")
        if action == "badlength":  # 4 GiB announced
            return b"\xff\xff\xff\xffc"
        raise ValueError(action)
    kind = action[0]
    if kind == "reply":
        return packet(b"y", action[1].encode() + b"\0")
    if kind == "add":
        return packet(b"h", action[1].encode() + b"\0" + action[2].encode() + b"\0")
    if kind in ("insert", "change"):
        return packet(b"i" if kind == "insert" else b"m",
                      struct.pack(">I", action[1]) + action[2].encode() + b"\0" +
                      action[3].encode() + b"\0")
    if kind == "raw":
        return packet(action[1].encode(), action[2])
    raise ValueError(action)


class ScriptedMilter:
    def __init__(self, script=None, actions=ADDHDRS | CHGHDRS, protocol=0, host="127.0.0.1"):
        self.script = script or {}
        self.actions, self.protocol = actions, protocol
        self.events = []          # (stage, payload bytes), every session in order
        self.macros = {}          # stage char -> {name: value}, the last seen
        self.offered = None       # (version, actions, protocol) the MTA offered
        self.sessions = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.spec = f"inet:{host}:{self.sock.getsockname()[1]}"
        self.conns = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    def stop(self):
        self.stopping = True
        try:
            # shutdown first: a close alone leaves a socket that a thread is blocked in
            # accept() on listening (Linux), and it would go on accepting.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def stages(self):
        return [s for s, _ in self.events]

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self.lock:
            self.sessions += 1
        stalled = False
        try:
            while True:
                got = read_packet(c)
                if got is None:
                    return
                cmd, payload = got
                if cmd == b"O":
                    self.offered = struct.unpack(">III", payload[:12])
                    c.sendall(packet(b"O", struct.pack(">III", 6, self.actions, self.protocol)))
                    continue
                if cmd == b"D":
                    parts = payload[1:].split(b"\0")
                    pairs = dict(zip(parts[0::2], parts[1::2]))
                    self.macros[payload[:1].decode()] = {
                        k.decode(): v.decode("utf-8", "replace") for k, v in pairs.items() if k}
                    continue
                if cmd in (b"A", b"Q"):
                    with self.lock:
                        self.events.append(("abort" if cmd == b"A" else "quit", payload))
                    if cmd == b"Q":
                        return
                    continue
                stage = STAGES.get(cmd, "unknown")
                with self.lock:
                    self.events.append((stage, payload))
                if stalled:
                    continue
                todo = self.script.get(stage, ["continue"])
                if callable(todo):
                    todo = todo(payload)
                for action in todo:
                    if action == "stall":
                        stalled = True
                        break
                    if action == "close":
                        c.close()
                        return
                    c.sendall(encode(action))
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
