"""admin_password: one password length limit, said plainly (issue 12, point 14).

libxcrypt's crypt_r refuses a passphrase of 512 octets or more (ERANGE) for yescrypt,
sha512crypt and bcrypt alike, so pgmailctl takes at most 511 octets and refuses a longer
password with a message that names the limit, before anything is stored (it used to accept up
to 1023 octets and then fail with "cannot hash the password with yescrypt (cost 0): Invalid
argument"). A password at the limit logs in over SMTP AUTH and POP3 AUTH. bcrypt hashes only
the first 72 octets: pgmailctl says so when it is given more.
"""

import harness
import pop3lib

DAVE = "dave@example.test"  # made and deleted here; not a fixture
LIMIT = 511
TOO_LONG = (b"pgmailctl: password longer than 511 octets, the most crypt(3) takes for any"
            b" scheme\n")


def password(n, tail="x"):
    """n octets, different at both ends so that a cut anywhere would show."""
    assert n >= 2
    return "A" + "p" * (n - 2) + tail


def smtp_auth(ctx, user, pw):
    """The reply to AUTH PLAIN with user and pw through pgmail-smtpd (piped: a local peer)."""
    r = ctx.smtpd(f"EHLO client.example\r\nAUTH PLAIN {harness.plain_blob(user, pw)}\r\n"
                  "QUIT\r\n".encode())
    return [ln for ln in r.lines if ln[:3] in ("235", "535", "454", "501", "500")]


def pop3_auth(ctx, user, pw):
    """The status line that answers POP3 AUTH PLAIN's continuation (RFC 5034 4)."""
    r = pop3lib.pop3d_pipe(ctx, f"AUTH PLAIN\r\n{harness.plain_blob(user, pw)}\r\nQUIT\r\n"
                           .encode())
    lines = r.out.decode("utf-8", "replace").split("\r\n")
    assert lines[1] == "+ ", lines
    return lines[2]


def add(ctx, pw, scheme="sha512crypt", check=True):
    ctx.ctl("user", "del", DAVE, check=False)
    return ctx.ctl("user", "add", DAVE, stdin=(pw + "\n").encode(),
                   env={"PGMAIL_PASSWORD_SCHEME": scheme}, check=check)


def test_password_at_the_limit_logs_in_with_every_scheme(ctx):
    for scheme in ("yescrypt", "sha512crypt", "bcrypt"):
        pw = password(LIMIT)
        r = add(ctx, pw, scheme)
        if scheme == "bcrypt":
            assert r.err == (b"pgmailctl: warning: bcrypt uses only the first 72 of the"
                             b" password's 511 octets; the rest is ignored at login\n"), r
        else:
            assert r.err == b"", r
        assert smtp_auth(ctx, DAVE, pw)[0].startswith("235 2.7.0"), scheme
        assert pop3_auth(ctx, DAVE, pw).startswith("+OK"), scheme
        if scheme != "bcrypt":  # every octet counts, the last one too
            assert smtp_auth(ctx, DAVE, password(LIMIT, "y"))[0].startswith("535"), scheme
    ctx.ctl("user", "del", DAVE)


def test_password_over_the_limit_is_refused_plainly(ctx):
    for scheme in ("yescrypt", "sha512crypt", "bcrypt"):
        for n in (LIMIT + 1, 1023, 1024, 5000):
            r = add(ctx, password(n), scheme, check=False)
            assert (r.rc, r.out, r.err) == (1, b"", TOO_LONG), (scheme, n, r)
            assert ctx.psql(f"SELECT count(*) FROM accounts WHERE address = '{DAVE}'") == "0\n"
    # user passwd: refused the same way, and the old password still works
    add(ctx, "old-password")
    r = ctx.ctl("user", "passwd", DAVE, stdin=(password(LIMIT + 1) + "\n").encode(),
                check=False)
    assert (r.rc, r.err) == (1, TOO_LONG), r
    assert smtp_auth(ctx, DAVE, "old-password")[0].startswith("235 2.7.0")
    ctx.ctl("user", "passwd", DAVE, stdin=(password(LIMIT) + "\n").encode())
    assert smtp_auth(ctx, DAVE, password(LIMIT))[0].startswith("235 2.7.0")
    ctx.ctl("user", "del", DAVE)


def test_bcrypt_warns_that_it_uses_72_octets(ctx):
    pw = password(73)
    r = add(ctx, pw, "bcrypt")
    assert r.err == (b"pgmailctl: warning: bcrypt uses only the first 72 of the password's"
                     b" 73 octets; the rest is ignored at login\n"), r
    # what the warning says: octet 73 does not count
    assert smtp_auth(ctx, DAVE, password(73, "z"))[0].startswith("235 2.7.0")
    assert add(ctx, password(72), "bcrypt").err == b""
    assert smtp_auth(ctx, DAVE, password(72, "z"))[0].startswith("535")
    ctx.ctl("user", "del", DAVE)


def test_hash_too_long_names_its_limit(ctx):
    r = ctx.ctl("user", "import", DAVE, stdin=b"$6$" + b"a" * 400 + b"\n", check=False)
    assert (r.rc, r.err) == (1, b"pgmailctl: hash longer than 383 octets, the most crypt(3)"
                                b" takes for any scheme\n"), r


def test_pop3_pass_takes_248_octets(ctx):
    # What the man page says: a POP3 command line holds 255 octets with its CRLF (RFC 2449 4),
    # so "PASS " leaves 248 for the password; longer ones need AUTH PLAIN.
    for n, ok in ((248, True), (249, False)):
        pw = password(n)
        add(ctx, pw)
        r = pop3lib.pop3d_pipe(ctx, f"USER {DAVE}\r\nPASS {pw}\r\nQUIT\r\n".encode())
        status = r.out.decode("utf-8", "replace").split("\r\n")[2]
        assert status.startswith("+OK") == ok, (n, status)
        assert pop3_auth(ctx, DAVE, pw).startswith("+OK"), n
    ctx.ctl("user", "del", DAVE)
