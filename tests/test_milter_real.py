"""milter_real: pgmail-smtpd's milter client (issue 14) against Debian's real milters: the
scenarios of tests/test_milter_postfix.py (Postfix's smtpd as the baseline) run against
pgmail-smtpd behind systemd-socket-activate, configured by environment:
PGMAIL_MILTERS="inet:127.0.0.1:P1 inet:127.0.0.1:P2 ..." (rspamd, OpenDKIM, OpenDMARC
from tests/lib/milters.py, in that order), PGMAIL_MILTER_DEFAULT_ACTION, the
PGMAIL_MILTER_*_TIMEOUT values (seconds) and PGMAIL_AUTHSERV_ID.

Expected of pgmail-smtpd (the behaviour issue 14 describes):
  * a milter's reject: its own reply when it sent one (SMFIR_REPLYCODE: rspamd's
    "554 5.7.1 Gtube pattern", OpenDMARC's "550 5.7.1 rejected by DMARC policy for
    reject.test"), else 550 5.7.1; nothing stored; the next message of the session is
    not affected;
  * the milters' header changes stored as Postfix applies them (rspamd's X-Spam by
    SMFIR_CHGHEADER of an absent header, its Authentication-Results by SMFIR_INSHEADER at
    index 1, OpenDKIM's DKIM-Signature and OpenDMARC's results at index 0);
  * a milter that is down or stalls, with the default action tempfail: 451 4.7.1 and
    nothing stored; with PGMAIL_MILTER_DEFAULT_ACTION=accept the message is stored
    unfiltered and the journal has event=milter-unavailable;
  * Authentication-Results claiming our authserv-id from outside is gone from the stored
    message (RFC 8601 section 5), another authserv-id's stays;
  * an authenticated submission leaves signed by OpenDKIM: the local copy and the copy
    relayed to smtp-sink (pgmail-relay through the test DNS) verify with dkimverify.

The answers the real ones do not give on demand (every verdict at every stage, stalls,
closes, garbage) are test_milter.py's, with its scripted milter.

The milters and the DNS start once per test run (milters.MilterSet.started, shared with
test_milter_postfix.py); each test starts its own pgmail-smtpd.
"""

import os
import re
import smtplib
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import milters as M  # noqa: E402
import test_milter_postfix as P  # noqa: E402  (the scenarios)
import test_relay_queue as rq  # noqa: E402  (Relay, until)
from dnsserver import free_port  # noqa: E402
from harness import HOST, PASSWORDS  # noqa: E402
from remote_mx import SmtpSink  # noqa: E402

ALICE, BOB = "alice@example.test", "bob@example.test"
SINK = "127.0.0.4"  # mx.b.test in milters.ZONES
WAIT = 20
RELAY_ENV = {"PGMAIL_RELAY_TEST_TIMEOUT_MS": 3000, "PGMAIL_QUEUE_MIN_BACKOFF": 60,
             "PGMAIL_QUEUE_MAX_BACKOFF": 4000, "PGMAIL_DELAY_WARNING_TIME": 0}


