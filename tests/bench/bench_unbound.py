"""bench_unbound.py - a private unbound for tests/bench/outbound.py: MX and A records of the
bench's test domains, on 127.0.0.1 and a free high port.

A stop-gap of the bench's own: tests/lib/dnsserver.py (the test suite's DNS server, written
for issue #13) replaces it once it is on main. Until then this is the minimal part the bench
needs: authoritative local data only (local-zone static: a name not listed is NXDOMAIN), no
recursion to the outside, no DNSSEC, no cache effects that differ between runs.

    dns = Unbound(workdir, records, port)    # records: ["d0.test. MX 10 mx.d0.test.", ...]
    dns.address                              # "127.0.0.1@PORT", pgmail's dns_resolver form
    dns.stop()
"""

import os
import shutil
import socket
import subprocess
import time


def _zones(records):
    """The zone (owner without its first label for MX hosts, the owner for MX/NS) of each
    record: one local-zone per test domain, so every other name below .test stays NXDOMAIN."""
    zones = []
    for r in records:
        owner, rtype = r.split()[0].rstrip(".").lower(), r.split()[1].upper()
        zone = owner if rtype == "MX" else owner.split(".", 1)[1]
        if zone not in zones:
            zones.append(zone)
    return zones


def _answers(port):
    """True when unbound answers on 127.0.0.1:port (a query for a name it has no data for)."""
    q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
         b"\x05probe\x04test\x00\x00\x01\x00\x01")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(512)[:2] == b"\x12\x34"
    except OSError:
        return False
    finally:
        s.close()


class Unbound:
    def __init__(self, workdir, records, port):
        self.dir = os.path.join(workdir, "unbound")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        self.address = f"127.0.0.1@{port}"
        conf = os.path.join(self.dir, "unbound.conf")
        lines = [
            "# tests/bench/bench_unbound.py: a private unbound for the outbound bench",
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {port}",
            "  do-ip6: no",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.dir}"',
            '  pidfile: ""',
            "  use-syslog: no",
            f'  logfile: "{self.dir}/unbound.log"',
            "  verbosity: 0",
            "  access-control: 127.0.0.0/8 allow",
            # Only local data: the iterator never goes out, there is no validator.
            '  module-config: "iterator"',
            "  num-threads: 1",
            "  so-reuseport: no",
        ]
        for z in _zones(records):
            lines.append(f'  local-zone: "{z}." static')
        for r in records:
            lines.append(f'  local-data: "{r}"')
        lines += ["remote-control:", "  control-enable: no", ""]
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen([shutil.which("unbound") or "/usr/sbin/unbound", "-d",
                                      "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        end = time.monotonic() + 15
        while not _answers(port):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                err = open(os.path.join(self.dir, "stderr.log")).read()[-500:]
                raise RuntimeError(f"unbound did not start on 127.0.0.1:{port}: {err}")
            time.sleep(0.05)

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
