"""tls: STARTTLS (RFC 3207), STLS (RFC 2595) and implicit TLS (RFC 8314) in pgmail-smtpd and
pgmail-pop3d behind systemd-socket-activate, with a certificate made at test time.

What is checked: STARTTLS/STLS offered only with a usable certificate, the session reset
after the handshake, plaintext pipelined after STARTTLS/STLS discarded (never executed under
TLS), passwords refused in clear from a non-loopback peer (EHLO without AUTH, 538 5.7.11,
POP3 -ERR) and accepted after the handshake, MAIL still needing AUTH on submission after
STARTTLS, port 25 never requiring TLS, implicit TLS (the 465 and 995 units' settings),
TLS 1.2 and 1.3 accepted and older versions refused, Received: naming the TLS version and
cipher with ESMTPS / ESMTPSA, a missing or unusable certificate logged with STARTTLS simply
not offered, clients that drop or stall mid-handshake leaving no handler behind, and
clients that stall or trickle a command under TLS (whole records, or part of a record)
meeting the same per-line timeout, reply and log event as in clear.
Real clients: smtplib (starttls, SMTP_SSL), poplib (stls, POP3_SSL), swaks --tls / --tlsc,
curl --ssl-reqd smtp:// and pop3://, smtps:// and pop3s://, openssl s_client -starttls.

"Remote" sessions set PGMAIL_PEER_OVERRIDE=192.0.2.1 (tlslib.REMOTE): the handler then
treats its loopback peer as a remote one.
"""

import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
import warnings

import pop3lib
from harness import PASSWORDS, Client, check_stored, crlf, expect, plain_blob, send_mail
from pop3lib import Pop3Client, expect_err, expect_ok, stored_bodies
from tlslib import (REMOTE, RecordClient, cert, client_context, client_hello, dribble,
                    log_lines, nothing_more, other_key, pop3_implicit, pop3_server,
                    read_to_close, smtp_implicit, smtp_server, starttls, stls, tls_info,
                    unfolded_received)

HELO = "client.example"
SENDER = "sender@remote.example"
ALICE = "alice@example.test"
BOB = "bob@example.test"
REMOTE_ADDR = REMOTE["PGMAIL_PEER_OVERRIDE"]
IMPLICIT_SMTP = dict(REMOTE, PGMAIL_TLS_IMPLICIT="yes", PGMAIL_REQUIRE_AUTH="yes")  # 465
IMPLICIT_POP3 = dict(REMOTE, PGMAIL_TLS_IMPLICIT="yes")  # 995


def ehlo_keywords(reply):
    """The extension keywords of a multi-line EHLO reply, upper case."""
    expect(reply, "250", "EHLO")
    return {ln[4:].split()[0].upper() for ln in reply.split("\n")[1:] if len(ln) > 4}


def capa(c):
    """The CAPA list of a Pop3Client as a set of first words."""
    st, lines = c.lines("CAPA")
    expect_ok(st, "CAPA")
    return {ln.split()[0].upper() for ln in lines if ln}


def message(subject):
    return crlf(f"From: {ALICE}\nTo: {BOB}\nSubject: {subject}\n\nsent over TLS\n.dot\n")


def only_message(ctx, sender, rcpts, original, helo=HELO, peer="127.0.0.1"):
    msgs = ctx.messages()
    assert len(msgs) == 1, f"expected one stored message, found {msgs}"
    m = msgs[0]
    assert m.sender == sender and m.recipients == rcpts, m
    check_stored(m.body, sender, original, helo, peer=peer, session=m.session_id)
    return unfolded_received(m.body)


def assert_tls_received(received, info, with_):
    """Received: says 'with ESMTPS' / 'ESMTPSA' and the (version, cipher) the client saw."""
    want = f"(using {info[0]} with cipher {info[1]})"
    assert want in received, f"Received: lacks {want!r}: {received!r}"
    assert f" with {with_} id " in received, f"Received: is not 'with {with_}': {received!r}"


def write(ctx, name, data):
    path = os.path.join(ctx.tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run(cmd, input=None, timeout=60):
    r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r, out


def handlers_all_exited(srv, count, timeout=8):
    """The server spawned count handlers (a connection closed at once may be accepted a
    moment later), and every one has exited within timeout seconds."""
    deadline = time.monotonic() + timeout
    while srv.handlers_done()[0] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.wait_handlers(max(0.1, deadline - time.monotonic())), (
        f"handlers still running after {timeout}s (spawned, exited) = {srv.handlers_done()}")
    spawned, done = srv.handlers_done()
    assert spawned == count, f"{spawned} handlers spawned, expected {count}"


# -- SMTP STARTTLS ------------------------------------------------------------------------------

def test_smtp_starttls_offered_then_session_starts_afresh(ctx):
    sslctx = client_context(ctx)
    with smtp_server(ctx) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        assert "STARTTLS" in ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "250", "MAIL")
        expect(c.cmd("STARTTLS"), "503 5.5.1", "STARTTLS inside a transaction")
        expect(c.cmd("RSET"), "250", "RSET")
        expect(c.cmd("STARTTLS"), "220 2.0.0", "STARTTLS")
        tls = starttls(c, sslctx)
        assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
        # RFC 3207 4.2: the client must send EHLO again; everything before is forgotten.
        expect(c.cmd(f"MAIL FROM:<{SENDER}>"), "503 5.5.1", "MAIL before the new EHLO")
        kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        assert "STARTTLS" not in kw, f"STARTTLS offered again under TLS: {kw}"
        expect(c.cmd("STARTTLS"), "503 5.5.1", "second STARTTLS")
        expect(c.cmd("QUIT"), "221", "QUIT")


