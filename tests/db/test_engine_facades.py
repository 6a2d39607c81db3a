"""Database facades inside real confined workers: deadlines, global_, egress."""

from __future__ import annotations

from scriptvisor.engine.config import TenantLimits

from .conftest import declaration

SLOW_PG = """
import postgres

def slow(callback):
    db = postgres.connect("legacy")
    db.query("SELECT pg_sleep(30)")
    callback(None, "finished?")
"""

SLOW_MY = """
import mysql

def slow(callback):
    db = mysql.connect("legacy")
    db.query("SELECT SLEEP(30)")
    callback(None, "finished?")
"""

CAUGHT = """
import postgres

def slow(callback):
    db = postgres.connect("legacy")
    try:
        db.query("SELECT pg_sleep(30)")
    except postgres.QueryTimeout as error:
        callback(None, {"caught": True, "left": postgres.remaining() > 0, "again": db.query("SELECT 1 AS one")})
"""


def _invoke(engine, tenant, source, timeout, conf):
    return engine.invoke(tenant.tenant, path="slow.py", source=source, args=[], configuration=conf,
                         timeout=timeout)


def test_slow_postgres_query_is_a_clear_error_before_the_deadline(engine, make_tenant):
    tenant = make_tenant("postgres", False)
    res = _invoke(engine, tenant, SLOW_PG, 1.5, tenant.configuration)
    assert res.ok is False
    assert res.error["code"] == "script_error"  # not "timeout": the worker was not killed
    assert res.error["name"] == "QueryTimeout"
    assert "timed out" in res.error["message"] and "s left" in res.error["message"]


def test_slow_mariadb_query_is_a_clear_error_before_the_deadline(engine, make_tenant):
    tenant = make_tenant("mysql", False)
    res = _invoke(engine, tenant, SLOW_MY, 1.5, tenant.configuration)
    assert res.ok is False
    assert res.error["code"] == "script_error"
    assert res.error["name"] == "QueryTimeout"
    assert "timed out" in res.error["message"]


def test_script_can_catch_the_timeout_and_still_call_back(engine, make_tenant):
    tenant = make_tenant("postgres", False)
    res = _invoke(engine, tenant, CAUGHT, 1.5, tenant.configuration)
    assert res.ok, res.error
    assert res.result == {"caught": True, "left": True, "again": [{"one": 1}]}


KEEP = """
import sqlite

def keep(callback):
    db = global_.get("db")
    reused = db is not None
    if db is None:
        db = sqlite.connect("legacy.db")
        global_["db"] = db
    callback(None, {"reused": reused, "users": db.query("SELECT count(*) AS n FROM users")[0]["n"]})
"""


def test_connection_in_global_survives_between_invocations(engine, make_tenant):
    tenant = make_tenant("sqlite", False)
    first = engine.invoke(tenant.tenant, path="keep.py", source=KEEP, args=[])
    second = engine.invoke(tenant.tenant, path="keep.py", source=KEEP, args=[])
    assert first.result == {"reused": False, "users": 2}
    assert second.result == {"reused": True, "users": 2}
    assert first.worker["pid"] == second.worker["pid"]


EGRESS = """
import postgres

def egress(callback):
    postgres.connect("legacy")
    callback(None, "connected")
"""


def test_cant_connect_to_a_port_outside_the_tenant_limits(engine, make_tenant):
    tenant = make_tenant("sqlite", False)
    decl = declaration("postgres", {"host": "127.0.0.1", "port": 5432, "user": "u", "password": "p",
                                    "dbname": "postgres"})
    engine.configure_tenant(tenant.tenant, limits=TenantLimits(timeout=10.0, allowed_ports=()),
                            data_dir=str(tenant.data_dir), databases=[decl], egress=[])
    res = engine.invoke(tenant.tenant, path="egress.py", source=EGRESS, args=[])
    assert res.ok is False
    assert res.error["name"] == "ConnectError"  # Landlock refused the TCP connect below the facade
    assert "5432" in res.error["message"]


RAW = """
import sqlite

def raw(callback):
    db = sqlite.connect("legacy.db")
    callback(None, db._raw)
"""


def test_cant_reach_the_raw_driver_connection_from_a_script(engine, make_tenant):
    tenant = make_tenant("sqlite", False)
    res = engine.invoke(tenant.tenant, path="raw.py", source=RAW, args=[])
    assert res.ok is False
    assert res.error["code"] in ("compile_error", "script_error")
    assert "_raw" in res.error["message"]
