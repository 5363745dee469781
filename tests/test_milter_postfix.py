"""milter_postfix: the milter fixtures (tests/lib/milters.py) proved with a milter client
nobody here wrote: Postfix's smtpd, smtpd_milters = rspamd, OpenDKIM, OpenDMARC (in that
order, milter_default_action = tempfail), relaying to smtp-sink; Python's smtplib sends.

This is the baseline pgmail-smtpd's milter client is held to (tests/test_milter_real.py
runs the same scenarios against it): what each milter asks at negotiation, GTUBE rejected
550 5.7.1, rspamd's "add header", spf=fail for a `v=spf1 -all` sender from 127.0.0.1,
dkim=pass and dkim=fail on a changed body, a DMARC p=reject failure refused 550 5.7.1, and
a submission signed by OpenDKIM that Debian's dkimverify verifies.

Postfix has no SASL of its own (it needs Dovecot or Cyrus), so its submission service
stands in for an authenticated session with milter_macro_defaults: it sends {auth_type}
and {auth_authen} to the milters as an AUTH session would. That is all OpenDKIM looks at
to sign.

The milters, the DNS server and Postfix start once for the file (MilterSet.started, about
5 s) and stop at exit.
"""

import atexit
import email
import email.policy
import os
import smtplib
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import milters as M  # noqa: E402
from dnsserver import free_port  # noqa: E402
from remote_mx import PostfixMX, SmtpSink  # noqa: E402

PF, SINK = "127.0.0.5", "127.0.0.6"
RCPT = "someone@pf.test"
WAIT = 20


class Baseline:
    """The milters, smtp-sink and Postfix (smtpd on PF:port, submission on PF:sub)."""
    _shared = None
    rcpt = RCPT

    def __init__(self, tmp):
        self.ms = M.MilterSet.started(tmp)
        self.sink = self.pf = None
        for _ in range(5):
            try:
                self.sink = SmtpSink(SINK, port=free_port(SINK)).start()
                break
            except RuntimeError:
                continue
        self.sub = free_port(PF)
        self.pf = PostfixMX(PF, domains=["pf.test"], next_hop=f"[{SINK}]:{self.sink.port}", main=[
            f"smtpd_milters = {' '.join(m.address for m in self.ms.all)}",
            "milter_default_action = tempfail",
            f"myhostname = {M.AUTHSERV_ID}",
            "submission_macros = { {auth_type} = PLAIN }, { {auth_authen} = alice }",
        ], services=f"{PF}:{self.sub} inet n - n - - smtpd"
                    " -o milter_macro_defaults=$submission_macros\n").start()

    def stop(self):
        for s in (self.pf, self.sink):
            if s:
                s.stop()

    @classmethod
    def get(cls, ctx):
        if cls._shared is None:
            cls._shared = cls(ctx.tmp)
            atexit.register(cls._shared.stop)
        return cls._shared

    def send(self, message, sender, port=None):
        """(code, text) of Postfix's answer to the message (bytes), 250 when accepted."""
        s = smtplib.SMTP(PF, port or self.pf.port, timeout=60)
        try:
            return send(s, sender, [RCPT], message)
        finally:
            s.quit()

    def arrived(self, msgid):
        """The message with this Message-ID at the sink (bytes, CRLF line ends)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for _, _, data in self.sink.messages():
                if f"Message-ID: <{msgid}>".encode() in data:
                    return data.replace(b"\n", b"\r\n")
            time.sleep(0.05)
        raise AssertionError(f"<{msgid}> did not arrive at the sink: {self.pf.log()[-1500:]}")

    def nothing_arrived(self, msgid):
        time.sleep(0.5)  # the queue manager's pass, had Postfix accepted it
        return not any(f"Message-ID: <{msgid}>".encode() in d for _, _, d in self.sink.messages())


def send(s, sender, rcpts, message):
    """(code, text) of the SMTP connection s's answer to one transaction: 250 and "" when
    accepted, else the first refusal (at MAIL, RCPT or the final dot)."""
    try:
        s.sendmail(sender, rcpts, message)
        return 250, ""
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")


def message(msgid, sender, body="Hello.\r\n", extra="", rcpt=RCPT):
    """A small message (bytes) from sender with a unique Message-ID."""
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {msgid}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{msgid}>\r\n{extra}\r\n"
            f"{body}").encode()


def unique(name):
    return f"{name}.{time.monotonic_ns()}@client.example"


def headers(raw, name):
    """Unfolded values of the header fields name in raw (bytes)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [" ".join(v.split()) for v in msg.get_all(name, [])]


