"""test_static.py - checks that need no database: the C unit tests of the parsers (built by
`make test` as build/tests/unit/unit, and under ASan/UBSan as build-san/tests/unit/unit), the
systemd units (systemd-analyze verify, through tests/units/verify.sh), how the programs link
libpq (in either link mode of the Makefile) and that the files of pgmailctl, each handler,
pgmail-relay and shared/ form a tree."""

import os
import re
import subprocess


def unit_tests_defined(root):
    """{function name: file} of every test function the unit sources define
    (void test_NAME(void), as tests/unit/check.h declares them)."""
    unit_dir = os.path.join(root, "tests", "unit")
    found = {}
    for fn in sorted(os.listdir(unit_dir)):
        if fn.endswith(".c"):
            with open(os.path.join(unit_dir, fn)) as f:
                for name in re.findall(r"^void (test_\w+)\(void\)", f.read(), re.M):
                    found[name] = fn
    return found


def unit_tests_listed(root):
    """[(name, function)] of the table in tests/unit/unit.c that main() runs."""
    with open(os.path.join(root, "tests", "unit", "unit.c")) as f:
        text = f.read()
    table = text[text.index("tests[] = {"):]
    table = table[:table.index("};")]
    return re.findall(r'\{\s*"([^"]+)",\s*(test_\w+)\s*\}', table)


def test_unit_parsers(ctx):
    # Every unit test function that is defined is in unit.c's table, and every one of them
    # ran and passed: a function added but never listed, or a run that stops early, fails
    # here (a bare count such as ">= 5" would let both through).
    prefix = "build-san" if ctx.san else "build"
    binary = os.path.join(ctx.root, prefix, "tests", "unit", "unit")
    assert os.path.exists(binary), f"{binary} is missing: make unit builds it"
    defined = unit_tests_defined(ctx.root)
    listed = unit_tests_listed(ctx.root)
    assert defined, "no test functions found in tests/unit/*.c"
    unlisted = sorted(set(defined) - {fn for _, fn in listed})
    assert not unlisted, f"defined but not in tests/unit/unit.c's table: {unlisted}"
    undefined = sorted({fn for _, fn in listed} - set(defined))
    assert not undefined, f"in the table but not defined: {undefined}"
    p = subprocess.run([binary], capture_output=True, text=True, timeout=60)
    ctx.check_san(p.stderr, "unit tests")
    assert p.returncode == 0, p.stdout + p.stderr
    ran = re.findall(r"^(PASS|FAIL) unit/(\S+)$", p.stdout, re.M)
    assert ran == [("PASS", name) for name, _ in listed], p.stdout + p.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", p.stdout, re.M)
    assert summary, f"no summary line in:\n{p.stdout}"
    assert (int(summary.group(1)), int(summary.group(2))) == (len(listed), 0), p.stdout


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
    # The relay's own checks ran (notify, watchdog, no capabilities, exposure <= 2.0).
    assert "pgmail-relay.service" in units, units
    assert "verify: OK pgmail-relay.service (" in p.stdout, p.stdout
    assert re.search(r"^security: pgmail-relay\.service [0-9.]+ ", p.stdout, re.M) or \
        "security: pgmail-relay.service skipped" in p.stdout, p.stdout


def needed(path):
    """The DT_NEEDED entries of an ELF file (the shared objects it names itself)."""
    p = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", p.stdout)


def test_programs_link_libpq_as_built(ctx):
    # The Makefile links libpq.a when make deps has installed it (LIBPQ=static, the default
    # then) and libpq.so with the documented `make LIBPQ=shared`. Which one the programs were
    # built with is read from the programs themselves, and each mode is checked for what it
    # promises: static, no libpq.so and none of the Kerberos/LDAP libraries behind it are
    # mapped (each session would pay for loading them; tests/bench/README.md has the
    # figures); shared, libpq.so is named and found. All five programs in the same mode.
    prefix = "build-san/" if ctx.san else ""
    modes = {}
    for prog in ("smtp/pgmail-smtpd", "pop3/pgmail-pop3d", "admin/pgmailctl",
                 "relay/pgmail-relay", "metrics/pgmail-metrics"):
        path = os.path.join(ctx.root, prefix + prog)
        modes[prog] = "shared" if any(n.startswith("libpq.so") for n in needed(path)) \
            else "static"
        p = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "not found" not in p.stdout, f"{prog}: {p.stdout}"
        libs = re.findall(r"^\s*(\S+)", p.stdout, re.M)
        assert any(lib.startswith("libc.so") for lib in libs), p.stdout
        if modes[prog] == "static":
            banned = [lib for lib in libs
                      if re.match(r"lib(pq|gssapi_krb5|ldap|krb5|sasl2)\b", lib)]
            assert not banned, f"{prog} maps {banned} although built with libpq.a"
            nm = subprocess.run(["nm", path], capture_output=True, text=True, timeout=30)
            assert re.search(r" T PQexecParams$", nm.stdout, re.M), \
                f"{prog} names no libpq.so, yet does not contain libpq's PQexecParams"
        else:
            assert any(lib.startswith("libpq.so") for lib in libs), p.stdout
    assert len(set(modes.values())) == 1, f"programs built in different link modes: {modes}"


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


def test_handler_and_shared_files_form_a_tree(ctx):
    # The same rule for the handlers and shared/ (issue 12: smtp's data/deliver/store/bounce,
    # pop3's commands/login/mailbox and smtp's commands/session/handlers once called each
    # other): no circle of calls among the files of one folder; pgmail-relay's too.
    for folder, anchor in (("smtp", "state.o"), ("pop3", "reply.o"), ("shared", "io.o"),
                           ("relay", "sql.o"), ("metrics", "sql.o")):
        objdir = os.path.join(ctx.root, "build-san" if ctx.san else "build", folder)
        graph = calls_between_files(objdir)
        assert anchor in graph, f"{folder}: {sorted(graph)}"
        found = cycle(graph)
        assert found is None, f"{folder} files call each other in a circle: " + " -> ".join(found)
