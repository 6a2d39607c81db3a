"""Issue 14: the user store heals and stays within its tenant.

- a PostgreSQL store reconnects by itself after its server connections die;
- every store call is bounded by the invocation's remaining time;
- one tenant's stalled store never delays another tenant's login.

The shared PostgreSQL server on 127.0.0.1:5432 is used by other test runs at
the same time, so it is never restarted here: a "restart" is simulated by
terminating every backend of a database of the test's own with
``pg_terminate_backend`` (what clients of a restarted server see: every
pooled connection is dead).  Each test uses its own database (conftest).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from scriptvisor.engine.connections import run_operation_on, run_operation_on_async
from scriptvisor.engine.hashing import FAST_HASHER
from scriptvisor.engine.userstore import StoredUser, UserStore, UserStoreTimeout, call_with_deadline

from .legacy import make_connection

psycopg = pytest.importorskip("psycopg")


def _dsn(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _terminate_backends(params: dict) -> int:
    with psycopg.connect(autocommit=True, **{**params, "dbname": "postgres"}) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = %s AND pid <> pg_backend_pid()", (params["dbname"],)).fetchall()
    return len(rows)


@pytest.fixture
def own_db(pg_database):
    """Connect kwargs of a fresh database of this test's own (killed or stalled without touching others')."""
    import secrets

    name = f"scriptvisor_own_{secrets.token_hex(4)}"
    admin = psycopg.connect(autocommit=True, **{**pg_database, "dbname": "postgres"})
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield {**pg_database, "dbname": name}
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.db
def test_postgres_store_reconnects_after_its_connections_are_killed(engine, make_tenant, own_db):
    """The first login after the store's server connections died succeeds (no node restart).

    Simulated restart: ``pg_terminate_backend`` on every backend of this
    test's database (the shared server itself is never restarted).
    """
    conn = make_tenant("sqlite", True)
    conn.store.close()
    conn.store = UserStore(conn.tenant, dsn=_dsn(own_db), hasher=FAST_HASHER)
    try:
        first = run_operation_on(engine, conn, "login", ["alice@example.com", "wonderland"])
        assert first["ok"] and first["migrated"] is True
        assert _terminate_backends(own_db) >= 1
        again = run_operation_on(engine, conn, "login", ["alice@example.com", "wonderland"])
        assert again["ok"], again["error"]
        assert again["from_platform_store"] is True and again["result"]["user_id"] == "1"
        assert conn.store.health()["ok"] is True
    finally:
        conn.store.close()


@pytest.mark.db
def test_postgres_statement_is_bounded_by_the_remaining_time(pg_database):
    """A store call blocked on a row lock ends with UserStoreTimeout when the invocation's time runs out."""
    store = UserStore("stall", dsn=_dsn(pg_database), hasher=FAST_HASHER)
    blocker = psycopg.connect(**pg_database)
    try:
        blocker.execute("INSERT INTO sv_users (tenant, user_id, email, email_key, profile, source, created_at,"
                        " updated_at) VALUES ('stall', '1', 'a@example.com', 'a@example.com', '{}', 't', 0, 0)")
        user = StoredUser("1", "a@example.com", None, False, {})
        with pytest.raises(UserStoreTimeout):
            call_with_deadline(time.monotonic() + 0.5, store.insert, user)
        with pytest.raises(UserStoreTimeout):  # no time left at all: refused before any statement
            call_with_deadline(time.monotonic() - 1, store.find, "a@example.com")
    finally:
        blocker.rollback()
        blocker.close()
        store.close()
    # and the pool is still usable afterwards
    store = UserStore("stall", dsn=_dsn(pg_database), hasher=FAST_HASHER)
    try:
        assert store.insert(StoredUser("1", "a@example.com", None, False, {})).user_id == "1"
    finally:
        store.close()


def test_sqlite_statement_is_bounded_by_the_remaining_time(tmp_path):
    """SQLite: a writer holding the file's lock makes a store write end with UserStoreTimeout, not a hang."""
    path = tmp_path / "platform.db"
    store = UserStore("stall", path=str(path), hasher=FAST_HASHER)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(UserStoreTimeout):
            call_with_deadline(time.monotonic() + 0.3, store.insert, StoredUser("1", "a@example.com", None, False, {}))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.insert(StoredUser("1", "a@example.com", None, False, {})).user_id == "1"
    store.close()


