#!/usr/bin/env python3
"""stats.py - how long `pgmailctl stats` and a pgmail-metrics scrape take on a database of a
million messages (not part of make test; the figure is in the README).

    nice -n 15 python3 tests/bench/stats.py [--messages N] [--keep]

A private PostgreSQL (tests/lib/pg.sh) under a temporary directory gets pgmail's schema
(pgmailctl migrate) and, generated with SQL: 10 domains with 100 accounts each, N messages
(1,000,000) spread evenly over the last 365 days from 5,000 senders, one mailbox row each
(so each account holds N/1000), a queue row for every tenth message (delivered, deferred,
bounced, held) with one attempt each. Then, after ANALYZE, each command runs 5 times and the
median wall time is printed:
    RESULT stats_24h_ms=.. stats_7d_ms=.. stats_30d_ms=.. metrics_ms=.. generate_s=..
Python 3 standard library only.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GENERATE = """
INSERT INTO domains (name) SELECT 'd' || i || '.test' FROM generate_series(1, 10) i;
INSERT INTO accounts (domain_id, address, password_hash)
SELECT d.id, 'u' || a || '@' || d.name, '*' FROM domains d, generate_series(1, 100) a;
INSERT INTO messages (sender, received_at, size, session_id, body)
SELECT 's' || (i % 5000) || '@sender.test',
       now() - (i::double precision / {n}) * interval '365 days',
       100 + (i % 7) * 100, 'bench', convert_to(repeat('x', 100 + (i % 7) * 100), 'UTF8')
  FROM generate_series(1, {n}) i;
INSERT INTO mailbox (account_id, message_id, size, received_at)
SELECT (SELECT min(id) FROM accounts) + (m.id % 1000), m.id, m.size, m.received_at FROM messages m;
UPDATE accounts a SET message_count = t.n, used_bytes = t.b
  FROM (SELECT account_id, count(*) n, sum(size) b FROM mailbox GROUP BY 1) t
 WHERE t.account_id = a.id;
INSERT INTO queue (message_id, sender, recipient, domain, account_id, state, arrived_at,
                   next_attempt, finished_at)
SELECT m.id, 'u1@d1.test', 'r' || (m.id % 3000) || '@remote.example', 'remote.example',
       (SELECT min(id) FROM accounts),
       (ARRAY['delivered', 'delivered', 'delivered', 'deferred', 'bounced', 'held'])[1 + m.id % 6],
       m.received_at, now(),
       CASE WHEN m.id % 6 IN (0, 1, 2, 4) THEN m.received_at + interval '1 minute' END
  FROM messages m WHERE m.id % 10 = 0;
INSERT INTO queue_attempts (queue_id, at, outcome)
SELECT q.id, q.arrived_at + interval '1 minute',
       CASE q.state WHEN 'held' THEN 'deferred' ELSE q.state END FROM queue q;
"""


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, check=True, capture_output=True, **kw)


def timed(cmd, env, data=None, times=5):
    samples = []
    for _ in range(times):
        t0 = time.monotonic()
        run(cmd, env, input=data)
        samples.append((time.monotonic() - t0) * 1000)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pgmail-stats-", dir=os.path.join(ROOT, ".run")
                           if os.path.isdir(os.path.join(ROOT, ".run")) else None)
    pgsh = os.path.join(ROOT, "tests", "lib", "pg.sh")
    env = {**os.environ, "PGHOST": tmp, "PGUSER": "postgres", "PGDATABASE": "pgmail_stats",
           "PGMAIL_CONFIG": "/dev/null", "PGMAIL_LOG": "stderr"}
    try:
        run(["sh", pgsh, "start", tmp], env)
        run(["psql", "-XAq", "-d", "postgres", "-c", "CREATE DATABASE pgmail_stats"], env)
        run([os.path.join(ROOT, "admin", "pgmailctl"), "migrate"], env)
        t0 = time.monotonic()
        run(["psql", "-XAq", "-v", "ON_ERROR_STOP=1", "-c",
             GENERATE.format(n=args.messages)], env)
        run(["psql", "-XAq", "-c", "VACUUM ANALYZE"], env)
        generate = time.monotonic() - t0
        ctl = os.path.join(ROOT, "admin", "pgmailctl")
        res = {}
        for w in ("24h", "7d", "30d"):
            res[f"stats_{w}_ms"] = timed([ctl, "stats", "--since", w, "--json"], env)
        res["metrics_ms"] = timed([os.path.join(ROOT, "metrics", "pgmail-metrics")], env,
                                  b"GET /metrics HTTP/1.0\r\n\r\n")
        print(run([ctl, "stats", "--since", "24h"], env).stdout.decode(), file=sys.stderr)
        print("RESULT " + " ".join(f"{k}={v:.0f}" for k, v in res.items())
              + f" generate_s={generate:.0f} messages={args.messages}")
    finally:
        subprocess.run(["sh", pgsh, "stop", tmp], env=env, capture_output=True)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
