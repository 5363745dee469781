"""test_relay_pgbouncer.py - pgmail-relay's two database settings, with Debian's PgBouncer
in transaction pooling mode (pop3lib.PgBouncer) as the handlers would use it.

`database` (PGMAIL_DATABASE) points at PgBouncer and `relay_database` straight at the test
PostgreSQL. The scheduler LISTENs on relay_database (a pooler in transaction mode would lose
the LISTEN at the first transaction end), and the agents run on database, so that behind
PgBouncer they share its pool instead of taking relay_max_connections backends of their own
(the connection budget, tests/units/verify.sh). Asserted: an idle relay is still woken by
the NOTIFY, a message (longer than one body slice) arrives intact, the agent's connection is
one of PgBouncer's clients while it waits for the final dot's reply, and PgBouncer gets its
server connection back afterwards (no session state left on it).
"""

import subprocess
import time

import pop3lib
from test_relay_queue import World, body_of, queue_message, states, until


def bouncer_clients(b):
    """The application names of PgBouncer's clients of pgmail_test (SHOW CLIENTS)."""
    r = subprocess.run(["psql", "-XAq", "-F", "|", "-h", "127.0.0.1", "-p", str(b.port),
                        "-U", "postgres", "-d", "pgbouncer", "-c", "SHOW CLIENTS"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    rows = [ln.split("|") for ln in r.stdout.decode().splitlines() if "|" in ln]
    head = rows[0]
    return [d.get("application_name", "") for d in (dict(zip(head, row)) for row in rows[1:])
            if d.get("database") == "pgmail_test"]


def test_agents_use_database_through_pgbouncer_scheduler_listens_directly(ctx):
    with pop3lib.PgBouncer(ctx) as b:
        try:
            w = World(ctx, ["a.test"])
            s = w.script("a.test")
            s.hold_dot()
            r = w.relay(
                PGMAIL_DATABASE=f"host=127.0.0.1 port={b.port} dbname=pgmail_test user=postgres",
                PGMAIL_RELAY_DATABASE=f"host={ctx.pgdir} dbname=pgmail_test user=postgres")
            until("the relay to go idle", lambda: "relay-ready" in r.log())
            assert "pgmail-relay" not in bouncer_clients(b), (
                "the scheduler connected through PgBouncer instead of relay_database")
            # Queued after the relay went idle: only the NOTIFY on relay_database wakes it.
            time.sleep(0.5)
            body = body_of(3, 70000)
            queue_message(ctx, "alice@example.test", ["bob@a.test"], body)
            until("the final dot", s.at_dot.is_set)
            assert "pgmail-relay" in bouncer_clients(b), (
                f"no agent among PgBouncer's clients: {bouncer_clients(b)}")
            s.release()
            until("delivery", lambda: states(ctx) == {"bob@a.test": "delivered"})
            assert [c for _, _, c in s.received] == [body], "the bytes that arrived differ"
            until("PgBouncer's server connection back",
                  lambda: not b.show_pools().get("sv_active"))
        finally:
            ctx.stop_all()  # the relay ends before PgBouncer does
