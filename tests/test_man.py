"""test_man.py - the manual pages in admin/man (installed by `make install`).

Every page renders with man(1) without a groff warning and has the sections a reader looks
for. pgmail-relay.8 is also held to the code: it names every configuration key the relay
reads (shared/config.c, from relay_database on) and every journal event relay/*.c logs, so
that a key or an event added later without its documentation fails here.
"""

import glob
import os
import re
import subprocess


def render(path):
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    return subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", path], capture_output=True,
                          text=True, timeout=60, env=env)


def test_pages_render_without_warnings(ctx):
    pages = sorted(glob.glob(os.path.join(ctx.root, "admin", "man", "*.[58]")))
    assert any(p.endswith("pgmail-relay.8") for p in pages), pages
    assert any(p.endswith("pgmail-metrics.8") for p in pages), pages
    for path in pages:
        p = render(path)
        name = os.path.basename(path)
        assert p.returncode == 0 and not p.stderr.strip(), f"{name}: {p.stderr.strip()}"
        for section in ("NAME", "DESCRIPTION", "SEE ALSO"):
            assert re.search(rf"^{section}$", p.stdout, re.M), f"{name}: no {section} section"


def test_relay_page_names_its_keys_and_events(ctx):
    # The source, not the rendering: man may break a line after any hyphen.
    with open(os.path.join(ctx.root, "admin", "man", "pgmail-relay.8"), encoding="utf-8") as f:
        text = f.read().replace("\\-", "-")
    with open(os.path.join(ctx.root, "shared", "config.c"), encoding="utf-8") as f:
        keys = re.findall(r'^\s*\{"([a-z_]+)", K_', f.read(), re.M)
    # The relay's keys run from relay_database up to pgmail-metrics' (metrics_timeout on).
    keys = keys[keys.index("relay_database"):keys.index("metrics_timeout")]
    assert "relayhost_password_file" in keys, keys
    events = set()
    for path in glob.glob(os.path.join(ctx.root, "relay", "*.c")):
        with open(path, encoding="utf-8") as f:
            events |= set(re.findall(r'log_event\(\s*[A-Z_]+,\s*"([a-z-]+)"', f.read()))
    # The per-recipient event is chosen at run time (outcome.c).
    events |= {"relay-delivered", "relay-deferred", "relay-bounced"}
    missing = [k for k in keys if k not in text] + sorted(e for e in events if e not in text)
    assert not missing, f"pgmail-relay.8 does not name: {missing}"
    for section in ("SIGNALS", "EXIT STATUS", "FILES", "LOGGING"):
        assert re.search(rf"^\.SH {section}$", text, re.M), f"pgmail-relay.8: no {section}"
    for state in ("queued", "deferred", "held", "delivered", "bounced"):
        assert state in text, f"pgmail-relay.8: queue state {state} missing"


def test_conf_page_names_every_key(ctx):
    # pgmail.conf(5) says it lists every key of shared/config.c.
    with open(os.path.join(ctx.root, "shared", "config.c"), encoding="utf-8") as f:
        keys = re.findall(r'^\s*\{"([a-z_]+)", K_', f.read(), re.M)
    assert len(keys) > 20, keys
    with open(os.path.join(ctx.root, "admin", "man", "pgmail.conf.5"), encoding="utf-8") as f:
        page = f.read()
    missing = [k for k in keys if not re.search(r"^\.B[RI]? .*\b" + k + r"\b", page, re.M)]
    assert not missing, f"pgmail.conf(5) lacks {missing}"


def test_metrics_page_names_its_keys_metrics_and_answers(ctx):
    """pgmail-metrics.8 names its configuration keys, every metric metrics/expose.c exports
    and every HTTP status metrics/main.c can answer."""
    with open(os.path.join(ctx.root, "admin", "man", "pgmail-metrics.8"), encoding="utf-8") as f:
        text = f.read().replace("\\-", "-").replace("\\(en", "-")
    with open(os.path.join(ctx.root, "metrics", "expose.c"), encoding="utf-8") as f:
        names = re.findall(r'^\s*\{"[a-z_]+", "([a-z_]+)", "(?:counter|gauge)"', f.read(), re.M)
    assert len(names) >= 10, names
    names = ["pgmail_" + n for n in names] + ["pgmail_database_up"]
    with open(os.path.join(ctx.root, "metrics", "main.c"), encoding="utf-8") as f:
        statuses = re.findall(r"case (\d{3}):", f.read())
    assert "404" in statuses, statuses
    want = names + ["metrics_timeout", "metrics_per_user", "9087"] + \
        [s for s in statuses if s not in ("200", "500")] + ["501"]
    missing = [w for w in want if w not in text]
    assert not missing, f"pgmail-metrics.8 does not name: {missing}"
