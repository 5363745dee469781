"""auth_abuse: failed logins shared by every connection, program and handler host through the
database (migrations/012, shared/auth.h), with real clients (smtplib, poplib) over TCP.

Each test plays remote clients with PGMAIL_PEER_OVERRIDE (so plaintext AUTH is allowed by
PGMAIL_ALLOW_PLAINTEXT_AUTH) and uses a short window, so that expiry is seen in seconds.
Two servers (systemd-socket-activate) on one database stand for two handler hosts. Also:
the statement count of an AUTH attempt (log_statement of the handler's own backend), and
the shipped fail2ban filter against the handlers' real log lines with fail2ban-regex.
"""

import os
import poplib
import re
import shutil
import smtplib
import subprocess
import time

from harness import PASSWORDS, plain_blob
import pop3lib
from pop3lib import pop3_tcp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALICE = "alice@example.test"
BOB = "bob@example.test"
ATTACKER = "192.0.2.10"
USER_ADDR = "198.51.100.7"
WINDOW = 3


def env(peer, **extra):
    e = {"PGMAIL_PEER_OVERRIDE": peer, "PGMAIL_ALLOW_PLAINTEXT_AUTH": "yes",
         "PGMAIL_AUTH_WINDOW": WINDOW, "PGMAIL_AUTH_SOURCE_FAILURES": 4,
         "PGMAIL_AUTH_ACCOUNT_FAILURES": 3, "PGMAIL_AUTH_FAILURE_DELAY_MS": 20}
    e.update({k: v for k, v in extra.items()})
    return e


