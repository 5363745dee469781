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


def calls_between_files(objdir):
    """{object: set of objects it calls} among the .o files of objdir (nm: a file calls
    another when it uses a symbol the other defines)."""
    objs = sorted(f for f in os.listdir(objdir) if f.endswith(".o"))
    defined, used = {}, {}
    for o in objs:
        path = os.path.join(objdir, o)
        p = subprocess.run(["nm", "-g", "--defined-only", path], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        for line in p.stdout.splitlines():
            defined[line.split()[-1]] = o
        p = subprocess.run(["nm", "-u", path], capture_output=True, text=True, timeout=30)
        used[o] = {line.split()[-1] for line in p.stdout.splitlines() if line.strip()}
    return {o: {defined[s] for s in used[o] if s in defined and defined[s] != o} for o in objs}


def cycle(graph):
    """One cycle of graph (a list of nodes, first repeated last), or None."""
    state = {}

    def visit(n, path):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m, path + [m])
                if found:
                    return found
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def test_admin_files_form_a_tree(ctx):
    # STYLE.md habit 16, issue 12 (c): each file of pgmailctl calls only files below it
    # (admin/admin.h draws the tree), so no two files call each other, directly or round
    # a longer circle. Read from the objects the build made, so it is what really links.
    objdir = os.path.join(ctx.root, "build-san" if ctx.san else "build", "admin")
    graph = calls_between_files(objdir)
    assert "pgmailctl.o" in graph and "fail.o" in graph, sorted(graph)
    assert not graph["fail.o"], f"fail.o must call no admin file: {graph['fail.o']}"
    found = cycle(graph)
    assert found is None, "admin files call each other in a circle: " + " -> ".join(found)
