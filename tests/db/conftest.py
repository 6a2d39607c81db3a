"""Fixtures for the database tests: an in-process invocation context and real servers.

PostgreSQL and MariaDB tests each get a fresh database named
``scriptvisor_test_<random>`` that is dropped at the end of the session; they
skip (with the reason) only when the server cannot be reached.
"""

from __future__ import annotations

import secrets
import time

import pytest

from scriptvisor.sandbox import context
from tests.services import unavailable

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


#: Password of the test roles (each test database gets its own least-privileged role).
ROLE_PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def pg_database():
    """Admin connect kwargs (host, port, user, dbname) of a fresh PostgreSQL database, dropped
    afterwards.  Its least-privileged role (what scripts connect as) is ``pg_legacy``."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **PG)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"scriptvisor_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{ROLE_PASSWORD}'")
    admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    with psycopg.connect(dbname=name, autocommit=True, connect_timeout=3, **PG) as db:
        # tables the tests create as the admin are the role's to use (no superuser, no file roles)
        db.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {name}")
        db.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {name}")
    try:
        yield {**PG, "dbname": name}
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {name}")
        admin.close()


@pytest.fixture(scope="session")
def pg_legacy(pg_database):
    """Connect kwargs of ``pg_database``'s own least-privileged role (the database's owner)."""
    return {**pg_database, "user": pg_database["dbname"], "password": ROLE_PASSWORD}


@pytest.fixture(scope="session")
def my_database():
    """Admin connect kwargs (host, port, user, password, database) of a fresh MariaDB database,
    dropped afterwards.  Its account for scripts (no global privilege) is ``my_legacy``."""
    pymysql = pytest.importorskip("pymysql")
    try:
        admin = pymysql.connect(autocommit=True, connect_timeout=3, **MY)
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB not reachable at 127.0.0.1:3306: {exc}")
    name = f"scriptvisor_test_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{ROLE_PASSWORD}'")
        cur.execute(f"GRANT ALL ON {name}.* TO '{name}'@'%'")
    try:
        yield {**MY, "database": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        admin.close()


@pytest.fixture(scope="session")
def my_legacy(my_database):
    """Connect kwargs of ``my_database``'s own account (all privileges on that database only)."""
    return {**my_database, "user": my_database["database"], "password": ROLE_PASSWORD}


def declaration(driver: str, params: dict, name: str = "legacy"):
    """The ``[[databases]]`` declaration (engine.databases.DatabaseDecl) of a test database."""
    from scriptvisor.engine.databases import DatabaseDecl

    return DatabaseDecl(name=name, driver=driver, host=params["host"], port=params["port"],
                        database=params.get("dbname") or params.get("database"), user=params["user"],
                        password_env="UNUSED", password=params["password"])


def declare(ctx, *decls) -> None:
    """Give an in-process worker context these declared databases (what a worker's policy carries)."""
    ctx.databases = {d.name: d.to_policy() for d in decls}


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """One real engine (zygote, confined workers) for all connection tests."""
    from scriptvisor.engine import Engine, EngineConfig, TenantLimits

    limits = TenantLimits(timeout=10.0, allowed_ports=(5432, 3306))
    eng = Engine(EngineConfig(limits=limits, spares_per_tenant=0,
                              state_dir=str(tmp_path_factory.mktemp("state")))).start()
    yield eng
    eng.close()


_tenant_numbers = iter(range(1, 1_000_000))


@pytest.fixture
def make_tenant(engine, tmp_path, request):
    """``make_tenant(backend, import_users, scripts=None) -> Connection`` on a fresh legacy database."""
    from scriptvisor.engine.config import TenantLimits

    from .legacy import make_connection

    made = []

    def make(backend: str, import_users: bool, scripts: dict | None = None):
        params = role = None
        if backend == "postgres":
            params, role = request.getfixturevalue("pg_database"), request.getfixturevalue("pg_legacy")
        elif backend == "mysql":
            params, role = request.getfixturevalue("my_database"), request.getfixturevalue("my_legacy")
        name = f"db{next(_tenant_numbers)}"
        root = tmp_path / name
        conn = make_connection(name, root, backend, params, import_users, scripts)
        decls = [declaration(backend, role)] if role is not None else []
        engine.configure_tenant(name, limits=TenantLimits(timeout=10.0, allowed_ports=(5432, 3306)),
                                data_dir=str(root / "data"), databases=decls)
        conn.legacy_params = params  # for direct checks on the legacy database
        conn.data_dir = root / "data"
        conn.backend = backend
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.store.close()