def auth_results(raw):
    """The Authentication-Results values with our authserv-id."""
    return [v for v in headers(raw, "Authentication-Results")
            if v.startswith(M.AUTHSERV_ID + ";")]


# ---------------------------------------------------------------------------------------
# The scenarios, written once for both MTAs: mta offers send(message, sender, port) ->
# (code, text), arrived(msgid) -> bytes, nothing_arrived(msgid) and a submission port;
# tests/test_milter_real.py runs them against pgmail-smtpd.

def gtube_rejected(mta):
    mid = unique("gtube")
    code, text = mta.send(message(mid, "someone@ext.test", M.GTUBE + "\r\n", rcpt=mta.rcpt),
                          "someone@ext.test")
    assert (code, text) == (554, "5.7.1 Gtube pattern"), (code, text)  # rspamd's own reply
    assert mta.nothing_arrived(mid), "the rejected message arrived"
    return text


def add_header(mta):
    """GTUBE_ADD_HEADER: rspamd's "add header" action, stored with X-Spam: Yes."""
    mid = unique("addheader")
    code, text = mta.send(message(mid, "someone@ext.test", M.GTUBE_ADD_HEADER + "\r\n",
                                  rcpt=mta.rcpt),
                          "someone@ext.test")
    assert code == 250, (code, text)
    raw = mta.arrived(mid)
    # rspamd sends SMFIR_CHGHEADER X-Spam index 1 "Yes": a change of a header that is
    # not there adds it (libmilter's smfi_chgheader, Postfix alike). GTUBE ends the scan
    # early, so milter_headers adds nothing else.
    assert headers(raw, "X-Spam") == ["Yes"], raw.decode(errors="replace")[:1500]
    return raw


def spf_fail(mta, inserted=True):
    """rspamd's verdict: R_SPF_FAIL in X-Spamd-Result (added) and spf=fail in its
    Authentication-Results, which it inserts at index 1 (SMFIR_INSHEADER). OpenDMARC's own
    A-R says spf=pass: libspf2 lets loopback pass for any domain. inserted=False skips
    the A-R check (see MilterSet.all on the order of the milters)."""
    mid = unique("spffail")
    code, text = mta.send(message(mid, "someone@spffail.test", rcpt=mta.rcpt),
                          "someone@spffail.test")
    assert code == 250, (code, text)
    raw = mta.arrived(mid)
    result = headers(raw, "X-Spamd-Result")
    assert len(result) == 1 and "R_SPF_FAIL(" in result[0], result
    if inserted:
        ar = auth_results(raw)
        assert any("spf=fail" in v and "smtp.mailfrom=someone@spffail.test" in v
                   for v in ar), ar
    return raw


def signed_external(mta, change_body=False):
    mid = unique("signed")
    sender = f"someone@{M.EXTERNAL_DOMAIN}"
    signed = mta.ms.ext_key.sign(message(mid, sender, "A signed body.\r\n", rcpt=mta.rcpt))
    if change_body:
        signed = signed.replace(b"A signed body.", b"A changed body.")
    code, text = mta.send(signed, sender)
    assert code == 250, (code, text)
    raw = mta.arrived(mid)
    ar = [v for v in auth_results(raw) if "dkim=" in v]
    want = "dkim=fail" if change_body else "dkim=pass"
    assert len(ar) >= 1 and all(want in v and f"header.d={M.EXTERNAL_DOMAIN}" in v
                                for v in ar), ar
    return raw


def dmarc_reject(mta):
    """From: reject.test (p=reject), unsigned, envelope sender of another domain: SPF
    passes for that one (libspf2 lets loopback pass any domain) but does not align."""
    mid = unique("dmarc")
    code, text = mta.send(message(mid, "someone@reject.test", rcpt=mta.rcpt), "bounce@spffail.test")
    assert (code, text) == (550, "5.7.1 rejected by DMARC policy for reject.test"), (code, text)
    assert mta.nothing_arrived(mid), "the rejected message arrived"
    return text


def submission_signed(mta, raw):
    """raw, submitted by an authenticated sender of SIGNING_DOMAIN, carries OpenDKIM's
    signature, and dkimverify verifies it against the key in the test DNS."""
    sigs = headers(raw, "DKIM-Signature")
    assert len(sigs) == 1 and f"d={M.SIGNING_DOMAIN};" in sigs[0] and "s=sel;" in sigs[0], sigs
    ok, out = mta.ms.dkimverify(raw)
    assert ok, out + raw.decode(errors="replace")[:2000]


