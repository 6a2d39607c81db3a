"""How long a killed invocation's database statement keeps running on the server.

    .venv/bin/python -m scriptvisor.bench.db_session_stop [--n 10] [--driver postgres|mysql]

Makes a tenant the documented way (``scriptvisor init --template DRIVER`` and
``scriptvisor db setup``, on the local servers), then N times runs a hostile
worker (``debug_exec``) that switches the statement timeout off and sleeps
on the server for 60 s; the invocation's 1 s deadline kills the worker and
``engine.dbsessions`` ends the session.  Prints, per driver, the time from
the caller getting ``timeout`` to the helper reporting the session ended
(PostgreSQL: ``pg_terminate_backend`` waited for the backend to exit;
MariaDB: ``KILL CONNECTION`` returned), p50 and max.  Needs root and the
local PostgreSQL/MariaDB with the admin access the tests use.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOSTILE = {
    "postgres": ("conn._raw.pgconn.exec_(b'SET statement_timeout = 0')\n"
                 "conn._raw.pgconn.exec_(b'SELECT pg_sleep(60)')\n"),
    "mysql": "conn._raw.query('SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(60)')\n",
}
PREFIX = """
import time
from scriptvisor.sandbox import context
from scriptvisor.sandbox.facades.db import {driver}
context.set_current(context.Invocation(worker=context.worker(), deadline=time.monotonic() + 30,
                                       log=lambda line: None))
conn = {driver}.connect("legacy")
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--driver", choices=("postgres", "mysql"), action="append")
    opts = ap.parse_args(argv)
    from scriptvisor.engine import Engine, EngineConfig
    from scriptvisor.engine.dbsetup import DEFAULT_ADMIN
    from scriptvisor.engine.tenants import load_tenant

    work = Path(tempfile.mkdtemp(prefix="sv-dbstop-"))
    sv = [sys.executable, "-m", "scriptvisor.engine.cli"]
    for driver in opts.driver or ["postgres", "mysql"]:
        root = work / f"dbstop_{driver}"
        subprocess.run([*sv, "init", str(root), "--template", driver, "--secrets-dir", str(work / "secrets")],
                       check=True, capture_output=True)
        subprocess.run([*sv, "db", "setup", "--tenant-dir", str(root)], check=True, capture_output=True)
        tenant = load_tenant(root)
        samples = []
        try:
            with Engine(EngineConfig(debug_exec=True, spares_per_tenant=0, state_dir=str(work / "sv"))) as eng:
                eng.configure_tenant(tenant.name, **tenant.engine_settings())
                stops: list[float] = []
                eng.add_listener(lambda ev: stops.append(time.monotonic())
                                 if ev["event"] == "db_session_stopped" and ev["stopped"] else None)
                for _ in range(opts.n):
                    before = len(stops)
                    res = eng.debug_exec(tenant.name, PREFIX.format(driver=driver) + HOSTILE[driver], timeout=1.0)
                    answered = time.monotonic()
                    assert res.error["code"] == "timeout", res.error
                    if not eng.run_until(lambda: len(stops) > before, 10):
                        print(f"{driver}: session NOT stopped within 10 s")
                        return 1
                    samples.append((stops[before] - answered) * 1000.0)
        finally:
            _drop(driver, f"{root.name}_legacy", DEFAULT_ADMIN[driver])
        print(f"{driver}: timeout answered -> session ended on the server, n={len(samples)}: "
              f"p50 {statistics.median(samples):.1f} ms, max {max(samples):.1f} ms")
    return 0


def _drop(driver: str, name: str, admin: str) -> None:
    if driver == "postgres":
        import psycopg

        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            db.execute(f'DROP ROLE IF EXISTS "{name}"')
    else:
        import pymysql

        db = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
        with db.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        db.close()


if __name__ == "__main__":
    sys.exit(main())
