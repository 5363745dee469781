"""test_fuzz.py - the short form of `make fuzz`: every libFuzzer target (built by make test
into build-fuzz/) runs for a few seconds from the committed seeds, which include every
input that once crashed it. Normal pass only: the fuzz binaries carry their own ASan and
UBSan."""

import os
import re
import subprocess

TARGETS = ("smtp", "pop3", "reader", "address", "base64", "config", "reply", "dsn", "http")
SECONDS = 10


def case(target):
    def run(ctx):
        if ctx.san:
            return
        binary = os.path.join(ctx.root, "build-fuzz", f"fuzz_{target}")
        assert os.path.exists(binary), f"{binary} is missing: make fuzz-build builds it"
        p = subprocess.run(["sh", os.path.join(ctx.root, "tests", "fuzz", "run.sh"),
                            str(SECONDS), target], capture_output=True, text=True,
                           cwd=ctx.root, timeout=SECONDS * 6 + 60)
        assert p.returncode == 0, p.stdout + p.stderr
        m = re.search(r"PASS fuzz/\S+: (\d+) executions", p.stdout)
        assert m and int(m.group(1)) > 100, f"too few executions:\n{p.stdout}"
    return run


def collect():
    return [(t, case(t)) for t in TARGETS]
