"""pop3_transcripts: tests/pop3/NAME.in piped into pop3/pgmail-pop3d, compared with NAME.out.

The SMTP transcripts' mechanism (test_transcripts.py: parse_in, the .out/.env/.sql/.db
formats) with one addition: NAME.mail, when present, holds the messages put into the
mailboxes (with SQL, byte for byte) before each run. Each transcript runs twice, written
whole (fully pipelined) and one byte at a time; both outputs must match NAME.out and equal
each other. tests/pop3/README describes the files.
"""

import os

import harness
import pop3lib
from test_transcripts import describe, parse_in, read_env, read_lines

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pop3")


def parse_mail(path):
    """[(addresses, body bytes)] from a .mail file: each message starts with a line
    '=== ADDRESS [ADDRESS...]'; its lines follow in the .in format (CRLF added, escapes).
    Before the first '===' line, '#' lines are comments and 'include FILE' stands for the
    messages of tests/pop3/FILE."""
    with open(path, "rb") as f:
        raw = f.read()
    out = []
    msgs = []
    cur = None
    for n, line in enumerate(raw.split(b"\n"), 1):
        if line.startswith(b"=== "):
            cur = (line[4:].decode().split(), [])
            msgs.append(cur)
        elif cur is None and line.startswith(b"include "):
            out += parse_mail(os.path.join(DIR, line[8:].decode().strip()))
        elif cur is None:
            if line.strip() and not line.startswith(b"#"):
                raise AssertionError(f"{os.path.basename(path)} line {n}: text before the "
                                     "first '===' line")
        else:
            cur[1].append(line)
    for addrs, lines in msgs:
        while lines and lines[-1] == b"":  # blank lines between messages separate them
            lines.pop()
        out.append((addrs, parse_in(b"\n".join(lines) + b"\n")))
    return out


# What ctx.reset_mail() does, sent in the same psql run as the messages (one psql start
# instead of two per run: psql's start-up is most of a transcript's time).
RESET_SQL = "TRUNCATE mailbox, messages RESTART IDENTITY; UPDATE accounts SET used_bytes = 0, message_count = 0;\n"


def reset_and_load(ctx, msgs):
    """Empty the mailboxes and store msgs, in one psql run."""
    if not msgs:
        ctx.reset_mail()
        return
    pop3lib.psql_stdin(ctx, RESET_SQL + "".join(
        pop3lib.insert_sql(addrs, f"decode('{body.hex()}', 'hex')") for addrs, body in msgs))


def run_transcript(ctx, name, modes=("whole", "bytewise")):
    base = os.path.join(DIR, name)
    with open(base + ".in", "rb") as f:
        data = parse_in(f.read())
    expected = read_lines(base + ".out")
    env = read_env(base + ".env")
    mail = []
    if os.path.exists(base + ".mail"):
        mail = parse_mail(base + ".mail")
    sql = None
    if os.path.exists(base + ".sql"):
        with open(base + ".sql", encoding="utf-8") as f:
            sql = f.read()
        db_expected = read_lines(base + ".db")
    got = {}
    for mode in modes:
        reset_and_load(ctx, mail)
        r = pop3lib.pop3d_pipe(ctx, data, env=env, chunked=(mode == "bytewise"))
        if not harness.match_lines(expected, r.lines):
            err = r.err.decode("utf-8", "replace").strip().splitlines()[-5:]
            raise AssertionError(f"{mode}: output differs from {name}.out: "
                                 + describe(expected, r.lines)
                                 + ("\nhandler stderr (last lines):\n  " + "\n  ".join(err)
                                    if err else ""))
        if sql is not None:
            out = ctx.psql(sql).rstrip("\n")  # a CR inside a value stays on its line
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
