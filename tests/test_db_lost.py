"""db_lost: shared/db.c against the real PostgreSQL: a connection lost inside a transaction
is DB_LOST and is not replaced until the caller gives the transaction up (db_rollback);
between transactions it is replaced; a COMMIT that the server answers with ROLLBACK (the
transaction had failed) is a failure. A small driver program is compiled here from
shared/db.c: each line of its input is one statement (or !rollback / !close), and it
prints the status and whether a transaction is believed open.
"""

import os
import subprocess

DRIVER = r"""
#include "db.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    static const char *const names[] = {"OK", "NOTFOUND", "TEMP", "PERM", "LOST"};
    struct db db;
    db_init(&db, argc > 1 ? argv[1] : "", "pgmail-db-driver");
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "!rollback") == 0) {
            db_rollback(&db, "ROLLBACK");
            printf("- in_tx=%d\n", db_in_transaction(&db));
        } else if (strcmp(line, "!close") == 0) {
            db_close(&db);
            printf("- in_tx=%d\n", db_in_transaction(&db));
        } else {
            enum db_status st = db_exec(&db, line, 0, NULL, NULL, NULL, NULL);
            printf("%s in_tx=%d sqlstate=%s\n", names[st], db_in_transaction(&db),
                   st == DB_OK || st == DB_NOTFOUND ? "-" : db.sqlstate);
        }
        fflush(stdout);
    }
    db_close(&db);
    return 0;
}
"""


def driver(ctx):
    src = os.path.join(ctx.tmp, "db_driver.c")
    exe = os.path.join(ctx.tmp, "db_driver")
    with open(src, "w") as f:
        f.write(DRIVER)
    shared = os.path.join(ctx.root, "shared")
    subprocess.run(["cc", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Werror", f"-I{shared}",
                    "-I/usr/include/postgresql", "-o", exe, src, os.path.join(shared, "db.c"),
                    "-lpq"], check=True, capture_output=True, timeout=120)
    return exe


def run(ctx, statements):
    """The driver's answer to each statement, as 'STATUS in_tx=N [sqlstate=S]'."""
    r = subprocess.run([driver(ctx), f"host={ctx.pgdir} user=postgres dbname=pgmail_test"],
                       input="\n".join(statements) + "\n", capture_output=True, text=True,
                       timeout=60, env=ctx.env())
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_lost_inside_a_transaction_is_not_replaced_until_rolled_back(ctx):
    got = run(ctx, [
        "BEGIN",
        "SELECT pg_terminate_backend(pg_backend_pid())",  # the backend ends itself
        "SELECT 1",  # would have run on a fresh connection, outside the transaction
        "SELECT 1",
        "!rollback",
        "SELECT 1",  # between transactions: a new connection
    ])
    assert got[0] == "OK in_tx=1 sqlstate=-", got
    assert got[1].startswith("LOST in_tx=1"), got
    assert got[2] == "LOST in_tx=1 sqlstate=08006", got
    assert got[3] == "LOST in_tx=1 sqlstate=08006", got
    assert got[4] == "- in_tx=0", got
    assert got[5] == "OK in_tx=0 sqlstate=-", got


def test_lost_between_transactions_is_replaced(ctx):
    got = run(ctx, ["SELECT pg_terminate_backend(pg_backend_pid())", "SELECT 1", "!close"])
    assert got[0].startswith("LOST in_tx=0"), got
    assert got[1] == "OK in_tx=0 sqlstate=-", got


def test_commit_of_a_failed_transaction_is_a_failure(ctx):
    got = run(ctx, ["BEGIN", "SELECT 1/0", "COMMIT", "BEGIN", "COMMIT"])
    assert got[0] == "OK in_tx=1 sqlstate=-", got
    assert got[1] == "PERM in_tx=1 sqlstate=22012", got  # the transaction is aborted
    assert got[2] == "TEMP in_tx=0 sqlstate=40000", got  # COMMIT answered ROLLBACK
    assert got[3:5] == ["OK in_tx=1 sqlstate=-", "OK in_tx=0 sqlstate=-"], got