@pytest.mark.db
def test_another_tenants_login_is_unaffected_by_a_stalled_store(tmp_path, pg_database, own_db):
    """Ten migration logins of tenant A wait on a lock in A's store; tenant B's login completes meanwhile.

    A's store (its own database) is stalled by a transaction holding an
    exclusive lock on its users table, so each of A's logins blocks in its
    very first store call.  asyncio runs tasks in creation order, so all ten
    have handed that call to the store threads before B's login starts.
    Before: all tenants' store work shared the event loop's default executor
    (a handful of threads), A's blocked calls held all of them and B waited
    for A's lock.  Now each tenant has its own store threads and pool.
    """
    from scriptvisor.engine import AsyncEngine, EngineConfig, TenantLimits

    a = make_connection("stalla", tmp_path / "a", "sqlite", None, True)
    b = make_connection("stallb", tmp_path / "b", "sqlite", None, False)
    for conn, params in ((a, own_db), (b, pg_database)):
        conn.store.close()
        conn.store = UserStore(conn.tenant, dsn=_dsn(params), hasher=FAST_HASHER)
    blocker = psycopg.connect(**own_db)
    blocker.execute("LOCK TABLE sv_users IN ACCESS EXCLUSIVE MODE")

    async def main():
        cfg = EngineConfig(limits=TenantLimits(timeout=20.0), state_dir=str(tmp_path / "state"))
        async with AsyncEngine(cfg) as eng:
            for conn in (a, b):
                eng.configure_tenant(conn.tenant, data_dir=str(tmp_path / conn.tenant[-1] / "data"))
            stalled = [asyncio.create_task(run_operation_on_async(eng, a, "login", ["alice@example.com", "wonderland"]))
                       for _ in range(10)]
            other = await asyncio.create_task(run_operation_on_async(eng, b, "login", ["bob@example.com", "builder"]))
            pending_when_b_done = sum(not t.done() for t in stalled)
            blocker.rollback()  # the stall ends
            results = await asyncio.gather(*stalled)
            return other, pending_when_b_done, results

    try:
        other, pending, results = asyncio.run(main())
    finally:
        blocker.close()
        for conn in (a, b):
            conn.store.close()
    assert other["ok"] and other["result"]["user_id"] == "2", other["error"]
    assert pending == 10  # B finished while every one of A's logins was still waiting on the lock
    assert all(r["ok"] and r["result"]["user_id"] == "1" for r in results), [r["error"] for r in results]


@pytest.fixture
def private_cluster():
    """A PostgreSQL cluster of this test's own (initdb in a temp dir, a free port), stopped afterwards.

    Restarting the shared server would break other test runs, so the real
    restart test restarts this one.  Runs the server as the ``postgres`` user
    when the tests run as root (PostgreSQL refuses to run as root).
    """
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    from tests.services import unavailable

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        unavailable("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    bindir = os.path.dirname(bins[-1])
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="sv-pgcluster-")
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(root, "data")

    def pg_ctl(*args: str) -> None:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-s", "-w", "-t", "60", *args], check=True,
                       stdout=subprocess.DEVNULL, timeout=90)

    subprocess.run(as_user + [f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl("-o", opts, "-l", os.path.join(root, "log"), "start")
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"}, \
            lambda: pg_ctl("-o", opts, "-m", "fast", "restart")
    finally:
        try:
            pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.db
@pytest.mark.slow
def test_postgres_store_reconnects_after_a_real_server_restart(engine, make_tenant, private_cluster):
    """A real restart (pg_ctl restart -m fast) of a private cluster: the next login succeeds, no node restart."""
    params, restart = private_cluster
    conn = make_tenant("sqlite", True)
    conn.store.close()
    conn.store = UserStore(conn.tenant, dsn=_dsn(params), hasher=FAST_HASHER)
    try:
        assert run_operation_on(engine, conn, "login", ["alice@example.com", "wonderland"])["migrated"] is True
        restart()
        again = run_operation_on(engine, conn, "login", ["alice@example.com", "wonderland"])
        assert again["ok"], again["error"]
        assert again["from_platform_store"] is True and again["result"]["user_id"] == "1"
    finally:
        conn.store.close()
