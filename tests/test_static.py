"""test_static.py - checks that need no database: the C unit tests of the parsers (built by
`make test` as build/tests/unit/unit, and under ASan/UBSan as build-san/tests/unit/unit) and
the systemd units (systemd-analyze verify, through tests/units/verify.sh)."""

import os
import re
import subprocess


def test_unit_parsers(ctx):
    prefix = "build-san" if ctx.san else "build"
    binary = os.path.join(ctx.root, prefix, "tests", "unit", "unit")
    assert os.path.exists(binary), f"{binary} is missing: make unit builds it"
    p = subprocess.run([binary], capture_output=True, text=True, timeout=60)
    ctx.check_san(p.stderr, "unit tests")
    summary = re.search(r"^(\d+) passed, (\d+) failed$", p.stdout, re.M)
    assert summary, f"no summary line in:\n{p.stdout}"
    assert int(summary.group(2)) == 0 and p.returncode == 0, p.stdout + p.stderr
    assert int(summary.group(1)) >= 5, p.stdout


def test_units_verify(ctx):
    if ctx.san:  # the units do not depend on the build; once is enough
        return
    p = subprocess.run(["bash", os.path.join(ctx.root, "tests", "units", "verify.sh")],
                       capture_output=True, text=True, timeout=120, cwd=ctx.root)
    assert p.returncode == 0, p.stdout + p.stderr
    units = sorted(os.listdir(os.path.join(ctx.root, "units")))
    assert len(units) >= 10, units
    for unit in units:
        assert f"verify: OK {unit}" in p.stdout, f"{unit} not verified:\n{p.stdout}"


def test_handlers_link_libpq_statically(ctx):
    # make deps installs libpq's static archives, so the Makefile links libpq.a: a handler
    # must not map libpq.so and the Kerberos/LDAP libraries behind it (each session would
    # pay for loading them; tests/bench/README.md has the figures).
    prefix = "build-san/" if ctx.san else ""
    for prog in ("smtp/pgmail-smtpd", "pop3/pgmail-pop3d"):
        path = os.path.join(ctx.root, prefix + prog)
        p = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        libs = re.findall(r"^\s*(\S+)", p.stdout, re.M)
        banned = [lib for lib in libs if re.match(r"lib(pq|gssapi_krb5|ldap|krb5|sasl2)\b", lib)]
        assert not banned, f"{prog} maps {banned}: link it with libpq.a (LIBPQ=static)"
        assert any(lib.startswith("libc.so") for lib in libs), p.stdout
