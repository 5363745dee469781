"""transcripts: tests/smtp/NAME.in piped into smtp/pgmail-smtpd, compared with NAME.out.

Each transcript runs twice, once written whole (fully pipelined) and once one byte at a time;
both outputs must match NAME.out and, once normalised, each other. When NAME.sql exists, its
psql -XAt output after each run must match NAME.db. NAME.env sets variables for the handler.
The file formats are described in tests/smtp/README.
"""

import os
import re

import harness

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtp")

_ESC = re.compile(rb"\\(x[0-9a-fA-F]{2}|r|n|t|\\|c$)")


def parse_in(raw):
    """The bytes a .in file stands for: every line gets CRLF, except one ending in \\c;
    \\xHH, \\r, \\n, \\t and \\\\ stand for that byte (no line end is added for \\r or \\n)."""
    out = bytearray()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, 1):
        bad = re.search(rb"\\(?!x[0-9a-fA-F]{2}|[rnt\\]|c$)", re.sub(rb"\\\\", b"", line))
        if bad:
            raise AssertionError(f"line {n}: unknown escape {line[bad.start():bad.start() + 4]!r}")
        end = b"\r\n"
        if line.endswith(b"\\c") and not line.endswith(b"\\\\c"):
            line, end = line[:-2], b""

        def sub(m):
            e = m.group(1)
            if e.startswith(b"x"):
                return bytes([int(e[1:], 16)])
            return {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}[e]

        out += _ESC.sub(sub, line) + end
    return bytes(out)


def read_lines(path):
    """Expected lines of a .out or .db file, without '#' comment lines."""
    with open(path, encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f if not ln.startswith("#")]


def read_env(path):
    env = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for ln in f:
                ln = ln.strip()
                if ln and not ln.startswith("#"):
                    k, _, v = ln.partition("=")
                    env[k.strip()] = v.strip()
    return env


def describe(expected, actual):
    shown = "\n".join("  " + harness.visible(a) for a in actual[:60])
    return f"{harness.first_mismatch(expected, actual)}\ngot:\n{shown}"


def run_transcript(ctx, name, modes=("whole", "bytewise")):
    base = os.path.join(DIR, name)
    with open(base + ".in", "rb") as f:
        data = parse_in(f.read())
    expected = read_lines(base + ".out")
    env = read_env(base + ".env")
    sql = None
    if os.path.exists(base + ".sql"):
        with open(base + ".sql", encoding="utf-8") as f:
            sql = f.read()
        db_expected = read_lines(base + ".db")
    got = {}
    for mode in modes:
        ctx.reset_mail()
        r = ctx.smtpd(data, env=env, chunked=(mode == "bytewise"))
        if not harness.match_lines(expected, r.lines):
            err = r.err.decode("utf-8", "replace").strip().splitlines()[-5:]
            raise AssertionError(f"{mode}: output differs from {name}.out: "
                                 + describe(expected, r.lines)
                                 + ("\nhandler stderr (last lines):\n  " + "\n  ".join(err)
                                    if err else ""))
        if sql is not None:
            # psql ends each row with LF; a value ending in CRLF shows as a last line "...\r"
            out = ctx.psql(sql).rstrip("\n")
            db = [harness.visible(harness.normalise(x)) for x in out.split("\n")] if out else []
            if not harness.match_lines(db_expected, db):
                raise AssertionError(f"{mode}: database differs from {name}.db: "
                                     + describe(db_expected, db))
        got[mode] = r.lines
    if len(got) == 2 and got["whole"] != got["bytewise"]:
        raise AssertionError("whole and bytewise outputs differ: "
                             + describe(got["whole"], got["bytewise"]))


def collect():
    tests = []
    for fn in sorted(os.listdir(DIR)):
        if fn.endswith(".in"):
            name = fn[:-3]
            tests.append((name, lambda ctx, name=name: run_transcript(ctx, name)))
    return tests