def smtp_auth(port, user, password):
    """One connection, one AUTH PLAIN: the reply code (235, 535, 454)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.example")
        try:
            code, _ = s.docmd("AUTH", "PLAIN " + plain_blob(user, password))
        except smtplib.SMTPServerDisconnected:
            return None
        return code


def pop3_auth(port, user, password):
    """One connection, USER/PASS: '+OK' or the -ERR line."""
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        p.user(user)
        try:
            p.pass_(password)
            return "+OK"
        except poplib.error_proto as e:
            return e.args[0].decode()
    finally:
        try:
            p.quit()
        except (poplib.error_proto, OSError):
            pass


def wait_window():
    time.sleep(WINDOW + 0.5)


def test_failures_across_connections_and_hosts_lead_to_refusal(ctx):
    # Host A (SMTP) and host B (POP3 and SMTP): one database, so one record.
    with ctx.tcp(env(ATTACKER)) as a, ctx.tcp(env(ATTACKER)) as b, \
            pop3_tcp(ctx, env(ATTACKER)) as p:
        codes = [smtp_auth(a.port, ALICE, f"guess{i}") for i in range(2)]
        codes += [pop3_auth(p.port, BOB, f"guess{i}") for i in range(2)]
        assert codes == [535, 535] + ["-ERR [AUTH] Authentication failed"] * 2, codes
        # 4 failures from this client on two hosts and two programs: refused everywhere,
        # even with the right password (which is never checked then).
        assert smtp_auth(b.port, ALICE, PASSWORDS[ALICE]) == 454
        assert smtp_auth(a.port, BOB, PASSWORDS[BOB]) == 454
        r = pop3_auth(p.port, ALICE, PASSWORDS[ALICE])
        assert r.startswith("-ERR [AUTH] Too many failed logins"), r
        log = a.log() + b.log() + p.log()
        assert len(re.findall(r"event=auth .*result=refused", log)) == 3, log[-2000:]
        # Refusals are not failures: the count stays at 4.
        rows = ctx.ctl("abuse", "list", ATTACKER, env=env(ATTACKER)).out.decode()
        assert re.match(rf"client\t{re.escape(ATTACKER)}\t4\t\S+\trefused\n$", rows), rows


def test_refusal_through_pgbouncer_transaction_pooling(ctx):
    """pgmail-pop3d through PgBouncer (pool_mode = transaction), pgmail-smtpd direct: the
    failures recorded through the pooler refuse the client on both, and a success through
    it still works for another client."""
    with pop3lib.PgBouncer(ctx) as bouncer:
        try:
            with pop3_tcp(ctx, {**env(ATTACKER), **bouncer.env}) as p, \
                    pop3_tcp(ctx, {**env(USER_ADDR), **bouncer.env}) as q, \
                    ctx.tcp(env(ATTACKER)) as a:
                for i in range(4):
                    r = pop3_auth(p.port, (ALICE, BOB)[i % 2], f"guess{i}")
                    assert r == "-ERR [AUTH] Authentication failed", r
                r = pop3_auth(p.port, ALICE, PASSWORDS[ALICE])
                assert r.startswith("-ERR [AUTH] Too many failed logins"), r
                assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 454
                assert pop3_auth(q.port, ALICE, PASSWORDS[ALICE]).startswith("+OK")
        finally:
            ctx.stop_all()  # the handlers end before PgBouncer does


def test_refusal_expires_after_the_window(ctx):
    with ctx.tcp(env(ATTACKER)) as a:
        for i in range(4):  # two logins: the client's limit (4), not the account's (3)
            assert smtp_auth(a.port, (ALICE, BOB)[i % 2], f"guess{i}") == 535
        assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 454
        wait_window()
        assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 235


def test_other_client_is_not_locked_out_beyond_the_window(ctx):
    with ctx.tcp(env(ATTACKER)) as a, ctx.tcp(env(USER_ADDR)) as u, \
            pop3_tcp(ctx, env(USER_ADDR)) as up:
        # The attacker reaches the per-account limit (3) on alice.
        for i in range(3):
            assert smtp_auth(a.port, ALICE, f"guess{i}") == 535
        assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 454, "attacker not refused"
        # alice from her own address, with no failure of her own: never refused.
        assert smtp_auth(u.port, ALICE, PASSWORDS[ALICE]) == 235
        assert pop3_auth(up.port, ALICE, PASSWORDS[ALICE]).startswith("+OK")
        # One typo of hers while the account is attacked: she is refused (the account is
        # over its limit and her address has failed) ...
        assert smtp_auth(u.port, ALICE, "typo") == 535
        assert smtp_auth(u.port, ALICE, PASSWORDS[ALICE]) == 454
        # ... but only until her failure leaves the window, though the attacker goes on.
        t0 = time.monotonic()
        while time.monotonic() - t0 < WINDOW - 0.5:
            assert smtp_auth(a.port, ALICE, "more") in (535, 454)
            time.sleep(0.3)
        time.sleep(max(0, WINDOW + 0.5 - (time.monotonic() - t0)))
        assert smtp_auth(u.port, ALICE, PASSWORDS[ALICE]) == 235


def test_unknown_and_known_accounts_look_the_same(ctx):
    results, listed = {}, {}
    limits = {"PGMAIL_AUTH_FAILURE_DELAY_MS": 50, "PGMAIL_AUTH_SOURCE_FAILURES": 6,
              "PGMAIL_AUTH_ACCOUNT_FAILURES": 6}
    for user, peer in ((ALICE, ATTACKER), ("nobody@example.test", USER_ADDR)):
        with ctx.tcp(env(peer, **limits)) as s:
            seq = []
            for i in range(8):
                t0 = time.monotonic()
                code = smtp_auth(s.port, user, f"guess{i}")
                seq.append((code, time.monotonic() - t0))
            results[user] = seq
        listed[user] = ctx.ctl("abuse", "list", user, env=env(peer)).out.decode()
    known, unknown = results[ALICE], results["nobody@example.test"]
    assert [c for c, _ in known] == [c for c, _ in unknown] == [535] * 6 + [454] * 2, results
    # The same delays step by step, growing: 50 ms x 1, 1, 1, 2, 4, 8, then the refusals
    # 8 (6 failures). Scheduling noise only adds time: compare with a tolerance.
    for i, ((_, tk), (_, tu)) in enumerate(zip(known, unknown)):
        assert abs(tk - tu) < 0.1, f"attempt {i + 1}: known {tk:.3f}s, unknown {tu:.3f}s"
    for i, least in enumerate((0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.4, 0.4)):
        for who, seq in results.items():
            assert seq[i][1] >= least * 0.9, f"{who}: attempt {i + 1} after {seq[i][1]:.3f}s"
    # Listed alike: 6 failures each, the refusals not counted.
    for user, rows in listed.items():
        assert re.match(rf"login\t{re.escape(user)}\t6\t\S+\trefused-if-failed\n$", rows), rows


def test_pgmailctl_abuse_list_and_clear(ctx):
    with ctx.tcp(env(ATTACKER)) as a:
        for i in range(4):
            assert smtp_auth(a.port, BOB if i else ALICE, f"guess{i}") == 535
        assert smtp_auth(a.port, BOB, PASSWORDS[BOB]) == 454
        e = env(ATTACKER)
        out = [ln.split("\t") for ln in ctx.ctl("abuse", "list", env=e).out.decode().splitlines()]
        assert [r[:3] + r[4:] for r in out] == [
            ["client", ATTACKER, "4", "refused"], ["login", BOB, "3", "refused-if-failed"],
            ["login", ALICE, "1", "delayed"]], out
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", r[3]) for r in out), out
        assert ctx.ctl("abuse", "list", "BOB@example.test", env=e).out.decode() \
            .startswith(f"login\t{BOB}\t3\t")
        assert ctx.ctl("abuse", "list", "203.0.113.1", env=e).out == b""
        assert ctx.ctl("abuse", "clear", ATTACKER, env=e).out == b"cleared 4 failed logins\n"
        assert ctx.ctl("abuse", "list", env=e).out == b""
        assert smtp_auth(a.port, BOB, PASSWORDS[BOB]) == 235, "clear did not lift the refusal"
        assert smtp_auth(a.port, BOB, "again") == 535
        assert ctx.ctl("abuse", "clear", env=e).out == b"cleared 1 failed logins\n"
        r = ctx.ctl("abuse", "clear", "x" * 300, env=e, check=False)
        assert r.rc == 1 and b"neither a client address nor a login" in r.err, r


# What log_statement writes: "statement:" for simple queries, "execute <unnamed>:" for the
# extended protocol that PQexecParams uses.
STMT = r"LOG:  (?:statement|execute \S+): (.*)"


def postgres_log(ctx):
    with open(os.path.join(ctx.pgdir, "postgres.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_statement_count_per_auth_attempt(ctx):
    """What an AUTH costs in statements, from the handler's backend's own log_statement:
    a success is the lookup alone, a failure the lookup and one record (as before
    migrations/012: the lookup and the failure counter); a refusal the lookup alone."""
    counts = {}
    logged = env(ATTACKER, PGOPTIONS="-c log_statement=all")
    with ctx.tcp(logged) as a:
        for what, password in (("ok", PASSWORDS[ALICE]), ("fail", "guess")):
            before = len(postgres_log(ctx))
            assert smtp_auth(a.port, ALICE, password) == (235 if what == "ok" else 535)
            time.sleep(0.3)  # the log is written by the backend, after the reply
            stmts = re.findall(STMT, postgres_log(ctx)[before:])
            counts[what] = stmts
        ctx.psql("SELECT pgmail_auth_failure('t', '192.0.2.10', 'x', 60) FROM generate_series(1, 3)")
        before = len(postgres_log(ctx))
        assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 454
        time.sleep(0.3)
        counts["refused"] = re.findall(STMT, postgres_log(ctx)[before:])
    assert len(counts["ok"]) == 1 and "FROM auth_failures" in counts["ok"][0], counts
    assert len(counts["fail"]) == 2 and "pgmail_auth_failure" in counts["fail"][1], counts
    assert len(counts["refused"]) == 1, counts
    print(f"statements per AUTH: ok {len(counts['ok'])}, fail {len(counts['fail'])}, "
          f"refused {len(counts['refused'])}")


def test_fail2ban_filter_matches_the_handlers_log_lines(ctx):
    """deploy/fail2ban/filter.d/pgmail.conf with Debian's fail2ban-regex, against the lines
    pgmail-smtpd and pgmail-pop3d really wrote (as syslog shows a journal entry: time,
    host, then the handler's line), finds exactly the failed and refused logins, each with
    the client's address; successful logins and other events do not match."""
    f2b = shutil.which("fail2ban-regex")
    assert f2b, "fail2ban-regex missing (make deps installs fail2ban)"
    with ctx.tcp(env(ATTACKER)) as a, pop3_tcp(ctx, env(USER_ADDR)) as p:
        assert smtp_auth(a.port, ALICE, "guess") == 535
        assert smtp_auth(a.port, ALICE, PASSWORDS[ALICE]) == 235
        assert pop3_auth(p.port, BOB, "guess").startswith("-ERR [AUTH]")
        assert pop3_auth(p.port, "nobody@example.test", "guess").startswith("-ERR [AUTH]")
        lines = [ln for ln in (a.log() + p.log()).splitlines() if ln.startswith("pgmail-")]
    assert any("result=ok" in ln for ln in lines), lines
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    path = os.path.join(ctx.tmp, "mail.log")
    with open(path, "w") as f:
        f.writelines(f"{stamp} mx1 {ln}\n" for ln in lines)
    # As installed: beside fail2ban's own common.conf (which the filter includes).
    fdir = os.path.join(ctx.tmp, "fail2ban", "filter.d")
    os.makedirs(fdir, exist_ok=True)
    filt = os.path.join(fdir, "pgmail.conf")
    shutil.copy(os.path.join(ROOT, "deploy", "fail2ban", "filter.d", "pgmail.conf"), filt)
    if not os.path.exists(os.path.join(fdir, "common.conf")):
        os.symlink("/etc/fail2ban/filter.d/common.conf", os.path.join(fdir, "common.conf"))
    r = subprocess.run([f2b, "--print-all-matched", path, filt],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", r.stdout)
    assert m, r.stdout
    assert (int(m.group(3)), int(m.group(4))) == (3, len(lines) - 3), r.stdout
    matched = re.findall(r"^\|  (.*)$", r.stdout.split("Matched line(s):")[1].split("`-")[0],
                         re.M)
    assert all(re.search(r"result=(?:fail|refused) ", ln) for ln in matched), matched
    r = subprocess.run([f2b, "--out", "ip", path, filt], capture_output=True, text=True,
                       timeout=120)
    # One failure from the SMTP client, two from the POP3 one: each with its address.
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted([ATTACKER, USER_ADDR, USER_ADDR]), r.stdout
