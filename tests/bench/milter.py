#!/usr/bin/env python3
"""milter.py - SMTP with rspamd as the milter: pgmail-smtpd against Postfix's smtpd, both
using the same rspamd, in one run; and what the milter connection costs pgmail per session.

    python3 tests/bench/milter.py            # make bench (after bench.py, outbound.py)
    python3 tests/bench/milter.py --quick    # make bench-quick

What runs, all on 127.0.0.1 and free ports, under one temporary directory, stopped by PID:
  * unbound (tests/lib/dnsserver.py, no data: rspamd's lookups get NXDOMAIN or REFUSED at
    once, nothing leaves the machine) and one rspamd 3.4 (tests/lib/milters.Rspamd: the
    proxy worker in milter mode scanning itself, one process, Redis-free, network modules
    off) that both MTAs use;
  * PostgreSQL (tests/lib/pg.sh) and pgmail-smtpd behind systemd-socket-activate twice:
    with PGMAIL_MILTERS = that rspamd ("pgmail+rspamd") and without ("pgmail");
  * Postfix 3.7 (bench.py's private instance: virtual Maildir delivery, the clock stops
    when the last message is in its Maildir) with smtpd_milters = that rspamd.
Load: Postfix's smtp-source, 4 KiB messages, 1 and 10 messages per session, 1 and 4
sessions in parallel (rspamd's one proxy process is shared; 16 would measure rspamd).
Runs alternate pgmail+rspamd, Postfix+rspamd, pgmail, ... after one warm-up each;
figures are medians.

Figures (RESULT lines as bench.py prints them; ratio > 1: pgmail better):
  milter_smtp_{1,10}msg_c{1,4}        msgs/s, pgmail+rspamd against Postfix+rspamd
  milter_cost_smtp_{1,10}msg_c{1,4}   msgs/s, pgmail+rspamd against pgmail alone (ratio < 1:
                                      the share the milter costs; rspamd's scan included)
and a note per figure with the milter's extra milliseconds per session at c1:
1000 * per / rate(with) - 1000 * per / rate(without).
Options of bench.py (--quick, --runs, --seconds, --keep, --json, --bin, --limit).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "lib")]
import bench as B  # noqa: E402  (the shared machinery of tests/bench/)
from dnsserver import DnsServer  # noqa: E402
from milters import Rspamd  # noqa: E402

PACKAGES = ["postfix", "postgresql", "rspamd", "unbound", "systemd"]
CONC = (1, 4)

log = B.log


class _Stoppable:
    """A tests/lib fixture in bench.started (stop() at cleanup)."""

    def __init__(self, fixture):
        self.fixture = fixture

    def stop(self):
        self.fixture.stop()

    def pids(self):
        return B.tree([self.fixture.proc.pid]) if self.fixture.proc else []


class MilterBench(B.Bench):
    def setup(self):
        self.prepare(("smtp/pgmail-smtpd", "admin/pgmailctl"), PACKAGES,
                     ("smtp-source", "postfix", "rspamd", "unbound", "systemd-socket-activate"),
                     "pgmail-milter-")
        log("starting unbound and rspamd (milter mode)")
        dns = DnsServer(self.tmp, {}).start()
        self.started.append(_Stoppable(dns))
        rspamd = Rspamd(self.tmp, dns).start()
        self.rspamd = _Stoppable(rspamd)
        self.started.append(self.rspamd)
        self.milter = rspamd.address
        log("starting PostgreSQL and pgmail-smtpd with and without the milter")
        self.pg = B.Postgres(self)
        self.new_db("pgmail")
        self.smtp_users = [f"s{i:02d}" for i in range(max(CONC))]
        sha = {"PGMAIL_PASSWORD_SCHEME": "sha512crypt"}
        for u in self.smtp_users:
            self.ctl("user", "add", f"{u}@{B.DOMAIN}", stdin=B.PASSWORD + "\n", env_extra=sha)
        self.pg.psql(f"""INSERT INTO accounts (domain_id, address, password_hash)
SELECT d.id, i || '{B.NUMBERED}@{B.DOMAIN}', 'x' FROM domains d,
generate_series(1, {B.NUMBERED_MAX}) i WHERE d.name = '{B.DOMAIN}';""")
        self.pg.psql("VACUUM ANALYZE")
        sm = os.path.join(self.bin, "smtp", "pgmail-smtpd")
        self.with_milter = B.Spawner(self, "smtpd-milter", [sm],
                                     dict(self.pgmail_env(), PGMAIL_MILTERS=self.milter))
        self.without = B.Spawner(self, "smtpd-plain", [sm], self.pgmail_env())
        log("starting Postfix with smtpd_milters = rspamd")
        self.postfix = B.Postfix(self, self.smtp_users)
        B.run(["postconf", "-c", self.postfix.dir, "-e", f"smtpd_milters = {self.milter}",
               "milter_default_action = tempfail"])
        B.run(["postfix", "-c", self.postfix.dir, "reload"], timeout=60)

    def figures(self):
        pf = self.postfix
        for per in (1, 10):
            for conc in CONC:
                fig = f"smtp_{per}msg_c{conc}"
                db = lambda: self.db_pids()  # noqa: E731
                systems = [
                    self.smtp_system("pgmail-milter", "pgmail+rspamd", self.with_milter.port,
                                     conc, per, lambda: self.with_milter.pids()
                                     + self.rspamd.pids(), db),
                    self.smtp_system("postfix", "Postfix+rspamd", pf.port, conc, per,
                                     lambda: pf.pids() + self.rspamd.pids(), lambda: [],
                                     postfix=pf),
                    self.smtp_system("pgmail", "pgmail (no milter)", self.without.port, conc,
                                     per, self.without.pids, db),
                ]
                s = self.compete(f"milter_{fig} (msgs/s)", systems)
                self.result(f"milter_{fig}", "msgs/s", "rate", s["pgmail-milter"], s["postfix"],
                            "Postfix+rspamd")
                self.result(f"milter_cost_{fig}", "msgs/s", "rate", s["pgmail-milter"],
                            s["pgmail"], "pgmail without milter")
                if conc == 1:
                    w, wo = s["pgmail-milter"].median(), s["pgmail"].median()
                    if w > 0 and wo > 0:
                        extra = 1000.0 * per / w - 1000.0 * per / wo
                        self.notes.append(f"milter_{fig}: the milter adds {extra:.2f} ms per "
                                          f"session of {per} message(s) (rspamd's scan "
                                          f"included; {1000.0 * per / wo:.2f} ms without)")

    main = B.Bench.setup_and_figures


def main():
    args = B.arg_parser("pgmail-smtpd with rspamd as the milter against Postfix with it",
                        600, 200).parse_args()
    B.run_bench(MilterBench(args), args)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("milter.py runs Postfix and rspamd privately: run it as root")
    main()
