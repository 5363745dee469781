"""milters.py - Debian's real milters for the milter tests, each run privately by the test:
rspamd 3.4 (proxy worker in milter mode, self_scan), OpenDKIM 2.11 and OpenDMARC 1.4, in
the foreground, in a directory of the test's own, on 127.0.0.1 and a free high port, ended
by PID (context managers, also when the test failed). DNS goes only to the test's unbound
(tests/lib/dnsserver.py); nothing leaves the machine.

    key = DkimKey(tmp, "sign.test", "sel")               # opendkim-genkey; key.zone() for DNS
    with DnsServer(tmp, {**zones, **key.zone()}) as dns, \\
         Rspamd(tmp, dns) as rs, OpenDKIM(tmp, dns, key, authserv_id="mx.example.test") as dk:
        env["PGMAIL_MILTERS"] = f"{rs.address} {dk.address}"   # "inet:127.0.0.1:PORT"

(a) Rspamd: its Debian configuration (/etc/rspamd: modules, scores, actions) with a private
    top file: only the proxy worker (milter = yes, upstream self_scan: no normal worker, no
    controller, no Redis), its run, database and log files under the test's directory,
    options.dns.nameserver = the test's unbound, enable_test_patterns = true (GTUBE from a
    loopback client is otherwise ignored), and the modules that would look for the network
    or Redis disabled. Its GTUBE variants pick the action: GTUBE (XJS*...) "reject",
    GTUBE_ADD_HEADER (YJS*...) "add header". rspamd runs as root with -i (insecure).
(b) DkimKey + OpenDKIM: a key made with opendkim-genkey, published as TXT
    (SELECTOR._domainkey.DOMAIN). OpenDKIM signs for DOMAIN what an authenticated client
    sends ({auth_type} / {auth_authen} macros) and verifies everything else:
    InternalHosts is a documentation address only, so mail from 127.0.0.1 is verified
    (the default, 127.0.0.1, would sign it). DNS through libunbound
    (ResolverConfiguration: a forward zone to the test's unbound, and "test." lifted from
    libunbound's built-in RFC 6761 zones, which answer NXDOMAIN for it otherwise).
(c) OpenDMARC: RejectFailures true, its own SPF check (SPFSelfValidate + SPFIgnoreResults),
    IgnoreHosts a documentation address only (the default is 127.0.0.1), DKIM results read
    from Authentication-Results of the trusted authserv-ids (OpenDKIM's). OpenDMARC and
    libspf2 resolve with the libc resolver, which reads /etc/resolv.conf and cannot use a
    port other than 53: the fixture runs a second unbound with the same zones on port 53 of
    a random 127.53.x.y address and starts opendmarc in a private mount namespace
    (unshare -m) where that address is bind-mounted over /etc/resolv.conf. Root only.
(d) negotiate(address, actions, protocol): the milter's answer to SMFIC_OPTNEG
    (version, actions, protocol), or None when it closes instead: what each milter asks of
    the MTA (the masks below).

(e) exchange(address, message, ...): one message through a milter as an MTA offering
    everything would send it; what the milter answered (tests and the report use it).
(f) MilterSet: all of the above with the tests' zones, started once per test run.

What they ask at negotiation (version 6), measured with negotiate() and asserted in
tests/test_milter_postfix.py (negotiation_masks):
    OpenDKIM 2.11   actions 0x111 ADDHDRS|CHGHDRS|SETSYMLIST of an offer of 0x1ff, and it
                    REQUIRES ADDHDRS|CHGHDRS (0x11): an offer without them -> it closes;
                    steps 0x100702 NOHELO|NOUNKNOWN|NODATA|SKIP|HDR_LEADSPC
    OpenDMARC 1.4   actions 0x21 ADDHDRS|QUARANTINE, both REQUIRED (0x11 or 0x13 offered
                    -> it closes); steps 0x710 NOBODY|NOUNKNOWN|NODATA|SKIP
    rspamd 3.4      actions: the offer | 0x3f (ADDHDRS|CHGBODY|ADDRCPT|DELRCPT|CHGHDRS|
                    QUARANTINE), never closes; steps always 0xff080 (NR_HDR, NR_CONN ..
                    NR_BODY: no reply to any event before end of message), whatever the
                    offer was.

Python 3 standard library only (plus rspamd, opendkim, opendkim-tools, opendmarc, unbound).
"""

