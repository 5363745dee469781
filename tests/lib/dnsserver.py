"""dnsserver.py - a local DNS server for the outbound tests: Debian's unbound, run in the
foreground by the test as an unprivileged-port server on 127.0.0.1 and a free high port,
answering only from local data (no recursion, no DNSSEC, no chroot).

    with DnsServer(tmpdir, zones) as dns:
        env["PGMAIL_DNS_RESOLVER"] = dns.resolver      # "127.0.0.1@PORT"
        dns.query("a.test", "MX")                       # (rcode, [rdata text]) to check it

zones is a dict {owner: [records]} or a zone text ("owner [ttl] [IN] TYPE data" per line,
';' comments). A record is "TYPE data" in the dict ("MX 10 mx1.a.test.", "A 127.0.0.2",
"AAAA ::1", "MX 0 ." for a null MX), owners without the final dot. Every name under .test
that has no data is NXDOMAIN (one local-zone "test." static); names elsewhere are refused.

Two names misbehave on purpose:
  *.timeout.test   forwarded to a UDP socket the fixture holds open and never reads: every
                   lookup hangs until the client gives up (its own timeout)
  *.servfail.test  answered REFUSED, which a forwarding resolver turns into SERVFAIL

port: a free high port unless given (tests/lib/milters.py asks for 53 on a 127.53.x.y
address: the libc resolver of OpenDMARC and dkimverify cannot use another port).

stop() ends unbound by its PID (also when the test failed: use it as a context manager).
Python 3 standard library only (plus /usr/sbin/unbound).
"""

import os
import random
import signal
import socket
import struct
import subprocess
import time

UNBOUND = "/usr/sbin/unbound"
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def free_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host at the time of asking."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, 0))
        port = u.getsockname()[1]
        t = socket.socket(u.family, socket.SOCK_STREAM)
        try:
            t.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def parse_zone_text(text):
    """{owner: [records]} from zone text lines "owner [ttl] [IN] TYPE data"."""
    zones = {}
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        owner, rest = words[0].rstrip("."), words[1:]
        while rest and (rest[0].isdigit() or rest[0].upper() == "IN"):
            rest = rest[1:]
        zones.setdefault(owner, []).append(" ".join(rest))
    return zones


class DnsServer:
    def __init__(self, tmp, zones, host="127.0.0.1", port=None):
        self.dir = os.path.join(tmp, f"unbound-{os.getpid()}-{random.randrange(1 << 30):x}")
        os.makedirs(self.dir)
        self.zones = parse_zone_text(zones) if isinstance(zones, str) else dict(zones)
        self.host = host
        self.fixed_port = port  # None: a free high port (port 53 is for libc's resolver)
        self.port = None
        self.proc = None
        self.log = os.path.join(self.dir, "unbound.log")
        # the blackhole: bound, never read (queries sit in its buffer)
        self.hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hole.bind(("127.0.0.1", 0))

    @property
    def resolver(self):
        """The value of dns_resolver (PGMAIL_DNS_RESOLVER) for this server."""
        return f"{self.host}@{self.port}"

    def _config(self):
        hole = self.hole.getsockname()[1]
        lines = [
            "server:",
            f"  interface: {self.host}",
            f"  port: {self.port}",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir}/unbound.pid"',
            f'  logfile: "{self.log}"',
            "  use-syslog: no",
            "  verbosity: 1",
            "  num-threads: 1",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',
            "  do-not-query-localhost: no",
            "  cache-max-ttl: 0",
            "  cache-max-negative-ttl: 0",
            "  outgoing-range: 32",
            "  so-reuseport: no",
            '  local-zone: "." refuse',
            '  local-zone: "test." static',
            '  local-zone: "timeout.test." transparent',
            '  local-zone: "servfail.test." refuse',
        ]
        for owner, records in self.zones.items():
            for rr in records:
                q = "'" if '"' in rr else '"'  # TXT data carries its own double quotes
                lines.append(f'  local-data: {q}{owner.rstrip(".")}. 60 IN {rr}{q}')
        lines += [
            "remote-control:",
            "  control-enable: no",
            "forward-zone:",
            '  name: "timeout.test."',
            f"  forward-addr: 127.0.0.1@{hole}",
        ]
        path = os.path.join(self.dir, "unbound.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self):
        for _ in range(5):
            self.port = self.fixed_port or free_port(self.host)
            conf = self._config()
            self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.query("ready.test", "A", timeout=0.2)  # any answer will do
                    return self
                except OSError:  # not listening yet (refused, or no answer)
                    pass
                time.sleep(0.05)
            err = self._stop_proc()
        raise RuntimeError(f"unbound did not start: {err[-500:]}")

    def _stop_proc(self):
        err = ""
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        return err

    def stop(self):
        self._stop_proc()
        self.hole.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- a tiny stub resolver, to check the fixture itself ---------------------------------

    def query(self, name, qtype, timeout=2.0):
        """(rcode name, [answer rdata as raw bytes]) for name/qtype, straight from unbound."""
        qid = random.randrange(1 << 16)
        q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        for label in name.rstrip(".").split("."):
            q += bytes([len(label)]) + label.encode()
        q += b"\0" + struct.pack(">HH", TYPES[qtype], 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(timeout)
            s.sendto(q, (self.host, self.port))
            data = s.recv(4096)
        finally:
            s.close()
        rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
        assert rid == qid
        pos = 12
        for _ in range(qd):
            pos = _skip_name(data, pos) + 4
        answers = []
        for _ in range(an):
            pos = _skip_name(data, pos)
            _, _, _, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
            answers.append(data[pos + 10:pos + 10 + rdlen])
            pos += 10 + rdlen
        return RCODES.get(flags & 15, str(flags & 15)), answers


def _skip_name(data, pos):
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0:
            return pos + 2
        pos += n + 1