def test_smtp_starttls_pipelined_mail_is_discarded(ctx):
    # RFC 3207 6 (CVE-2011-0411): a man in the middle appends a command to the client's
    # STARTTLS in the same segment. Were it executed under TLS, its reply would come before
    # the client's own: the EHLO below would read a 503, and MAIL a nested-MAIL 503.
    sslctx = client_context(ctx)
    with smtp_server(ctx) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        c.send("STARTTLS\r\nMAIL FROM:<a@b.test>\r\n")
        expect(c.reply(), "220 2.0.0", "STARTTLS")
        starttls(c, sslctx)
        assert "STARTTLS" not in ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        expect(c.cmd("MAIL FROM:<x@y.test>"), "250 ", "MAIL under TLS (the injected one is gone)")
        expect(c.cmd("NOOP"), "250 ", "NOOP")
        nothing_more(c)
        expect(c.cmd("QUIT"), "221", "QUIT")
    assert ctx.message_count() == 0


def test_smtp_starttls_pipelined_rset_is_discarded(ctx):
    sslctx = client_context(ctx)
    with smtp_server(ctx) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        c.send("STARTTLS\r\nRSET\r\n")
        expect(c.reply(), "220 2.0.0", "STARTTLS")
        starttls(c, sslctx)
        # One command, one reply: an executed RSET would add a second 250.
        expect(c.cmd("NOOP"), "250 ", "NOOP")
        nothing_more(c)
        expect(c.cmd("QUIT"), "221", "QUIT")


def test_smtp_remote_auth_only_after_starttls_port25_never_requires_it(ctx):
    sslctx = client_context(ctx)
    clear = crlf(f"From: {SENDER}\nTo: {BOB}\nSubject: in clear\n\nno TLS on port 25\n")
    secure = message("after STARTTLS")
    with smtp_server(ctx, REMOTE) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        assert "STARTTLS" in kw and "AUTH" not in kw, f"EHLO in clear from a remote peer: {kw}"
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "538 5.7.11",
               "AUTH PLAIN in clear")
        expect(c.cmd("AUTH LOGIN"), "538 5.7.11", "AUTH LOGIN in clear")
        # Port 25 offers STARTTLS but never requires it (RFC 3207 4).
        expect(send_mail(c, SENDER, [BOB], clear), "250 2.0.0", "mail in clear")
        expect(c.cmd("STARTTLS"), "220 2.0.0", "STARTTLS")
        info = tls_info(starttls(c, sslctx))
        kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        assert "AUTH" in kw and "STARTTLS" not in kw, f"EHLO under TLS: {kw}"
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0", "AUTH")
        expect(send_mail(c, ALICE, [BOB], secure), "250 2.0.0", "mail under TLS")
        expect(c.cmd("QUIT"), "221", "QUIT")
    msgs = ctx.messages()
    assert len(msgs) == 2, msgs
    check_stored(msgs[0].body, SENDER, clear, HELO, peer=REMOTE_ADDR)
    check_stored(msgs[1].body, ALICE, secure, HELO, peer=REMOTE_ADDR)
    plain_rcvd = unfolded_received(msgs[0].body)
    assert " with ESMTP id " in plain_rcvd and "using" not in plain_rcvd, plain_rcvd
    assert_tls_received(unfolded_received(msgs[1].body), info, "ESMTPSA")


def test_submission_remote_mail_needs_auth_even_after_starttls(ctx):
    sslctx = client_context(ctx)
    msg = message("submission")
    with smtp_server(ctx, dict(REMOTE, PGMAIL_REQUIRE_AUTH="yes")) as srv, \
            Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        assert "AUTH" not in ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "530 5.7.0", "MAIL without AUTH in clear")
        expect(c.cmd("STARTTLS"), "220 2.0.0", "STARTTLS")
        info = tls_info(starttls(c, sslctx))
        assert "AUTH" in ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "530 5.7.0", "MAIL without AUTH under TLS")
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0", "AUTH")
        expect(send_mail(c, ALICE, [BOB], msg), "250 2.0.0", "mail")
        expect(c.cmd("QUIT"), "221", "QUIT")
    assert_tls_received(only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR), info, "ESMTPSA")