import atexit
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnsserver import DnsServer, free_port  # noqa: E402
from remote_mx import _end, _Started  # noqa: E402
from scripted_milter import packet, read_packet  # noqa: E402

RSPAMD = "/usr/bin/rspamd"
OPENDKIM = "/usr/sbin/opendkim"
OPENDMARC = "/usr/sbin/opendmarc"
GENKEY = "/usr/sbin/opendkim-genkey"
START_TIMEOUT = 60  # seconds for a milter to answer SMFIC_OPTNEG (rspamd needs ~4 s)

# The GTUBE strings rspamd 3.4 knows (librspamd-server: rspamd_check_gtube), by action.
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_ADD_HEADER = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_REWRITE_SUBJECT = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

# Milter protocol (libmilter's mfapi.h / mfdef.h): actions and protocol steps.
SMFIF = {"ADDHDRS": 0x01, "CHGBODY": 0x02, "ADDRCPT": 0x04, "DELRCPT": 0x08,
         "CHGHDRS": 0x10, "QUARANTINE": 0x20, "CHGFROM": 0x40, "ADDRCPT_PAR": 0x80,
         "SETSYMLIST": 0x100}
SMFIP = {"NOCONNECT": 0x1, "NOHELO": 0x2, "NOMAIL": 0x4, "NORCPT": 0x8, "NOBODY": 0x10,
         "NOHDRS": 0x20, "NOEOH": 0x40, "NR_HDR": 0x80, "NOUNKNOWN": 0x100, "NODATA": 0x200,
         "SKIP": 0x400, "RCPT_REJ": 0x800, "NR_CONN": 0x1000, "NR_HELO": 0x2000,
         "NR_MAIL": 0x4000, "NR_RCPT": 0x8000, "NR_DATA": 0x10000, "NR_UNKN": 0x20000,
         "NR_EOH": 0x40000, "NR_BODY": 0x80000, "HDR_LEADSPC": 0x100000}
ALL_ACTIONS, ALL_STEPS = 0x1FF, 0x1FFFFF


def names(mask, table):
    """'ADDHDRS|CHGHDRS' for a mask (unknown bits in hex)."""
    out = [n for n, b in table.items() if mask & b]
    rest = mask & ~sum(table.values())
    return "|".join(out + ([hex(rest)] if rest else [])) or "0"


# -- the MTA side of the milter protocol, just enough to negotiate ---------------------------

def split_address(address):
    """("127.0.0.1", PORT) from "inet:PORT@127.0.0.1" or "inet:127.0.0.1:PORT"."""
    kind, _, rest = address.partition(":")
    assert kind == "inet", address
    if "@" in rest:
        port, host = rest.split("@")
    else:
        host, port = rest.rsplit(":", 1)
    return host, int(port)


def negotiate(address, actions=ALL_ACTIONS, protocol=ALL_STEPS, version=6, timeout=5):
    """What the milter at address answers to SMFIC_OPTNEG: (version, actions, protocol), or
    None when it closes the connection instead (libmilter does when the offer lacks an
    action the milter registered). Ends with SMFIC_QUIT."""
    with socket.create_connection(split_address(address), timeout) as s:
        s.sendall(packet(b"O", struct.pack(">III", version, actions, protocol)))
        r = read_packet(s)
        if r is None:
            return None
        cmd, data = r
        assert cmd == b"O", f"{address}: answer {cmd!r} to OPTNEG"
        try:
            s.sendall(packet(b"Q"))
        except OSError:
            pass
        return struct.unpack(">III", data[:12])


