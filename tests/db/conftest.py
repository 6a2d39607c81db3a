"""Fixtures for the database tests: an in-process invocation context and real servers.

PostgreSQL and MariaDB tests each get a fresh database named
``scriptvisor_test_<random>`` that is dropped at the end of the session; they
skip (with the reason) only when the server cannot be reached.
"""

from __future__ import annotations

import secrets
import time

import pytest

from sandbox import context

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


@pytest.fixture
def invocation(tmp_path):
    """A worker context (data dir = tmp_path/data) and an invocation with a 5 s deadline.

    ``invocation(seconds)`` starts a new invocation with another deadline.
    """
    data = tmp_path / "data"
    data.mkdir()
    ctx = context.WorkerContext(tenant="t", data_dir=str(data), allowed_ports=(5432, 3306))
    context.set_worker(ctx)

    def start(seconds: float = 5.0) -> context.WorkerContext:
        context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + seconds,
                                               log=lambda line: None))
        return ctx

    start()
    yield start
    ctx.run_cleanups()
    context.set_current(None)
    context.set_worker(None)


@pytest.fixture(scope="session")
def pg_database():
    """Connect kwargs (host, port, user, dbname) of a fresh PostgreSQL database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **PG)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"scriptvisor_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield {**PG, "dbname": name}
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="session")
def my_database():
    """Connect kwargs (host, port, user, password, database) of a fresh MariaDB database, dropped afterwards."""
    pymysql = pytest.importorskip("pymysql")
    try:
        admin = pymysql.connect(autocommit=True, connect_timeout=3, **MY)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at 127.0.0.1:3306: {exc}")
    name = f"scriptvisor_test_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield {**MY, "database": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
