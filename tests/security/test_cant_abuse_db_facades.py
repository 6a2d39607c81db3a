"""Database facades: what a script cannot do with ``sqlite``, ``postgres``, ``mysql``.

In-process tests of the facade layer alone (the OS layers below are tested
elsewhere): each asserts the exact exception and that no file appeared.
"""

from __future__ import annotations

import os
import sqlite3
import time
import types

import pytest

from scriptvisor.sandbox import context
from scriptvisor.sandbox.facades import crypto, db
from scriptvisor.sandbox.facades.db import mysql, postgres, sqlite


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ctx = context.WorkerContext(tenant="t", data_dir=str(data), allowed_ports=(5432,))
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    yield data
    ctx.run_cleanups()
    context.set_current(None)
    context.set_worker(None)


def test_cant_attach_a_database_outside_the_data_dir(data_dir, tmp_path):
    conn = sqlite.connect()
    target = tmp_path / "attached.db"
    with pytest.raises(sqlite.NotAllowed, match="ATTACH"):
        conn.execute(f"ATTACH DATABASE '{target}' AS other")
    with pytest.raises(sqlite.NotAllowed):
        conn.execute("ATTACH DATABASE ? AS other", [str(target)])
    assert not target.exists()


def test_cant_write_a_file_with_vacuum_into(data_dir, tmp_path):
    conn = sqlite.connect()
    conn.execute("CREATE TABLE t (x)")
    target = tmp_path / "copy.db"
    with pytest.raises(sqlite.NotAllowed):
        conn.execute(f"VACUUM INTO '{target}'")
    assert not target.exists()


def test_cant_load_an_extension(data_dir):
    conn = sqlite.connect()
    with pytest.raises(sqlite.NotAllowed, match="load_extension"):
        conn.query("SELECT load_extension('/usr/lib/x86_64-linux-gnu/libc.so.6')")


@pytest.mark.parametrize("pragma", ["PRAGMA writable_schema = 1", "PRAGMA temp_store_directory = '/tmp'",
                                    "PRAGMA mmap_size = 1000000"])
def test_cant_run_file_changing_pragmas(data_dir, pragma):
    conn = sqlite.connect()
    with pytest.raises(sqlite.NotAllowed):
        conn.execute(pragma)


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.db", "sub/dir.db", "file:x.db?mode=rwc",
                                  "file:/etc/passwd", ".hidden.db", "", "a" * 300])
def test_cant_open_sqlite_paths_outside_the_data_dir(data_dir, tmp_path, name):
    with pytest.raises(sqlite.NotAllowed):
        sqlite.connect(name)
    assert sorted(os.listdir(data_dir)) == []
    assert not (tmp_path / "escape.db").exists()


@pytest.mark.parametrize("name", ["platform.db", "platform.db-wal", "PLATFORM.DB"])
def test_cant_open_the_platform_user_store(data_dir, name):
    with pytest.raises(sqlite.NotAllowed, match="reserved"):
        sqlite.connect(name)


def test_cant_follow_a_symlink_out_of_the_data_dir(data_dir, tmp_path):
    outside = tmp_path / "outside.db"
    sqlite3.connect(outside).close()
    os.symlink(outside, data_dir / "link.db")
    with pytest.raises(sqlite.NotAllowed, match="not a regular file"):
        sqlite.connect("link.db")


def test_cant_open_sqlite_without_a_data_dir():
    ctx = context.WorkerContext(tenant="t", data_dir=None)
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    try:
        with pytest.raises(sqlite.NotAllowed, match="no data directory"):
            sqlite.connect()
    finally:
        context.set_current(None)
        context.set_worker(None)


def test_cant_run_a_second_statement(data_dir):
    conn = sqlite.connect()
    conn.execute("CREATE TABLE t (x)")
    for sql in ["SELECT 1; DROP TABLE t", "SELECT 1 -- c\n; DELETE FROM t", "SELECT ';'; DROP TABLE t"]:
        with pytest.raises(sqlite.NotAllowed, match="one SQL statement"):
            conn.execute(sql)
    assert conn.query("SELECT count(*) AS n FROM t") == [{"n": 0}]


@pytest.mark.parametrize("facade", [postgres, mysql])
@pytest.mark.parametrize("kwargs", [{"host": "127.0.0.1", "port": 5432, "user": "postgres"},
                                    {"host": "/var/run/postgresql"}, {"dbname": "postgres"},
                                    {"user": "root", "password": ""}])
def test_cant_connect_by_host_user_or_database_instead_of_a_declared_name(data_dir, facade, kwargs):
    """Layer: facade (declared endpoints only): nothing a script passes picks host, role or database."""
    with pytest.raises(facade.NotAllowed, match=r"does not take .*declared for this tenant: none"):
        facade.connect(**kwargs)


@pytest.mark.parametrize("facade", [postgres, mysql])
def test_cant_connect_to_an_undeclared_name(data_dir, facade):
    with pytest.raises(facade.NotAllowed, match="'platform' is not declared"):
        facade.connect("platform")


def _walk_public(root, depth=4):
    """Every object reachable from ``root`` through attributes not starting with '_'."""
    seen, out, todo = set(), [], [(root, "root", 0)]
    while todo:
        obj, path, d = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        out.append((path, obj))
        if d >= depth or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            continue
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                value = getattr(obj, name)
            except Exception:
                continue
            todo.append((value, f"{path}.{name}", d + 1))
    return out



def _leaks(obj):
    if isinstance(obj, (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)):
        return True
    if isinstance(obj, (types.FunctionType,)):
        return True  # a plain function exposes __globals__; facades only hold bound methods
    module = getattr(type(obj), "__module__", "") or ""
    return module.split(".")[0] in ("sqlite3", "psycopg", "psycopg_binary", "pymysql", "_sqlite3")


@pytest.mark.parametrize("facade", [sqlite, postgres, mysql, crypto.bcrypt])
def test_cant_reach_the_driver_from_a_facade(facade):
    bad = [path for path, obj in _walk_public(facade) if _leaks(obj)]
    assert bad == []


def test_cant_reach_the_driver_from_a_connection(data_dir):
    conn = sqlite.connect()
    bad = [path for path, obj in _walk_public(conn) if _leaks(obj)]
    assert bad == []
    public = {n for n in dir(conn) if not n.startswith("_")}
    assert public == {"query", "execute", "transaction", "close", "closed", "in_transaction", "last_insert_id"}
    assert {n for n in dir(conn.transaction()) if not n.startswith("_")} == set()


def test_cant_pass_objects_with_host_adapters_as_params(data_dir):
    conn = sqlite.connect()

    class Sneaky(str):
        pass

    with pytest.raises(TypeError, match="not allowed"):
        conn.query("SELECT ? AS v", [Sneaky("x")])
