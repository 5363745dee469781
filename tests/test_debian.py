"""test_debian.py - the Debian package's files that a test can check without building it
(`make test-system` builds, lints, installs, upgrades and purges the package itself).

debian/pgmail.conf, installed as the conffile /etc/pgmail/pgmail.conf, shows every key of
shared/config.c, commented out, with the default the code really uses (read from
config.c's defaults() and shared/mail_limits.h), and nothing else; uncommented, the whole
file is accepted by the programs' own parser. A key added to config.c without its line
here, or a default changed on one side only, fails here. And `make deb` installs every
build dependency debian/control names.
"""

import os
import re
import subprocess


def read(ctx, *path):
    with open(os.path.join(ctx.root, *path), encoding="utf-8") as f:
        return f.read()


def config_keys(ctx):
    """[(name, type)] of the key table in shared/config.c, in its order."""
    return re.findall(r'^\s*\{"([a-z0-9_]+)",\s*(K_[A-Z_]+)', read(ctx, "shared", "config.c"), re.M)


def code_defaults(ctx):
    """{key: default as pgmail.conf writes it}, from defaults() in shared/config.c: the
    fields it sets (a LIM_ constant of mail_limits.h, a number, a string, an enum), and for
    the rest what memset() leaves: 0, no, or empty."""
    limits = {}
    for name, expr in re.findall(r"^#define (LIM_\w+)\s+(.+?)\s*(?:/\*.*)?$",
                                 read(ctx, "shared", "mail_limits.h"), re.M):
        limits[name] = expr
    text = read(ctx, "shared", "config.c")
    body = text[text.index("static void defaults("):]
    body = body[:body.index("\n}\n")]
    kinds = dict(config_keys(ctx))
    out = {k: {"K_LONG": "0", "K_BOOL": "no"}.get(t, "") for k, t in kinds.items()}
    for field, value in re.findall(r"cfg->(\w+) = ([^;]+);", body):
        value = value.strip()
        if value.startswith("LIM_"):
            value = limits[value]
        if re.fullmatch(r"[0-9L()*+ ]+", value):
            value = str(eval(value.replace("L", "")))  # noqa: S307 - digits and * only
            if kinds.get(field) == "K_BOOL":
                value = {"1": "yes", "0": "no"}[value]
        elif re.fullmatch(r"(BARE|RELAY_TLS|MILTER)_[A-Z]+", value):
            value = value.rsplit("_", 1)[1].lower()
        else:
            raise AssertionError(f"defaults(): cannot read cfg->{field} = {value}")
        out[field] = value
    for field, value in re.findall(r'strcpy\(cfg->(\w+), "([^"]*)"\)', body):
        if field != "hostname":  # "localhost" only when gethostname() fails
            out[field] = value
    return out


def conffile_settings(ctx):
    """{key: value} of the lines "#key = value" of debian/pgmail.conf, and its other
    non-comment lines."""
    settings, stray = {}, []
    for line in read(ctx, "debian", "pgmail.conf").splitlines():
        m = re.fullmatch(r"#([a-z0-9_]+) =(?: (.*))?", line)
        if m:
            assert m.group(1) not in settings, f"{m.group(1)} twice in debian/pgmail.conf"
            settings[m.group(1)] = m.group(2) or ""
        elif line.strip() and not line.startswith("# ") and line != "#":
            stray.append(line)
    return settings, stray


def test_conffile_lists_every_key_with_its_default(ctx):
    if ctx.san:  # files only; once is enough
        return
    keys = [k for k, _ in config_keys(ctx)]
    assert len(keys) >= 30 and "relayhost_password_file" in keys, keys
    settings, stray = conffile_settings(ctx)
    assert not stray, f"debian/pgmail.conf: lines that are neither comments nor #key = value: {stray}"
    missing = [k for k in keys if k not in settings]
    assert not missing, f"debian/pgmail.conf lacks the keys {missing} of shared/config.c"
    unknown = sorted(set(settings) - set(keys))
    assert not unknown, f"debian/pgmail.conf names keys shared/config.c does not know: {unknown}"
    defaults = code_defaults(ctx)
    assert defaults["message_size_limit"] == "26214400" and defaults["relay_tls"] == "may", defaults
    wrong = {k: (settings[k], defaults[k]) for k in keys if settings[k] != defaults[k]}
    assert not wrong, f"debian/pgmail.conf: (shown, default in the code): {wrong}"


def test_conffile_uncommented_is_accepted(ctx):
    # Every line uncommented (but hostname, whose default is the system's name and which
    # cannot be empty) parses: pgmailctl reads the file before it connects.
    if ctx.san:
        return
    settings, _ = conffile_settings(ctx)
    path = os.path.join(ctx.tmp, "pgmail.conf")
    with open(path, "w") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in settings.items() if k != "hostname"))
    env = ctx.env({"PGMAIL_CONFIG": path, "PGMAIL_HOSTNAME": "mx.example.test",
                   "PGMAIL_PASSWORD_SCHEME": None, "PGMAIL_AUTH_FAILURE_DELAY_MS": None})
    p = subprocess.run([ctx.ctl_bin, "domain", "list"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and "example.test" in p.stdout, p.stdout + p.stderr


def test_make_deb_installs_the_build_depends(ctx):
    if ctx.san:
        return
    control = read(ctx, "debian", "control")
    field = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", control, re.M).group(1)
    wanted = {re.split(r"[\s(]", d.strip())[0] for d in field.split(",") if d.strip()}
    wanted.discard("debhelper-compat")
    wanted |= {"debhelper", "dpkg-dev", "build-essential", "lintian"}
    makefile = read(ctx, "Makefile")
    deps = re.search(r"^DEB_DEPS :=((?:.*\\\n)*.*)", makefile, re.M).group(1)
    listed = set(deps.replace("\\\n", " ").split())
    assert wanted <= listed, f"Makefile DEB_DEPS lacks {sorted(wanted - listed)}"