class Pgmail:
    """pgmail-smtpd with the milters; the scenarios' MTA (send, arrived, nothing_arrived)."""
    rcpt = BOB

    def __init__(self, ctx, milters=None, **env):
        self.ctx = ctx
        self.ms = M.MilterSet.started(ctx.tmp)
        addresses = milters if milters is not None else [m.address for m in self.ms.all]
        self.env = {"PGMAIL_MILTERS": " ".join(addresses), "PGMAIL_AUTHSERV_ID": HOST,
                    "PGMAIL_DNS_RESOLVER": self.ms.dns.resolver, **env}
        self.smtpd = ctx.tcp(self.env)
        self.smtpd.start()

    def connect(self):
        s = smtplib.SMTP("127.0.0.1", self.smtpd.port, local_hostname="client.example",
                         timeout=60)
        s.ehlo("client.example")
        return s

    def send(self, message, sender, port=None, rcpts=None, auth=None):
        s = self.connect()
        try:
            if auth:
                s.login(auth, PASSWORDS[auth])
            return P.send(s, sender, rcpts or [self.rcpt], message)
        finally:
            s.quit()

    def stored(self, msgid):
        return [m.body for m in self.ctx.messages() if f"Message-ID: <{msgid}>".encode()
                in m.body]

    def arrived(self, msgid):
        """The stored message with this Message-ID (bytes as stored, CRLF)."""
        got = self.stored(msgid)  # stored before the 250: no waiting
        assert len(got) == 1, f"<{msgid}> stored {len(got)} times: {self.smtpd.log()[-1500:]}"
        return got[0]

    def nothing_arrived(self, msgid):
        return not self.stored(msgid)

    def events(self, event):
        """The journal records of one event in pgmail-smtpd's log, as {field: value}."""
        return [r for r in rq_records(self.smtpd.log()) if r.get("event") == event]


def rq_records(log):
    """Every key=value record of a log, as {field: value} (value unquoted)."""
    return [{k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)}
            for line in log.splitlines() if "event=" in line]


def dead_milter():
    """An inet address where nothing listens (a stopped milter, to the client)."""
    return f"inet:127.0.0.1:{free_port()}"


# ---------------------------------------------------------------------------------------
# The scenarios of the baseline

def test_gtube_rejected_with_rspamds_reply(ctx):
    P.gtube_rejected(Pgmail(ctx))


def test_rspamd_add_header_stored(ctx):
    P.add_header(Pgmail(ctx))


def test_spf_fail_in_stored_authentication_results(ctx):
    P.spf_fail(Pgmail(ctx), inserted=True)


def test_dkim_pass(ctx):
    P.signed_external(Pgmail(ctx))


def test_dkim_fail_on_changed_body(ctx):
    P.signed_external(Pgmail(ctx), change_body=True)


def test_dmarc_reject_with_opendmarcs_reply(ctx):
    P.dmarc_reject(Pgmail(ctx))


# ---------------------------------------------------------------------------------------
# pgmail's own duties

def test_reject_does_not_affect_the_next_message(ctx):
    pg = Pgmail(ctx)
    s = pg.connect()
    try:
        bad, good = P.unique("gtube"), P.unique("next")
        assert P.send(s, "someone@ext.test", [BOB], P.message(
            bad, "someone@ext.test", M.GTUBE + "\r\n", rcpt=BOB)) == (554, "5.7.1 Gtube pattern")
        assert P.send(s, "someone@ext.test", [BOB], P.message(
            good, "someone@ext.test", "A clean one.\r\n", rcpt=BOB)) == (250, "")
    finally:
        s.quit()
    assert pg.nothing_arrived(bad)
    assert pg.arrived(good)


def test_forged_authentication_results_removed(ctx):
    """With OpenDMARC alone, which keeps every A-R it was given (OpenDKIM and rspamd
    remove the ones with our authserv-id themselves, which would hide pgmail's part);
    OpenDMARC would otherwise read the forged dkim=pass as ours."""
    ms = M.MilterSet.started(ctx.tmp)
    pg = Pgmail(ctx, milters=[ms.opendmarc.address])
    mid = P.unique("forged")
    forged = f"Authentication-Results: {HOST}; dkim=pass header.d=example.test\r\n" \
             f"Authentication-Results: {HOST.upper()};\r\n\tspf=pass smtp.mailfrom=x@ext.test\r\n"
    foreign = "Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=ext.test\r\n"
    code, text = pg.send(P.message(mid, "someone@ext.test", extra=forged + foreign, rcpt=BOB),
                         "someone@ext.test")
    assert code == 250, (code, text)
    raw = pg.arrived(mid)
    ars = P.headers(raw, "Authentication-Results")
    assert "mx.elsewhere.example; spf=pass smtp.mailfrom=ext.test" in ars, ars
    assert not any("dkim=pass header.d=example.test" in v or "smtp.mailfrom=x@ext.test" in v
                   for v in ars), ars
    # what remains under our id is the milters' own verdicts
    assert any(v.startswith(f"{HOST}; dmarc=") for v in ars), ars