def test_allow_plaintext_auth_offers_passwords_in_clear(ctx):
    env = dict(REMOTE, PGMAIL_ALLOW_PLAINTEXT_AUTH="yes")
    with smtp_server(ctx, env) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        assert {"AUTH", "STARTTLS"} <= kw, kw
        expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0", "AUTH")
    pop3lib.deliver(ctx, SENDER, [ALICE], crlf("Subject: x\n\ny\n"))
    with pop3_server(ctx, env) as srv, Pop3Client(srv.port) as c:
        assert {"USER", "STLS"} <= capa(c)
        c.login(ALICE)


def test_received_names_tls_version_and_cipher_esmtps(ctx):
    # Loopback, no AUTH: ESMTPS; once with TLS 1.3 (the default) and once limited to 1.2.
    got = []
    with smtp_server(ctx) as srv:
        for hi in (None, ssl.TLSVersion.TLSv1_2):
            with Client(srv.port) as c:
                expect(c.reply(), "220 ", "greeting")
                c.cmd(f"EHLO {HELO}")
                expect(c.cmd("STARTTLS"), "220 2.0.0", "STARTTLS")
                tls = starttls(c, client_context(ctx, hi=hi))
                c.cmd(f"EHLO {HELO}")
                expect(send_mail(c, SENDER, [BOB], message(f"tls {tls.version()}")),
                       "250 2.0.0", "mail")
                got.append((tls.version(), tls.cipher()[0]))
                expect(c.cmd("QUIT"), "221", "QUIT")
    assert [v for v, _ in got] == ["TLSv1.3", "TLSv1.2"], got
    msgs = ctx.messages()
    assert len(msgs) == 2, msgs
    for m, (version, cipher) in zip(msgs, got):
        check_stored(m.body, SENDER, message(f"tls {version}"), HELO, peer="127.0.0.1")
        rcvd = unfolded_received(m.body)
        assert f"(using {version} with cipher {cipher})" in rcvd, rcvd
        assert " with ESMTPS id " in rcvd, rcvd