# ---------------------------------------------------------------------------------------
# Tests

def test_negotiation_masks(ctx):
    """What each milter asks for (libmilter closes when an action it registered is not
    offered; rspamd asks for its own mask whatever is offered)."""
    ms = Baseline.get(ctx).ms
    dk, dm, rs = ms.opendkim.address, ms.opendmarc.address, ms.rspamd.address
    assert M.negotiate(dk) == (6, 0x111, 0x100702), M.negotiate(dk)
    assert M.negotiate(dk, 0x01, 0) is None
    assert M.negotiate(dk, 0x11, 0) == (6, 0x11, 0x2)
    assert M.negotiate(dm) == (6, 0x21, 0x710), M.negotiate(dm)
    assert M.negotiate(dm, 0x13, 0) is None
    assert M.negotiate(dm, 0x31, 0) == (6, 0x21, 0x10)
    assert M.negotiate(rs) == (6, 0x1FF, 0xFF080), M.negotiate(rs)
    assert M.negotiate(rs, 0x11, 0x1FFFFF) == (6, 0x3F, 0xFF080)
    assert M.negotiate(rs, 0, 0) == (6, 0x3F, 0xFF080)


def test_gtube_rejected_571(ctx):
    gtube_rejected(Baseline.get(ctx))


def test_rspamd_add_header(ctx):
    add_header(Baseline.get(ctx))


def test_spf_fail_from_loopback(ctx):
    spf_fail(Baseline.get(ctx))


def test_dkim_pass(ctx):
    signed_external(Baseline.get(ctx))


def test_dkim_fail_on_changed_body(ctx):
    signed_external(Baseline.get(ctx), change_body=True)


def test_dmarc_reject_550_571(ctx):
    dmarc_reject(Baseline.get(ctx))


def test_submission_signed_by_opendkim(ctx):
    b = Baseline.get(ctx)
    mid = unique("submission")
    sender = f"alice@{M.SIGNING_DOMAIN}"
    code, text = b.send(message(mid, sender, "From our user.\r\n"), sender, port=b.sub)
    assert code == 250, (code, text)
    submission_signed(b, b.arrived(mid))


def test_unauthenticated_mail_from_our_domain_is_not_signed(ctx):
    """The same message on the port without the AUTH macros: verified, not signed (so
    InternalHosts does not cover 127.0.0.1)."""
    b = Baseline.get(ctx)
    mid = unique("unsigned")
    sender = f"alice@{M.SIGNING_DOMAIN}"
    code, text = b.send(message(mid, sender, "Not from our user.\r\n"), sender)
    assert code == 250, (code, text)
    assert headers(b.arrived(mid), "DKIM-Signature") == []


def test_header_values_and_the_leading_space(ctx):
    """What the client must store (milters.exchange, the MTA side in Python): OpenDKIM
    takes SMFIP_HDR_LEADSPC when offered, and then its header values begin with the space
    that follows the colon (store "Name:" + value); without it they do not (store
    "Name: " + value). rspamd never takes it: per milter, not per session. Folded values
    come with bare LF + TAB and must be stored with CRLF."""
    ms = Baseline.get(ctx).ms
    sender = f"someone@{M.EXTERNAL_DOMAIN}"
    signed = ms.ext_key.sign(message(unique("leadspc"), sender, "Hi.\r\n"))
    for lead, start in ((True, b" " + M.AUTHSERV_ID.encode() + b";"),
                        (False, M.AUTHSERV_ID.encode() + b";")):
        got = M.exchange(ms.opendkim.address, signed, sender=sender, leading_space=lead)
        ins = [d for c, d in got if c == b"i"]
        assert got[-1][0] == b"a" and len(ins) == 1, got
        name, value = ins[0][4:].split(b"\0")[:2]
        assert name == b"Authentication-Results" and value.startswith(start), (lead, value)
        assert b"dkim=pass" in value and b"\n\t" in value, value
    got = M.exchange(ms.rspamd.address, signed, sender=sender, leading_space=True)
    ar = [d for c, d in got if c == b"i" and b"Authentication-Results\0" in d]
    assert len(ar) == 1 and ar[0][4:].split(b"\0")[1].startswith(M.AUTHSERV_ID.encode()), got