def tempfail(code_text):
    code, text = code_text
    assert code == 451 and text.startswith("4.7.1"), code_text


def test_milter_down_tempfails_and_stores_nothing(ctx):
    pg = Pgmail(ctx, milters=[M.MilterSet.started(ctx.tmp).rspamd.address, dead_milter()],
                PGMAIL_MILTER_CONNECT_TIMEOUT=5)
    mid = P.unique("down")
    tempfail(pg.send(P.message(mid, "someone@ext.test", rcpt=BOB), "someone@ext.test"))
    assert ctx.message_count() == 0


def test_milter_down_default_accept_stores_unfiltered_and_logs(ctx):
    pg = Pgmail(ctx, milters=[dead_milter()], PGMAIL_MILTER_DEFAULT_ACTION="accept",
                PGMAIL_MILTER_CONNECT_TIMEOUT=5)
    mid = P.unique("accept")
    assert pg.send(P.message(mid, "someone@ext.test", M.GTUBE_ADD_HEADER + "\r\n", rcpt=BOB),
                   "someone@ext.test") == (250, "")
    raw = pg.arrived(mid)
    assert P.headers(raw, "X-Spam") == [] and P.auth_results(raw) == [], raw[:800]
    pg.smtpd.wait_handlers()
    assert pg.events("milter-unavailable"), pg.smtpd.log()[-2000:]


def test_stalled_milter_times_out_tempfail(ctx):
    """A milter that accepts the connection and never answers (a listening socket nobody
    accepts from: the kernel completes the handshake): the command timeout, then the
    default action."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        pg = Pgmail(ctx, milters=[f"inet:127.0.0.1:{hole.getsockname()[1]}"],
                    PGMAIL_MILTER_CONNECT_TIMEOUT=2, PGMAIL_MILTER_COMMAND_TIMEOUT=2,
                    PGMAIL_MILTER_CONTENT_TIMEOUT=2)
        t0 = time.monotonic()
        tempfail(pg.send(P.message(P.unique("stall"), "someone@ext.test", rcpt=BOB),
                         "someone@ext.test"))
        assert time.monotonic() - t0 < 15, "the timeouts were not applied"
        assert ctx.message_count() == 0
    finally:
        hole.close()


def test_submission_signed_locally_and_outbound(ctx):
    ms = M.MilterSet.started(ctx.tmp)
    sink = None
    for _ in range(5):
        try:
            sink = SmtpSink(SINK, port=free_port(SINK)).start()
            break
        except RuntimeError:
            continue
    assert sink, "no smtp-sink"
    ctx._servers.append(sink)
    pg = Pgmail(ctx)
    relay = rq.Relay(ctx, dict(RELAY_ENV, PGMAIL_RELAY_PORT=sink.port,
                               PGMAIL_DNS_RESOLVER=ms.dns.resolver))
    mid = P.unique("submission")
    msg = P.message(mid, ALICE, "From our user, to a neighbour and the world.\r\n", rcpt=BOB)
    assert pg.send(msg, ALICE, rcpts=[BOB, "sam@b.test"], auth=ALICE) == (250, "")
    P.submission_signed(pg, pg.arrived(mid))
    rq.until("the relayed copy at the sink",
             lambda: any(mid.encode() in d for _, _, d in sink.messages()), WAIT, 0.05)
    out = [d for _, _, d in sink.messages() if mid.encode() in d]
    P.submission_signed(pg, out[0].replace(b"\n", b"\r\n"))
    assert "event=relay-delivered" in relay.log(), relay.log()[-1500:]
