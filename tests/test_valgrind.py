"""test_valgrind.py - every SMTP and POP3 transcript once more, with the handler running
under valgrind's memcheck: the replies must still match, and valgrind must report no
memory error and no leak (definite or indirect). Only in the normal pass (the sanitizer
pass already watches the same code, and valgrind cannot run ASan binaries)."""

import glob
import os
import re
import subprocess

import pop3lib
import test_pop3_transcripts
import test_transcripts

VALGRIND = ["valgrind", "--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect", "--track-fds=no", "--num-callers=30"]


def wrapper(ctx, binary, tag):
    """A script that runs binary under valgrind, one log per process in ctx.tmp."""
    logdir = os.path.join(ctx.tmp, f"valgrind-{tag}")
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(ctx.tmp, f"valgrind-{tag}.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(VALGRIND)
                + f" --log-file={logdir}/%p.log {binary} \"$@\"\n")
    os.chmod(path, 0o755)
    return path, logdir


def check_logs(logdir, name):
    problems = []
    for log in sorted(glob.glob(os.path.join(logdir, "*.log"))):
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        os.unlink(log)
        if re.search(r"==\d+== \S", text):
            problems.append(text[:3000])
    assert not problems, f"valgrind on {name}:\n" + "\n".join(problems)


def smtp_case(name):
    def run(ctx):
        if ctx.san:
            return
        path, logdir = wrapper(ctx, ctx.smtpd_bin, "smtpd")
        saved = ctx.smtpd_bin
        ctx.smtpd_bin = path
        try:
            test_transcripts.run_transcript(ctx, name, modes=("whole",))
        finally:
            ctx.smtpd_bin = saved
        check_logs(logdir, name)
    return run


def pop3_case(name):
    def run(ctx):
        if ctx.san:
            return
        path, logdir = wrapper(ctx, pop3lib.pop3d_bin(ctx), "pop3d")
        saved = pop3lib.pop3d_bin
        pop3lib.pop3d_bin = lambda _ctx: path
        try:
            test_pop3_transcripts.run_transcript(ctx, name, modes=("whole",))
        finally:
            pop3lib.pop3d_bin = saved
        check_logs(logdir, name)
    return run


def collect():
    if subprocess.run(["sh", "-c", "command -v valgrind"], capture_output=True).returncode:
        raise AssertionError("valgrind is missing: make deps installs it")
    tests = []
    for path in sorted(glob.glob(os.path.join(test_transcripts.DIR, "*.in"))):
        name = os.path.basename(path)[:-3]
        tests.append((f"smtp.{name}", smtp_case(name)))
    for path in sorted(glob.glob(os.path.join(test_pop3_transcripts.DIR, "*.in"))):
        name = os.path.basename(path)[:-3]
        tests.append((f"pop3.{name}", pop3_case(name)))
    return tests
