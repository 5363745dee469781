"""test_bench.py - `make bench-quick` runs and prints its RESULT lines.

Benchmarks are not tests: nothing here looks at a number. This only checks that the quick
benchmark (tests/bench/bench.py --quick: pgmail, Postfix, Dovecot, PgBouncer and the floors,
all private and on loopback) starts, measures and cleans up, printing one machine-readable
RESULT line per figure for SMTP, POP3 and the floors. Skipped in the sanitizer pass (the
bench runs the normal binaries, and timing under ASan means nothing).
The outbound bench (tests/bench/outbound.py --quick: 3 messages through submission and
pgmail-relay, and through a private Postfix, to smtp-sinks) is checked the same way, once
relay/pgmail-relay is built. So is the TLS bench (tests/bench/tls.py --quick: STARTTLS
sessions of pgmail-smtpd with and without session resumption).
"""

import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "bench", "bench.py")
OUTBOUND = os.path.join(HERE, "bench", "outbound.py")
TLS = os.path.join(HERE, "bench", "tls.py")
RESULT = re.compile(r"^RESULT (\S+) pgmail=(\S+) anchor=(\S+) ratio=(\S+)$", re.M)


def run_quick(ctx, script, seconds):
    """Run a bench script with --quick under its own alarm of seconds; it must exit 0.
    Returns ({figure: RESULT match}, the end of its stderr)."""
    signal.alarm(seconds)
    r = subprocess.run([sys.executable, script, "--quick"], capture_output=True, text=True,
                       timeout=seconds - 10, cwd=ctx.root)
    tail = (r.stderr or "")[-1500:]
    name = os.path.basename(script)
    assert r.returncode == 0, f"{name} --quick exited {r.returncode}: {tail}"
    return {m.group(1): m for m in RESULT.finditer(r.stdout)}, tail


def test_bench_quick(ctx):
    if ctx.san:
        return
    # The quick bench takes ~2 minutes, more than run.py's per-test alarm: this one test
    # gets its own (run.py clears the alarm after every test).
    names, tail = run_quick(ctx, BENCH, 300)
    for prefix in ("smtp_1msg_c1", "smtp_10msg_c16", "pop3_c1", "pop3_c16",
                   "floor_spawn_smtp_1msg_c1", "floor_libpq_pop3_c1",
                   "floor_pgbench_smtp_10msg_c1"):
        assert prefix in names, f"no RESULT {prefix} line; stderr: {tail}"
    for name, m in names.items():
        float(m.group(2)), float(m.group(3)), float(m.group(4))  # numbers (nan allowed)
    assert any(n.startswith("mem_") for n in names), "no memory figure"


def test_outbound_quick(ctx):
    if ctx.san or not os.access(os.path.join(ctx.root, "relay", "pgmail-relay"), os.X_OK):
        return  # sanitizer pass, or the relay is not built (then only Postfix would run)
    names, tail = run_quick(ctx, OUTBOUND, 240)
    for name in ("outbound_rate_1dest", "outbound_rate_100dest", "outbound_latency_idle_ms",
                 "outbound_rate_1dest_pgbouncer", "outbound_rate_100dest_pgbouncer",
                 "outbound_latency_idle_ms_pgbouncer"):
        assert name in names, f"no RESULT {name} line; stderr: {tail}"
        # every message reached the sink (else exit 1 above), so both values are numbers
        pgmail, anchor = float(names[name].group(2)), float(names[name].group(3))
        assert pgmail == pgmail and anchor == anchor, names[name].group(0)


def test_tls_quick(ctx):
    if ctx.san:
        return
    names, tail = run_quick(ctx, TLS, 150)
    for name in ("tls_starttls_1msg", "tls_starttls_10msg", "tls_handshake_ms"):
        assert name in names, f"no RESULT {name} line; stderr: {tail}"
        pgmail, anchor = float(names[name].group(2)), float(names[name].group(3))
        assert pgmail > 0 and anchor > 0, names[name].group(0)
    # every session offered its ticket and resumed: a miss counts as an error in the log
    assert "errors" not in tail, tail
