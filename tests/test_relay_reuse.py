"""test_relay_reuse.py - an agent of pgmail-relay keeps its connections between batches
(relay/agent.c): work that comes while it waits idle goes over the SMTP connection it kept,
over a new one when the server closed the idle one (never a deferral for that), and an idle
agent takes over another destination. Real relay, real PostgreSQL, aiosmtpd servers (the
machinery of test_relay_queue.py)."""

import asyncio
import time

import test_relay_queue as Q


def close_after_dot(script):
    """Make script's server drop each connection just after it answered a final dot."""
    answer = script.handle_DATA

    async def handle_DATA(server, session, envelope):
        reply = await answer(server, session, envelope)
        asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return reply

    script.handle_DATA = handle_DATA


def test_idle_connection_closed_by_server_is_replaced(ctx):
    w = Q.World(ctx, ["a.test", "b.test"])
    close_after_dot(w.script("a.test"))
    r = w.relay()
    Q.queue_message(ctx, "alice@example.test", ["bob@a.test"], Q.body_of(1))
    Q.until("the first delivery", lambda: Q.states(ctx) == {"bob@a.test": "delivered"})
    time.sleep(0.2)  # the server has closed the connection the agent keeps (if it is idle)
    Q.queue_message(ctx, "alice@example.test", ["carol@a.test"], Q.body_of(2))
    Q.until("the second delivery", lambda: Q.states(ctx).get("carol@a.test") == "delivered")
    # Another destination, while the agent of a.test may still wait idle: it moves there.
    Q.queue_message(ctx, "alice@example.test", ["dave@b.test"], Q.body_of(3))
    Q.until("the third delivery", lambda: Q.states(ctx).get("dave@b.test") == "delivered")
    rows = Q.rows(ctx)
    for rc in ("bob@a.test", "carol@a.test", "dave@b.test"):
        assert rows[rc]["attempts"] == 1 and rows[rc]["code"] == 250, rows[rc]
    assert "relay-deferred" not in r.log(), r.log()[-1500:]
    assert len(w.script("a.test").received) == 2 and len(w.script("b.test").received) == 1