def exchange(address, message, sender="someone@ext.test", rcpt="someone@example.test",
             macros=None, client=("client.example", "127.0.0.1"), helo="client.example",
             leading_space=False):
    """One message through the milter at address, as an MTA offering every action and
    step would send it (leading_space: HDR_LEADSPC offered too, and header values sent
    with the space after the colon, as Postfix does; else without it).
    [(command letter, data bytes)] of everything the milter answered at end of message
    (modifications, then the final reply); earlier answers other than continue are
    returned alone, as [(letter, data)]. macros: {stage letter: {name: value}}."""
    macros = macros or {"C": {"j": AUTHSERV_ID}}
    with socket.create_connection(split_address(address), 10) as s:
        offer = ALL_STEPS if leading_space else ALL_STEPS & ~SMFIP["HDR_LEADSPC"]
        s.sendall(packet(b"O", struct.pack(">III", 6, ALL_ACTIONS, offer)))
        _, data = read_packet(s)
        steps = struct.unpack(">III", data[:12])[2]

        done = []  # an answer other than continue: the milter is done with the message

        def send(cmd, data, no_reply_bit, skip_bit=0):
            if done:
                return None
            if cmd.decode() in macros:  # SMFIC_MACRO before the command it belongs to
                blob = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                for k, v in macros[cmd.decode()].items())
                s.sendall(packet(b"D", cmd + blob))
            if steps & skip_bit:
                return None
            s.sendall(packet(cmd, data))
            if steps & no_reply_bit:
                return None
            r = read_packet(s)
            if r and r[0] not in b"cs":
                done.append(r)
            return r

        host, addr = client
        answers = [
            send(b"C", host.encode() + b"\0" + b"4" + struct.pack(">H", 25) + addr.encode()
                 + b"\0", SMFIP["NR_CONN"], SMFIP["NOCONNECT"]),
            send(b"H", helo.encode() + b"\0", SMFIP["NR_HELO"], SMFIP["NOHELO"]),
            send(b"M", f"<{sender}>".encode() + b"\0", SMFIP["NR_MAIL"], SMFIP["NOMAIL"]),
            send(b"R", f"<{rcpt}>".encode() + b"\0", SMFIP["NR_RCPT"], SMFIP["NORCPT"]),
            send(b"T", b"", SMFIP["NR_DATA"], SMFIP["NODATA"])]
        head, _, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
        fields = []
        for line in head.split(b"\n"):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += b"\r\n" + line
            else:
                fields.append(line)
        for f in fields:
            name, _, value = f.partition(b":")
            value = value if leading_space and steps & SMFIP["HDR_LEADSPC"] else value.lstrip(b" ")
            answers.append(send(b"L", name + b"\0" + value + b"\0",
                                SMFIP["NR_HDR"], SMFIP["NOHDRS"]))
        answers.append(send(b"N", b"", SMFIP["NR_EOH"], SMFIP["NOEOH"]))
        if body:
            answers.append(send(b"B", body.replace(b"\n", b"\r\n"), SMFIP["NR_BODY"],
                                SMFIP["NOBODY"]))
        if done:
            return done
        s.sendall(packet(b"E"))
        out = []
        while True:
            r = read_packet(s)
            if r is None:
                break
            out.append(r)
            if r[0] in b"actrdy":  # accept continue tempfail reject discard replycode
                break
        try:
            s.sendall(packet(b"Q"))
        except OSError:
            pass
        return out


# -- a milter daemon run by the test ---------------------------------------------------------