def test_tls_older_than_1_2_refused(ctx):
    with smtp_server(ctx) as srv:
        refused = 0
        for old in ("TLSv1", "TLSv1_1"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                version = getattr(ssl.TLSVersion, old)
                sslctx = client_context(ctx, lo=version, hi=version)
                # OpenSSL 3 allows TLS < 1.2 only at security level 0 (SHA-1 signatures).
                sslctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with Client(srv.port) as c:
                expect(c.reply(), "220 ", "greeting")
                c.cmd(f"EHLO {HELO}")
                expect(c.cmd("STARTTLS"), "220 2.0.0", "STARTTLS")
                try:
                    tls = starttls(c, sslctx)
                except ssl.SSLError as e:
                    if e.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"):
                        print(f"    note: tls.tls_older_than_1_2_refused: this OpenSSL "
                              f"cannot offer {old} as a client ({e.reason}); not tested")
                        continue
                    assert "PROTOCOL_VERSION" in e.reason or "UNSUPPORTED" in e.reason, e
                    refused += 1
                else:
                    raise AssertionError(f"the server accepted {tls.version()}")
        handlers_all_exited(srv, 2)
        if refused:
            failed = log_lines(srv, "tls-failed")
            n = sum("unsupported protocol" in ln for ln in failed)
            assert n == refused, (
                f"expected {refused} tls-failed 'unsupported protocol' lines: {failed}")
    # TLS 1.2 and 1.3 are accepted: test_received_names_tls_version_and_cipher_esmtps.


def test_smtp_missing_certificate_no_starttls_mail_still_accepted(ctx):
    env = dict(REMOTE, PGMAIL_TLS_CERT="/nonexistent/tls.crt",
               PGMAIL_TLS_KEY="/nonexistent/tls.key")
    msg = crlf(f"From: {SENDER}\nTo: {BOB}\nSubject: no certificate\n\nstill delivered\n")
    with ctx.tcp(env=env) as srv, Client(srv.port) as c:
        expect(c.reply(), "220 ", "greeting")
        kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
        assert "STARTTLS" not in kw and "AUTH" not in kw, kw
        expect(c.cmd("STARTTLS"), "454 4.7.0", "STARTTLS without a certificate")
        expect(send_mail(c, SENDER, [BOB], msg), "250 2.0.0", "mail")
        expect(c.cmd("QUIT"), "221", "QUIT")
        c.closed()
        srv.wait_handlers(5)
        errors = log_lines(srv, "tls-unavailable")
    only_message(ctx, SENDER, [BOB], msg, peer=REMOTE_ADDR)
    assert len(errors) == 1 and "/nonexistent/tls.crt" in errors[0], (
        f"the log does not name the missing certificate: {errors}")
    assert re.search(r"no such file|system library|fopen|BIO", errors[0], re.I), errors[0]


def test_unusable_certificate_files_are_logged_and_tls_not_offered(ctx):
    crt, key = cert(ctx)
    # What the units hand over when /etc/pgmail/tls.crt is missing (SetCredential=).
    placeholder = write(ctx, "placeholder.pem", b"# no /etc/pgmail/tls.crt given, so no TLS")
    cases = [
        ({"PGMAIL_TLS_CERT": placeholder, "PGMAIL_TLS_KEY": placeholder},
         re.escape(placeholder)),
        ({"PGMAIL_TLS_CERT": crt, "PGMAIL_TLS_KEY": other_key(ctx)},
         "does not match|values mismatch"),
    ]
    for env, named in cases:
        with ctx.tcp(env=env) as srv, Client(srv.port) as c:
            expect(c.reply(), "220 ", "greeting")
            assert "STARTTLS" not in ehlo_keywords(c.cmd(f"EHLO {HELO}")), env
            expect(c.cmd("QUIT"), "221", "QUIT")
            c.closed()
            srv.wait_handlers(5)
            errors = log_lines(srv, "tls-unavailable")
        assert len(errors) == 1 and re.search(named, errors[0]), f"{env}: log {errors}"
    env = dict(REMOTE, PGMAIL_TLS_CERT="/nonexistent/tls.crt", PGMAIL_TLS_KEY=key)
    with pop3lib.pop3_tcp(ctx, env=env) as srv, Pop3Client(srv.port) as c:
        assert "STLS" not in capa(c)
        expect_err(c.cmd("STLS"), "STLS without a certificate")
        expect_err(c.cmd(f"USER {ALICE}"), "USER in clear from a remote peer")
        expect_ok(c.cmd("QUIT"), "QUIT")
        c.closed()
        srv.wait_handlers(5)
        errors = log_lines(srv, "tls-unavailable")
    assert len(errors) == 1 and "/nonexistent/tls.crt" in errors[0], errors


# -- SMTP implicit TLS (port 465) ---------------------------------------------------------------

def plaintext_client_dropped(srv, command, greeting):
    """On an implicit-TLS port, a client speaking the protocol in clear gets nothing in
    clear (no greeting, no reply to its command) and is disconnected."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        closed, early = read_to_close(s, 0.5)
        assert not closed and not early, f"the implicit-TLS port spoke in clear: {early!r}"
        s.sendall(command.encode())
        closed, data = read_to_close(s, 5)
        assert closed, "the server kept a plaintext client on the implicit-TLS port"
        assert greeting not in data, f"a plaintext reply on the implicit-TLS port: {data!r}"


def test_smtp_implicit_tls(ctx):
    msg = message("implicit TLS")
    with smtp_server(ctx, IMPLICIT_SMTP) as srv:
        with smtp_implicit(srv.port, client_context(ctx)) as c:
            expect(c.reply(), "220 ", "greeting over TLS")
            kw = ehlo_keywords(c.cmd(f"EHLO {HELO}"))
            assert "AUTH" in kw and "STARTTLS" not in kw, kw
            expect(c.cmd("STARTTLS"), "503 5.5.1", "STARTTLS under implicit TLS")
            expect(c.cmd(f"MAIL FROM:<{ALICE}>"), "530 5.7.0", "MAIL without AUTH")
            expect(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "235 2.7.0",
                   "AUTH")
            expect(send_mail(c, ALICE, [BOB], msg), "250 2.0.0", "mail")
            info = tls_info(c.sock)
            expect(c.cmd("QUIT"), "221", "QUIT")
        plaintext_client_dropped(srv, f"EHLO {HELO}\r\n", b"220")
        handlers_all_exited(srv, 2)
        assert len(log_lines(srv, "tls-failed")) == 1, srv.log()[-1500:]
    assert_tls_received(only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR), info, "ESMTPSA")


def test_implicit_tls_without_certificate_closes_at_once(ctx):
    for srv in (ctx.tcp(env=IMPLICIT_SMTP), pop3lib.pop3_tcp(ctx, env=IMPLICIT_POP3)):
        with srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                try:
                    client_context(ctx).wrap_socket(s, server_hostname="mx.example.test")
                except OSError:  # ssl.SSLError, a reset or EOF
                    pass
                else:
                    raise AssertionError("a TLS handshake succeeded without a certificate")
            handlers_all_exited(srv, 1)
            assert any("reason=no-tls" in ln for ln in log_lines(srv, "disconnect")), srv.log()


# -- SMTP clients ---------------------------------------------------------------------------------

def test_smtplib_starttls_login_send(ctx):
    msg = message("smtplib starttls")
    with smtp_server(ctx, REMOTE) as srv, \
            smtplib.SMTP("127.0.0.1", srv.port, local_hostname=HELO, timeout=20) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth"), s.esmtp_features
        code, _ = s.starttls(context=client_context(ctx))
        assert code == 220, code
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls"), s.esmtp_features
        s.login(ALICE, PASSWORDS[ALICE])
        assert s.sendmail(ALICE, [BOB], msg) == {}
        info = tls_info(s.sock)
    assert_tls_received(only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR), info, "ESMTPSA")


def test_smtplib_smtp_ssl_implicit(ctx):
    msg = message("smtplib SMTP_SSL")
    with smtp_server(ctx, IMPLICIT_SMTP) as srv, \
            smtplib.SMTP_SSL("127.0.0.1", srv.port, local_hostname=HELO, timeout=20,
                             context=client_context(ctx)) as s:
        s.login(ALICE, PASSWORDS[ALICE])
        assert s.sendmail(ALICE, [BOB], msg) == {}
        info = tls_info(s.sock)
    assert_tls_received(only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR), info, "ESMTPSA")


# swaks sends --data with CRLF line ends and adds CRLF before the final dot: the file lacks
# its last line end (as in test_smtp_clients.py).
SWAKS_MSG = crlf(f"From: {ALICE}\nTo: {BOB}\nSubject: swaks tls\n\nsent by swaks\n..two dots\n")


def _swaks(ctx, port, *args):
    path = write(ctx, "swaks.eml", SWAKS_MSG[:-2])
    r, out = run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", HELO,
                  "--timeout", "30", "--tls-verify", "--tls-ca-path", cert(ctx)[0],
                  "-a", "PLAIN", "-au", ALICE, "-ap", PASSWORDS[ALICE],
                  "--from", ALICE, "--to", BOB, "--data", "@" + path, *args])
    if "Net::SSLeay" in out or "TLS not available" in out:
        raise AssertionError("swaks has no TLS support: install libnet-ssleay-perl "
                             f"(Makefile DEPS)\n{out[-600:]}")
    assert r.returncode == 0, f"swaks exited {r.returncode}:\n{out[-1500:]}"
    assert re.search(r"^<[-~ ]*235 2\.7\.0", out, re.M), f"no 235 in swaks output:\n{out[-1500:]}"
    return out


def test_swaks_tls_starttls(ctx):
    with smtp_server(ctx, REMOTE) as srv:
        out = _swaks(ctx, srv.port, "--tls")
    assert re.search(r"^ -> STARTTLS", out, re.M), f"swaks did not STARTTLS:\n{out[-1500:]}"
    rcvd = only_message(ctx, ALICE, [BOB], SWAKS_MSG, peer=REMOTE_ADDR)
    assert " with ESMTPSA id " in rcvd and "(using TLSv1." in rcvd, rcvd


def test_swaks_tlsc_implicit(ctx):
    with smtp_server(ctx, IMPLICIT_SMTP) as srv:
        out = _swaks(ctx, srv.port, "--tlsc")
    assert "STARTTLS" not in out, f"swaks --tlsc sent STARTTLS:\n{out[-1500:]}"
    rcvd = only_message(ctx, ALICE, [BOB], SWAKS_MSG, peer=REMOTE_ADDR)
    assert " with ESMTPSA id " in rcvd and "(using TLSv1." in rcvd, rcvd


def _curl_smtp(ctx, url, *args):
    msg = message(f"curl {url.split(':')[0]}")
    path = write(ctx, "curl.eml", msg)
    r, out = run(["curl", "-sS", "--max-time", "30", "--cacert", cert(ctx)[0], url,
                  "--user", f"{ALICE}:{PASSWORDS[ALICE]}", "--mail-from", ALICE,
                  "--mail-rcpt", BOB, "--upload-file", path, *args])
    return r, out, msg


def test_curl_smtp_ssl_reqd(ctx):
    with smtp_server(ctx, REMOTE) as srv:
        r, out, msg = _curl_smtp(ctx, f"smtp://127.0.0.1:{srv.port}/{HELO}", "--ssl-reqd")
    assert r.returncode == 0, f"curl exited {r.returncode}: {out[-600:]}"
    rcvd = only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR)
    assert " with ESMTPSA id " in rcvd and "(using TLSv1.3 " in rcvd, rcvd
    # Without a certificate there is no STARTTLS: curl --ssl-reqd gives up (64) and sends
    # no password.
    ctx.reset_mail()
    with ctx.tcp(env=REMOTE) as srv:
        r, out, _ = _curl_smtp(ctx, f"smtp://127.0.0.1:{srv.port}/{HELO}", "--ssl-reqd")
    assert r.returncode == 64, f"curl --ssl-reqd without STARTTLS exited {r.returncode}: {out}"
    assert ctx.message_count() == 0


def test_curl_smtps_implicit(ctx):
    with smtp_server(ctx, IMPLICIT_SMTP) as srv:
        r, out, msg = _curl_smtp(ctx, f"smtps://127.0.0.1:{srv.port}/{HELO}")
    assert r.returncode == 0, f"curl exited {r.returncode}: {out[-600:]}"
    rcvd = only_message(ctx, ALICE, [BOB], msg, peer=REMOTE_ADDR)
    assert " with ESMTPSA id " in rcvd and "(using TLSv1.3 " in rcvd, rcvd


def _s_client(ctx, port, proto, lines):
    return run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", proto,
                "-CAfile", cert(ctx)[0], "-verify_return_error", "-verify_hostname",
                "mx.example.test", "-servername", "mx.example.test", "-quiet", "-crlf"],
               input="".join(ln + "\n" for ln in lines).encode(), timeout=30)


def test_openssl_s_client_starttls_smtp(ctx):
    msg_lines = [f"From: {ALICE}", f"To: {BOB}", "Subject: s_client", "", "via s_client"]
    with smtp_server(ctx, REMOTE) as srv:
        r, out = _s_client(ctx, srv.port, "smtp", [
            f"EHLO {HELO}", f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}",
            f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{BOB}>", "DATA", *msg_lines, ".", "QUIT"])
    assert r.returncode == 0, f"s_client exited {r.returncode}:\n{out[-1500:]}"
    for want in ("250-AUTH PLAIN LOGIN", "235 2.7.0", "354 ", "250 2.0.0", "221 "):
        assert want in out, f"no {want!r} in s_client output:\n{out[-1500:]}"
    rcvd = only_message(ctx, ALICE, [BOB], crlf("\n".join(msg_lines) + "\n"), peer=REMOTE_ADDR)
    assert " with ESMTPSA id " in rcvd, rcvd


# -- POP3 -----------------------------------------------------------------------------------------

def _one_message(ctx, subject):
    pop3lib.deliver(ctx, SENDER, [ALICE], crlf(f"Subject: {subject}\n\n.dot\nbody\n"))
    return stored_bodies(ctx, ALICE)[0]


def test_pop3_stls_remote_login_only_after_it(ctx):
    stored = _one_message(ctx, "stls")
    with pop3_server(ctx, REMOTE) as srv, Pop3Client(srv.port) as c:
        caps = capa(c)
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps, caps
        expect_err(c.cmd(f"USER {ALICE}"), "USER in clear", "-ERR [AUTH]")
        expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS in clear", "-ERR")
        expect_err(c.cmd(f"AUTH PLAIN {plain_blob(ALICE, PASSWORDS[ALICE])}"), "AUTH in clear",
                   "-ERR [AUTH]")
        expect_ok(c.cmd("STLS"), "STLS")
        stls(c, client_context(ctx))
        caps = capa(c)
        assert "STLS" not in caps and {"USER", "SASL"} <= caps, caps
        expect_err(c.cmd("STLS"), "second STLS")
        c.login(ALICE)
        st, body = c.retr(1)
        expect_ok(st, "RETR")
        assert body == stored, f"RETR under TLS differs: {body[:200]!r}"
        expect_ok(c.cmd("QUIT"), "QUIT")
    # From loopback, passwords are allowed in clear; STLS is offered all the same.
    with pop3_server(ctx) as srv, Pop3Client(srv.port) as c:
        assert {"STLS", "USER"} <= capa(c)


def test_pop3_stls_pipelined_user_is_discarded(ctx):
    # Were the injected USER executed under TLS, the first reply read after the handshake
    # would be its +OK, and PASS would log in.
    _one_message(ctx, "injection")
    with pop3_server(ctx, REMOTE) as srv, Pop3Client(srv.port) as c:
        c.send(f"STLS\r\nUSER {ALICE}\r\n")
        expect_ok(c.status(), "STLS")
        stls(c, client_context(ctx))
        expect_err(c.cmd(f"PASS {PASSWORDS[ALICE]}"), "PASS after STLS without a USER of its own")
        nothing_more(c)
        c.login(ALICE)
        assert pop3lib.stat(c)[0] == 1
        expect_ok(c.cmd("QUIT"), "QUIT")


def test_pop3s_implicit(ctx):
    stored = _one_message(ctx, "pop3s")
    with pop3_server(ctx, IMPLICIT_POP3) as srv:
        with pop3_implicit(srv.port, client_context(ctx)) as c:
            caps = capa(c)
            assert "STLS" not in caps and {"USER", "SASL"} <= caps, caps
            expect_err(c.cmd("STLS"), "STLS under implicit TLS")
            c.login(ALICE)
            st, body = c.retr(1)
            assert st.startswith("+OK") and body == stored, (st, body[:200])
            expect_ok(c.cmd("QUIT"), "QUIT")
        plaintext_client_dropped(srv, "CAPA\r\n", b"+OK")
        handlers_all_exited(srv, 2)


def test_poplib_stls_and_pop3_ssl(ctx):
    stored = _one_message(ctx, "poplib")
    with pop3_server(ctx, REMOTE) as srv:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        try:
            assert "STLS" in p.capa() and "USER" not in p.capa()
            p.stls(context=client_context(ctx))
            p.user(ALICE)
            p.pass_(PASSWORDS[ALICE])
            resp, lines, _ = p.retr(1)
            assert b"".join(x + b"\r\n" for x in lines) == stored
            p.quit()
        finally:
            p.close()
    with pop3_server(ctx, IMPLICIT_POP3) as srv:
        p = poplib.POP3_SSL("127.0.0.1", srv.port, timeout=20, context=client_context(ctx))
        try:
            p.user(ALICE)
            p.pass_(PASSWORDS[ALICE])
            assert p.stat()[0] == 1
            p.quit()
        finally:
            p.close()


def _curl_pop3(ctx, url, *args):
    return run(["curl", "-sS", "--max-time", "30", "--cacert", cert(ctx)[0],
                "-u", f"{ALICE}:{PASSWORDS[ALICE]}", url, *args])


def test_curl_pop3_ssl_reqd_and_pop3s(ctx):
    stored = _one_message(ctx, "curl pop3")
    with pop3_server(ctx, REMOTE) as srv:
        r, out = _curl_pop3(ctx, f"pop3://127.0.0.1:{srv.port}/1", "--ssl-reqd")
    assert r.returncode == 0, f"curl pop3 --ssl-reqd exited {r.returncode}: {out[-600:]}"
    assert r.stdout == stored, f"curl got {r.stdout[:200]!r}"
    with pop3_server(ctx, IMPLICIT_POP3) as srv:
        r, out = _curl_pop3(ctx, f"pop3s://127.0.0.1:{srv.port}/1")
    assert r.returncode == 0, f"curl pop3s exited {r.returncode}: {out[-600:]}"
    assert r.stdout == stored, f"curl got {r.stdout[:200]!r}"


def test_openssl_s_client_starttls_pop3(ctx):
    _one_message(ctx, "s_client")
    with pop3_server(ctx, REMOTE) as srv:
        r, out = _s_client(ctx, srv.port, "pop3", [
            "CAPA", f"USER {ALICE}", f"PASS {PASSWORDS[ALICE]}", "STAT", "QUIT"])
    assert r.returncode == 0, f"s_client exited {r.returncode}:\n{out[-1500:]}"
    assert re.search(r"^USER\r?$", out, re.M), f"CAPA under TLS lacks USER:\n{out[-1500:]}"
    assert re.search(r"^\+OK 1 \d+", out, re.M), f"no STAT +OK 1 in:\n{out[-1500:]}"


# -- Clients that drop or stall during the handshake ----------------------------------------------

def test_smtp_dropped_handshakes_leave_no_handler(ctx):
    hello = client_hello(ctx)
    with smtp_server(ctx) as srv:
        for tail in (b"", b"GET / HTTP/1.0\r\n\r\n", hello[:len(hello) // 2], b"\x16\x03\x01"):
            with Client(srv.port) as c:
                expect(c.reply(), "220 ", "greeting")
                c.send(b"EHLO x\r\nSTARTTLS\r\n")
                expect(c.reply(), "250", "EHLO")
                expect(c.reply(), "220 2.0.0", "STARTTLS")
                c.send(tail)
        handlers_all_exited(srv, 4)
        assert len(log_lines(srv, "tls-failed")) == 4, srv.log()[-2000:]
    with smtp_server(ctx, IMPLICIT_SMTP) as srv:
        for data in (b"", b"EHLO x\r\n", hello[:40]):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(data)
        handlers_all_exited(srv, 3)


def test_pop3_dropped_handshakes_leave_no_handler(ctx):
    hello = client_hello(ctx)
    with pop3_server(ctx) as srv:
        for tail in (b"", b"\x00" * 300, hello[:len(hello) // 2]):
            with Pop3Client(srv.port) as c:
                expect_ok(c.cmd("STLS"), "STLS")
                c.send(tail)
        handlers_all_exited(srv, 3)
        assert len(log_lines(srv, "tls-failed")) == 3, srv.log()[-2000:]
    with pop3_server(ctx, IMPLICIT_POP3) as srv:
        for data in (b"", b"CAPA\r\n", hello[:40]):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(data)
        handlers_all_exited(srv, 3)


def stalled(srv, prologue, data):
    """A raw connection that runs prologue(sock) (the plaintext part, e.g. up to STARTTLS),
    sends data (part of a handshake, or nothing) and then stalls."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    prologue(s)
    s.sendall(data)
    return s


def all_dropped_after(socks, timeout):
    """Every stalled connection (opened together) is closed by the server after about
    timeout seconds; none before."""
    t0 = time.monotonic()
    try:
        for s in socks:
            closed, _ = read_to_close(s, timeout + 6 - (time.monotonic() - t0))
            assert closed, f"a stalled handshake was not dropped within {timeout + 6}s"
        took = time.monotonic() - t0
        assert took >= timeout - 0.5, f"dropped after {took:.1f}s, before the {timeout}s timeout"
    finally:
        for s in socks:
            s.close()


def smtp_upto_starttls(s):
    f = s.makefile("rb")
    assert f.readline().startswith(b"220 "), "greeting"
    s.sendall(b"EHLO x\r\nSTARTTLS\r\n")
    while not (ln := f.readline()).startswith(b"250 "):
        assert ln.startswith(b"250-"), ln
    assert f.readline().startswith(b"220 2.0.0"), "STARTTLS"


def pop3_upto_stls(s):
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK"), "greeting"
    s.sendall(b"STLS\r\n")
    assert f.readline().startswith(b"+OK"), "STLS"


def nothing(s):
    pass


def stalled_handshakes_dropped(ctx, server, implicit, timeout_key, upto_tls):
    """Four clients that stall the TLS handshake (after STARTTLS/STLS or on the implicit-TLS
    port, sending nothing or half a ClientHello) are dropped after the 2 s timeout."""
    half = client_hello(ctx)[:200]
    env = {timeout_key: "2"}
    with server(ctx, env) as srv, server(ctx, dict(implicit, **env)) as imp:
        all_dropped_after([stalled(srv, upto_tls, b""),
                           stalled(srv, upto_tls, half),
                           stalled(imp, nothing, b""),
                           stalled(imp, nothing, half)], 2)
        handlers_all_exited(srv, 2)
        handlers_all_exited(imp, 2)
        failed = log_lines(srv, "tls-failed") + log_lines(imp, "tls-failed")
        assert len(failed) == 4 and all("timeout" in ln for ln in failed), failed


def test_smtp_stalled_handshake_dropped_after_timeout(ctx):
    stalled_handshakes_dropped(ctx, smtp_server, IMPLICIT_SMTP, "PGMAIL_SMTP_TIMEOUT",
                               smtp_upto_starttls)


def test_pop3_stalled_handshake_dropped_after_timeout(ctx):
    stalled_handshakes_dropped(ctx, pop3_server, IMPLICIT_POP3, "PGMAIL_POP3_TIMEOUT",
                               pop3_upto_stls)


# -- Clients that stall or trickle a command under TLS ---------------------------------------------
# The timeout (2 s here) bounds each command line whole (RFC 5321 4.5.3.2): under TLS a stall
# in the middle of a record, or a line sent one byte (or one record) at a time, must end the
# session the way it does in clear: SMTP answers 421 4.4.2, POP3 closes (RFC 1939
# autologout), both log disconnect reason=timeout, never an error or "eof".

def smtp_tls_session(srv, ctx):
    """A RecordClient past STARTTLS and a second EHLO on a raw connection to srv."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    smtp_upto_starttls(s)
    c = RecordClient(s, client_context(ctx))
    c.send(b"EHLO client.example\r\n")
    while not (ln := c.line()).startswith(b"250 "):
        assert ln.startswith(b"250-"), ln
    return c


def pop3_tls_session(srv, ctx):
    """A RecordClient past STLS on a raw connection to srv."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    pop3_upto_stls(s)
    c = RecordClient(s, client_context(ctx))
    c.send(b"CAPA\r\n")
    assert c.line().startswith(b"+OK"), "CAPA over TLS"
    while c.line() != b".":
        pass
    return c


def ends_with_timeout(c, first):
    """The server's last words: first (a reply prefix, or None for none) and then the close."""
    ln = c.line(timeout=8)
    if first is None:
        assert ln is None, f"expected the connection closed without a reply, got {ln!r}"
    else:
        assert ln is not None and ln.startswith(first), f"expected {first!r}, got {ln!r}"
        assert c.line(timeout=5) is None, "the connection stayed open after the timeout reply"
    c.sock.close()


def stalls_under_tls(ctx, server, session, timeout_key, command, reply):
    """Three stalls: a whole record holding half a command, half of the record holding a
    whole command, and a command trickled one byte every 0.5 s (each a fragment of one
    record). Each ends with reply, and is logged as a timeout."""
    with server(ctx, {timeout_key: "2"}) as srv:
        c = session(srv, ctx)
        c.send(command[:len(command) // 2])
        ends_with_timeout(c, reply)

        c = session(srv, ctx)
        rec = c.records(command)
        c.sock.sendall(rec[:len(rec) // 2])
        ends_with_timeout(c, reply)

        c = session(srv, ctx)
        rec = c.records(command * 4)
        sent = dribble(c.sock, [rec[i:i + 1] for i in range(len(rec))], 0.5)
        assert sent < len(rec), "the server waited for the whole trickled record"
        assert sent >= 3, f"the server spoke after {sent} bytes, before the 2 s timeout"
        ends_with_timeout(c, reply)

        c = session(srv, ctx)
        sent = dribble(c.sock, [c.records(command[i:i + 1]) for i in range(len(command))], 0.5)
        assert sent < len(command), "one-byte records kept the session waiting for ever"
        ends_with_timeout(c, reply)

        assert srv.wait_handlers(10), "a handler outlived its timeout"
        ends = log_lines(srv, "disconnect")
        assert len(ends) == 4 and all("reason=timeout" in ln for ln in ends), ends
        assert not log_lines(srv, "tls-failed"), srv.log()[-2000:]


def test_smtp_tls_stalled_or_trickled_command_times_out(ctx):
    stalls_under_tls(ctx, smtp_server, smtp_tls_session, "PGMAIL_SMTP_TIMEOUT",
                     b"MAIL FROM:<sender@remote.example>\r\n", b"421 4.4.2 ")


def test_pop3_tls_stalled_or_trickled_command_times_out(ctx):
    stalls_under_tls(ctx, pop3_server, pop3_tls_session, "PGMAIL_POP3_TIMEOUT",
                     b"USER alice@example.test\r\n", None)
