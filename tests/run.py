#!/usr/bin/env python3
"""run.py - pgmail's test runner (make test runs it from the repository root).

    python3 tests/run.py [-k PATTERN]... [--san | --no-san] [-v]

Starts a private PostgreSQL under .run/test-pg, and for each pass (the normal binaries, then
the ASan/UBSan ones under build-san/, whose test names end in [san]) makes a fresh database
pgmail_test, loads the fixtures with that pass's pgmailctl and runs every test: the functions
test_NAME(ctx) of the modules tests/test_*.py (a module may instead offer collect(), a list
of (name, function)). Before each test the mail is emptied. Prints PASS name or
FAIL name: reason per test, then one line "N passed, N failed"; exits 1 when any failed.

  -k PATTERN  run only the tests whose name contains PATTERN (or matches it as a glob when it
              holds * ? or [); may be repeated (any one matching is enough)
  --san       only the sanitizer pass;   --no-san  only the normal pass
  -v          print each failure's traceback and the handler's stderr where there is one

The PostgreSQL cluster is stopped and removed at the end, also after a failure or Ctrl-C.
Python 3 standard library only.
"""

import argparse
import fcntl
import fnmatch
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import harness  # noqa: E402

PER_TEST_TIMEOUT = 90  # seconds; a hung test fails instead of hanging the run


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout(f"test took longer than {PER_TEST_TIMEOUT}s")


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def discover():
    """[(name, function)] from tests/test_*.py, in file then definition order."""
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        modname = fn[:-3]
        spec = importlib.util.spec_from_file_location(modname, os.path.join(HERE, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        short = modname[len("test_"):]
        if hasattr(mod, "collect"):
            for name, f in mod.collect():
                tests.append((f"{short}.{name}", f))
            continue
        funcs = [(getattr(mod, a).__code__.co_firstlineno, a) for a in dir(mod)
                 if a.startswith("test_") and callable(getattr(mod, a))]
        for _, a in sorted(funcs):
            tests.append((f"{short}.{a[len('test_'):]}", getattr(mod, a)))
    return tests


def selected(name, patterns):
    if not patterns:
        return True
    for p in patterns:
        if any(c in p for c in "*?["):
            if fnmatch.fnmatchcase(name, p):
                return True
        elif p in name:
            return True
    return False


def pg(cmd, pgdir):
    r = subprocess.run(["sh", os.path.join(HERE, "lib", "pg.sh"), cmd, pgdir],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"pg.sh {cmd} failed: {r.stderr.strip()}")


def setup_pass(ctx):
    """A fresh pgmail_test database with the fixtures, made by this pass's pgmailctl."""
    ctx.psql("DROP DATABASE IF EXISTS pgmail_test WITH (FORCE)", db="postgres")
    ctx.psql("CREATE DATABASE pgmail_test", db="postgres")
    if not os.path.exists(ctx.ctl_bin):
        raise RuntimeError(f"{os.path.relpath(ctx.ctl_bin, ROOT)} is not built")
    ctx.ctl("migrate")
    ctx.ctl("domain", "add", "example.test")
    ctx.ctl("domain", "add", "other.test")
    ctx.ctl("user", "add", "alice@example.test",
            stdin=(harness.PASSWORDS["alice@example.test"] + "\n").encode())
    ctx.ctl("user", "add", "bob@example.test",
            stdin=(harness.PASSWORDS["bob@example.test"] + "\n").encode())
    ctx.ctl("user", "add", "carol@example.test", "--quota", str(harness.CAROL_QUOTA),
            stdin=(harness.PASSWORDS["carol@example.test"] + "\n").encode())
    ctx.ctl("alias", "add", "info@example.test", "alice@example.test")
    got = ctx.psql("SELECT address, coalesce(quota_bytes, -1) FROM accounts ORDER BY address")
    want = ("alice@example.test|-1\nbob@example.test|-1\ncarol@example.test|%d\n"
            % harness.CAROL_QUOTA)
    if got != want:
        raise RuntimeError(f"fixtures: accounts are {got!r}, expected {want!r}")


def run_pass(ctx, tests, suffix, verbose, counts):
    try:
        setup_pass(ctx)
        setup_error = None
    except Exception as e:  # every test of the pass fails with the reason
        setup_error = f"setup failed: {e}"
    for name, fn in tests:
        full = name + suffix
        reason = None
        detail = ""
        t0 = time.monotonic()
        if setup_error:
            reason = setup_error
        else:
            signal.alarm(PER_TEST_TIMEOUT)
            try:
                ctx.reset_mail()
                fn(ctx)
            except KeyboardInterrupt:
                raise
            except AssertionError as e:
                reason = str(e) or "assertion failed"
                detail = traceback.format_exc()
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                detail = traceback.format_exc()
            finally:
                signal.alarm(0)
                try:
                    ctx.stop_all()
                except Exception as e:
                    reason = reason or f"stopping the TCP server: {e}"
        took = f" ({time.monotonic() - t0:.1f}s)" if os.environ.get("PGMAIL_TEST_TIMING") else ""
        if reason is None:
            counts[0] += 1
            print(f"PASS {full}{took}", flush=True)
        else:
            counts[1] += 1
            first, *rest = reason.splitlines() or [""]
            print(f"FAIL {full}: {first}{took}", flush=True)
            for line in rest[:40]:
                print(f"    {line}", flush=True)
            if verbose and detail:
                for line in detail.rstrip().splitlines():
                    print(f"    | {line}", flush=True)


def main():
    ap = argparse.ArgumentParser(description="pgmail tests")
    ap.add_argument("-k", action="append", default=[], metavar="PATTERN")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--san", dest="mode", action="store_const", const="san")
    g.add_argument("--no-san", dest="mode", action="store_const", const="nosan")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    os.chdir(ROOT)
    tests = [(n, f) for n, f in discover() if selected(n, args.k)]
    passes = []
    if args.mode != "san":
        passes.append(False)
    if args.mode != "nosan":
        passes.append(True)

    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    pgdir = os.path.join(ROOT, ".run", "test-pg")
    counts = [0, 0]
    started = time.monotonic()
    ctxs = []
    interrupted = False
    os.makedirs(os.path.join(ROOT, ".run"), exist_ok=True)
    # One run at a time per work tree: they share .run/test-pg.
    lock = open(os.path.join(ROOT, ".run", "test-pg.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("waiting for another test run in this work tree to finish", file=sys.stderr,
              flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        # leftovers of a run that was killed (we hold the lock: no run is using them)
        for d in os.listdir(os.path.join(ROOT, ".run")):
            if d.startswith("pgmail-test-"):
                shutil.rmtree(os.path.join(ROOT, ".run", d), ignore_errors=True)
        shutil.rmtree(pgdir, ignore_errors=True)
        pg("start", pgdir)
        for san in passes:
            if not tests:
                break
            ctx = harness.Ctx(ROOT, san, pgdir)
            ctxs.append(ctx)
            run_pass(ctx, tests, " [san]" if san else "", args.verbose, counts)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", file=sys.stderr, flush=True)
    except Exception as e:
        counts[1] += 1
        print(f"FAIL setup: {e}", flush=True)
    finally:
        signal.alarm(0)
        # Ctrl-C again while cleaning up must not leave the cluster running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for ctx in ctxs:
            try:
                ctx.stop_all()
            except Exception:
                pass
            shutil.rmtree(ctx.tmp, ignore_errors=True)
        try:
            pg("stop", pgdir)
        except Exception as e:
            print(f"warning: {e}", file=sys.stderr)
        shutil.rmtree(pgdir, ignore_errors=True)
    print(f"{counts[0]} passed, {counts[1]} failed", flush=True)
    if os.environ.get("PGMAIL_TEST_TIMING"):
        print(f"({time.monotonic() - started:.1f}s)", file=sys.stderr)
    sys.exit(1 if counts[1] or interrupted else 0)


if __name__ == "__main__":
    main()