class _Milter(_Started):
    """A milter in the foreground in its own process group, in self.dir; start() returns
    when it answers SMFIC_OPTNEG on self.port (or raises with its log)."""
    name = "milter"

    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix=f"{self.name}-", dir=tmp)
        os.chmod(self.dir, 0o755)
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.logfile = os.path.join(self.dir, "stderr.log")

    @property
    def address(self):
        """Postfix notation (what PGMAIL_MILTERS and smtpd_milters take)."""
        return f"inet:{self.host}:{self.port}"

    def argv(self):
        raise NotImplementedError

    def start(self):
        for _ in range(3):
            self.port = free_port(self.host)
            argv = self.argv()
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.dir,
                                             start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if negotiate(self.address, timeout=2):
                        return self
                except OSError:  # not listening yet
                    pass
                time.sleep(0.1)
            if self.proc.poll() is None:  # up but not answering: give up
                break
            _end(self.proc, group=True)  # the port may have been taken: try another
        log = self.log()
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.address}: {log[-1500:]}")

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc:
            _end(self.proc, group=True)
            self.proc = None

    def write(self, name, text, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path


# PGMAIL_RSPAMD_DEBUG=1: rspamd.log tells each milter command and header it sends
DEBUG = 'debug_modules = ["milter_headers", "lua_auth_results", "proxy", "milter"];'


class Rspamd(_Milter):
    """rspamd's proxy worker in milter mode, scanning itself. lua: extra Lua rules
    (rspamd.local.lua), local_d: {file: text} for local.d/ (added to what the fixture
    writes there)."""
    name = "rspamd"
    # Modules that look for Redis, HTTP maps or the internet's DNS lists: off, so that
    # start-up is quick and nothing leaves the machine.
    OFF = ["fuzzy_check", "rbl", "surbl", "asn", "phishing", "mx_check", "reputation",
           "url_redirector", "neural", "ratelimit", "greylist", "history_redis", "replies",
           "whitelist", "multimap", "emails", "maillist", "p0f", "dcc", "antivirus",
           "external_services", "metadata_exporter", "clickhouse", "elastic", "rspamd_update",
           "dynamic_conf", "bimi", "spamtrap", "known_senders", "hfilter", "mid", "arc",
           "dkim_signing", "url_reputation", "url_tags", "once_received", "ip_score",
           "fuzzy_collect", "mime_types", "chartable", "forged_recipients"]

    def __init__(self, tmp, dns, lua=None, local_d=None):
        super().__init__(tmp)
        self.dns = dns
        self.lua = lua
        self.local_d = dict(local_d or {})

    def argv(self):
        d = self.dir
        os.makedirs(os.path.join(d, "local.d"), exist_ok=True)
        self.write("rspamd.conf", f"""\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "{d}/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "{d}/rspamd.log";
    level = "info";
    {DEBUG if os.environ.get("PGMAIL_RSPAMD_DEBUG") else ""}
}}
worker "rspamd_proxy" {{
    bind_socket = "{self.host}:{self.port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
    max_retries = 1;
}}
""")
        local = {
            "options.inc": f"""\
dns {{ nameserver = ["{self.dns.host}:{self.dns.port}"]; timeout = 1s; retransmits = 2; }}
enable_test_patterns = true;
local_addrs = [];
url_tld = "{d}/tld.dat";
""",
            # SPF and DKIM of loopback clients too (rspamd skips "local" senders otherwise)
            "spf.conf": "check_local = true;\ncheck_authed = true;\n",
            "dkim.conf": "check_local = true;\ncheck_authed = true;\n",
            "dmarc.conf": "",
            # no Redis: no Bayes
            "classifier-bayes.conf": "backend = \"none\"; enabled = false;\n",
            # its verdicts as headers, also for loopback and authenticated clients
            "milter_headers.conf": 'use = ["authentication-results", "x-spam-status",'
                                   ' "x-spamd-result"];\n'
                                   "skip_local = false;\nskip_authenticated = false;\n",
        }
        for m in self.OFF:
            local[f"{m}.conf"] = "enabled = false;\n"
        local.update(self.local_d)
        # a short public suffix list: compiling Debian's 9,600 suffixes takes 2-12 s
        self.write("tld.dat", "com\nnet\norg\nexample\ntest\n")
        for name, text in local.items():
            self.write(os.path.join("local.d", name), text)
        if self.lua:
            self.write("rspamd.local.lua", self.lua)
        return [RSPAMD, "-f", "-i", "-c", os.path.join(d, "rspamd.conf"),
                "--var", f"LOCAL_CONFDIR={d}", "--var", f"DBDIR={d}", "--var", f"RUNDIR={d}",
                "--var", f"LOGDIR={d}"]

    def log(self):
        out = super().log()
        try:
            with open(os.path.join(self.dir, "rspamd.log"), errors="replace") as f:
                out += f.read()
        except OSError:
            pass
        return out


class DkimKey:
    """An RSA key made with opendkim-genkey for selector._domainkey.domain."""

    def __init__(self, tmp, domain, selector="sel", bits=2048):
        self.domain, self.selector = domain, selector
        self.dir = tempfile.mkdtemp(prefix=f"dkim-{domain}-", dir=tmp)
        subprocess.run([GENKEY, "-b", str(bits), "-d", domain, "-s", selector, "-D", self.dir],
                       check=True, capture_output=True, timeout=60)
        self.private = os.path.join(self.dir, f"{selector}.private")
        with open(os.path.join(self.dir, f"{selector}.txt")) as f:
            txt = f.read()
        # the quoted strings of the record, joined: "v=DKIM1; h=sha256; k=rsa; p=..."
        self.record = "".join(txt.split('"')[1::2])
        self.name = f"{selector}._domainkey.{domain}"

    def zone(self):
        """{owner: ["TXT ..."]} for DnsServer (strings of at most 255 octets)."""
        chunks = [self.record[i:i + 250] for i in range(0, len(self.record), 250)]
        return {self.name: ["TXT " + " ".join(f'"{c}"' for c in chunks)]}

    def sign(self, message):
        """message (bytes) with a DKIM-Signature by this key, made by python3-dkim's
        dkimsign (a signer nobody here wrote)."""
        r = subprocess.run(["dkimsign", self.selector, self.domain, self.private],
                           input=message, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout


def with_resolv_conf(resolv_conf, argv):
    """argv run in a private mount namespace whose /etc/resolv.conf is resolv_conf: the
    way to send a program that uses the libc resolver (port 53 only) to a test unbound."""
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            resolv_conf, *argv]


class OpenDKIM(_Milter):
    """OpenDKIM signing with key for its domain (authenticated senders) and verifying the
    rest, its results as Authentication-Results: authserv_id; dkim=..."""
    name = "opendkim"

    def __init__(self, tmp, dns, key, authserv_id):
        super().__init__(tmp)
        self.dns, self.key, self.authserv_id = dns, key, authserv_id

    def argv(self):
        unbound = self.write("resolver.conf", f"""\
server:
  do-not-query-localhost: no
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: {self.dns.host}@{self.dns.port}
""")
        conf = self.write("opendkim.conf", f"""\
Syslog                  no
LogWhy                  yes
Background              no
Socket                  inet:{self.port}@{self.host}
PidFile                 {self.dir}/opendkim.pid
Mode                    sv
Domain                  {self.key.domain}
Selector                {self.key.selector}
KeyFile                 {self.key.private}
RequireSafeKeys         false
Canonicalization        relaxed/simple
InternalHosts           192.0.2.1
AuthservID              {self.authserv_id}
ResolverConfiguration   {unbound}
""")
        return [OPENDKIM, "-f", "-x", conf]


class OpenDMARC(_Milter):
    """OpenDMARC rejecting failures, checking SPF itself, trusting trusted_ids'
    Authentication-Results (OpenDKIM's) for DKIM."""
    name = "opendmarc"

    def __init__(self, tmp, dns, authserv_id, trusted_ids=()):
        super().__init__(tmp)
        self.dns, self.authserv_id = dns, authserv_id
        self.trusted = [authserv_id, *trusted_ids]
        self.dns53 = None
        self.resolv_conf = None

    def start(self):
        # the libc resolver's unbound: port 53 of an address of its own
        for _ in range(10):
            host = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
            try:
                self.dns53 = DnsServer(self.dir, self.dns.zones, host=host, port=53).start()
                break
            except (RuntimeError, OSError):
                self.dns53 = None
        if self.dns53 is None:
            raise RuntimeError("opendmarc: no unbound on port 53 of a 127.53.x.y address")
        try:
            return super().start()
        except BaseException:
            self.dns53.stop()
            raise

    def stop(self):
        super().stop()
        if self.dns53:
            self.dns53.stop()
            self.dns53 = None

    def argv(self):
        resolv = self.write("resolv.conf", f"nameserver {self.dns53.host}\noptions attempts:1\n")
        ignore = self.write("ignore.hosts", "192.0.2.1\n")
        conf = self.write("opendmarc.conf", f"""\
Syslog                  false
Background              false
Socket                  inet:{self.port}@{self.host}
PidFile                 {self.dir}/opendmarc.pid
AuthservID              {self.authserv_id}
TrustedAuthservIDs      {",".join(self.trusted)}
RejectFailures          true
SPFSelfValidate         true
SPFIgnoreResults        true
IgnoreHosts             {ignore}
IgnoreAuthenticatedClients true
HistoryFile             {self.dir}/history
""")
        self.resolv_conf = resolv
        return with_resolv_conf(resolv, [OPENDMARC, "-f", "-c", conf])




# -- one set of all three for a whole test run -----------------------------------------------

AUTHSERV_ID = "mx.example.test"  # the tests' hostname (tests/harness.py HOST)
SIGNING_DOMAIN = "example.test"  # the test accounts' domain: OpenDKIM signs for it
EXTERNAL_DOMAIN = "ext.test"     # an outside signer (python3-dkim's dkimsign)
ZONES = {
    # SPF fails for any client, no DMARC record: spf=fail and nothing more
    "spffail.test": ['TXT "v=spf1 -all"'],
    # SPF fails, unsigned, DMARC p=reject: OpenDMARC refuses it
    "reject.test": ['TXT "v=spf1 -all"'],
    "_dmarc.reject.test": ['TXT "v=DMARC1; p=reject"'],
    # the outside signer: loopback may send for it, DMARC p=reject (DKIM aligns)
    EXTERNAL_DOMAIN: ['TXT "v=spf1 ip4:127.0.0.0/8 -all"'],
    f"_dmarc.{EXTERNAL_DOMAIN}": ['TXT "v=DMARC1; p=none"'],
    # our own domain: loopback may send for it
    SIGNING_DOMAIN: ['TXT "v=spf1 ip4:127.0.0.0/8 -all"'],
    # a remote domain for the outbound path (smtp-sink on 127.0.0.4)
    "b.test": ["MX 10 mx.b.test."],
    "mx.b.test": ["A 127.0.0.4"],
}


class MilterSet:
    """unbound with ZONES and both DKIM keys, rspamd, OpenDKIM (signing for SIGNING_DOMAIN)
    and OpenDMARC, all with authserv-id AUTHSERV_ID. started() gives the one set of the
    test run: started on first use (about 5 s, rspamd's share), stopped at exit."""
    _shared = None

    def __init__(self, tmp):
        self.tmp = tempfile.mkdtemp(prefix="milters-", dir=tmp)
        os.chmod(self.tmp, 0o755)
        self.sign_key = DkimKey(self.tmp, SIGNING_DOMAIN)
        self.ext_key = DkimKey(self.tmp, EXTERNAL_DOMAIN)
        self.dns = self.rspamd = self.opendkim = self.opendmarc = None

    def start(self):
        try:
            self.dns = DnsServer(self.tmp, {**ZONES, **self.sign_key.zone(),
                                            **self.ext_key.zone()}).start()
            self.rspamd = Rspamd(self.tmp, self.dns).start()
            self.opendkim = OpenDKIM(self.tmp, self.dns, self.sign_key, AUTHSERV_ID).start()
            self.opendmarc = OpenDMARC(self.tmp, self.dns, AUTHSERV_ID).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for m in (self.opendmarc, self.opendkim, self.rspamd, self.dns):
            if m:
                m.stop()
        self.dns = self.rspamd = self.opendkim = self.opendmarc = None

    @property
    def all(self):
        """The three in the order of the tests' milter lists. OpenDKIM first: behind
        rspamd, Postfix stores no Authentication-Results of rspamd's (seen with Postfix
        3.7: rspamd alone or first in the list, its A-R is there; rspamd then OpenDKIM,
        it is gone), so the order decides what a test can expect."""
        return [self.opendkim, self.rspamd, self.opendmarc]

    def dkimverify(self, message):
        """(ok, output) of Debian's dkimverify (python3-dkim) for message (bytes), its key
        lookups sent to the test's DNS (OpenDMARC's port-53 copy: dnspython reads
        /etc/resolv.conf)."""
        r = subprocess.run(with_resolv_conf(self.opendmarc.resolv_conf, ["dkimverify"]),
                           input=message, capture_output=True, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")

    @classmethod
    def started(cls, tmp):
        if cls._shared is None:
            cls._shared = cls(tmp).start()
            atexit.register(cls._shared.stop)
        return cls._shared
