"""Issue 10, database/disk/egress part: tried as an attacker on tenants made the documented way.

Every tenant here is made by ``scriptvisor init --template sqlite|postgres|mysql``
and, for PostgreSQL/MariaDB, set up by ``scriptvisor db setup --tenant-dir DIR``
(both run as commands, on this machine's real servers).  Attacks run as
scripts (through the engine, the ``scriptvisor connection`` CLI and the HTTP
server) and, where the claim is about an OS or database layer, as a hostile
worker with full code execution (``debug_exec``: the language layer assumed
broken).  Each test's docstring names the layer that stops the attack.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scriptvisor.engine import Engine, EngineConfig
from scriptvisor.engine.server import auth
from scriptvisor.engine.tenants import load_tenant
from tests.services import unavailable

pytestmark = pytest.mark.timeout(120)

SV = [sys.executable, "-m", "scriptvisor.engine.cli"]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PORTS = {"postgres": 5432, "mysql": 3306}


def sv(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SV, *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- admin access (test side)


def pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable: {exc}")


def my_admin(database: str | None = None):
    pymysql = pytest.importorskip("pymysql")
    try:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database,
                               autocommit=True, connect_timeout=3)
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB not reachable: {exc}")


def drop_database(driver: str, database: str, user: str) -> None:
    if driver == "postgres":
        with pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{user}"')
    elif driver == "mysql":
        admin = my_admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
                cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        finally:
            admin.close()


# --------------------------------------------------------------------------- tenants, the documented way


@pytest.fixture(scope="module")
def tenants_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="module")
def make(tenants_dir, secrets_dir):
    """``make(template, limits="") -> Path``: init (+ db setup) a uniquely named tenant."""
    made: list[tuple[str, str, str]] = []

    def make_tenant(template: str, limits: str = "") -> Path:
        name = f"sec{secrets.token_hex(4)}"
        root = tenants_dir / name
        res = sv("init", str(root), "--template", template, "--secrets-dir", str(secrets_dir))
        assert res.returncode == 0, res.stderr
        if limits:
            toml = root / "tenant.toml"
            toml.write_text(toml.read_text().replace("[limits]\n", f"[limits]\n{limits}\n"))
        if template != "sqlite":
            made.append((template, f"{name}_legacy", f"{name}_legacy"))
            res = sv("db", "setup", "--tenant-dir", str(root))
            assert res.returncode == 0, res.stderr
            assert "ready for role" in res.stdout
        return root

    yield make_tenant
    for driver, database, user in made:
        drop_database(driver, database, user)


@pytest.fixture(scope="module")
def shared(make):
    """``shared(template) -> Path``: one tenant per template for the tests that leave it as it was."""
    cache: dict[str, Path] = {}

    def get(template: str) -> Path:
        if template not in cache:
            cache[template] = make(template)
        return cache[template]

    return get


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # Few workers: idle ones of earlier tenants are retired (closing the connections their
    # global_ holds), so the module never holds many PostgreSQL slots on this shared server.
    cfg = EngineConfig(debug_exec=True, spares_per_tenant=0, max_workers=4,
                       state_dir=str(tmp_path_factory.mktemp("sv")))
    with Engine(cfg) as eng:
        yield eng


def configure(engine, root: Path):
    tenant = load_tenant(root)
    engine.configure_tenant(tenant.name, limits=tenant.limits, data_dir=str(tenant.data_dir),
                            databases=tenant.databases, egress=tenant.egress)
    return tenant


def run_script(engine, root: Path, source: str, fn: str = "attack", args=(), timeout: float | None = None):
    tenant = configure(engine, root)
    return engine.invoke(tenant.name, path=f"{fn}.py", source=source, function=fn, args=list(args),
                         configuration=dict(tenant.configuration), timeout=timeout)


def admin_sql(driver: str, root: Path, sql: str, args: tuple = ()) -> list:
    database = f"{root.name}_legacy"
    if driver == "postgres":
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}", autocommit=True) as db:
            cur = db.execute(sql, args)
            return cur.fetchall() if cur.description else []
    admin = my_admin(database)
    try:
        with admin.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())
    finally:
        admin.close()


# --------------------------------------------------------------------------- the HTTP server


@pytest.fixture(scope="module")
def server(tenants_dir, tmp_path_factory):
    """``scriptvisor serve`` over the tenants folder (tenants made later are picked up on first use)."""
    code = ("import sys; from scriptvisor.engine import EngineConfig; "
            "from scriptvisor.engine.server.run import serve; "
            "sys.exit(serve(sys.argv[1], '127.0.0.1', 0, engine_config=EngineConfig(max_workers=4)))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tenants_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        pytest.fail(f"server did not start: {line!r}")
    try:
        yield line.split("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_post(server: str, tenants_dir: Path, root: Path, path: str, args: list) -> dict:
    token = auth.create_token(tenants_dir, root.name)
    with httpx.Client(base_url=server, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post(f"/v1/tenants/{root.name}/{path}", json={"args": args})
    return r.json()


def cli_connection(root: Path, operation: str, *args: str) -> dict:
    res = sv("connection", operation, "--tenant-dir", str(root), "--json", *args)
    assert res.stdout, res.stderr
    return json.loads(res.stdout)


# =========================================================================== the documented path works


@pytest.mark.parametrize("template", ["sqlite", "postgres", "mysql"])
def test_init_and_db_setup_give_a_working_login_through_cli_and_http(shared, server, tenants_dir, template):
    root = shared(template)
    out = cli_connection(root, "login", "alice@example.com", "wonderland")
    assert out["ok"] is True, out
    assert out["result"]["email"] == "alice@example.com"
    wrong = cli_connection(root, "login", "bob@example.com", "nope")
    assert wrong["error"]["name"] == "WrongUsernameOrPasswordError"
    body = http_post(server, tenants_dir, root, "connection/login", ["alice@example.com", "wonderland"])
    assert body["ok"] is True and body["result"]["nickname"] == "alice"
    toml = (root / "tenant.toml").read_text()
    if template != "sqlite":
        secret_file = Path(re.search(r'password_file = "([^"]+)"', toml).group(1))
        assert not secret_file.resolve().is_relative_to(root.resolve())
        assert secret_file.stat().st_mode & 0o077 == 0  # operator-only
        assert "DB_PASSWORD" not in toml and "password =" not in toml  # no secret in the tenant folder


# =========================================================================== declared endpoints only

UNDECLARED = """
import {driver}

def get_user(email, callback):
    try:
        {driver}.connect(host="127.0.0.1", port={port}, user="{admin}", password="", {dbkey}="{db}")
    except {driver}.NotAllowed as error:
        callback(error)
        return
    callback(None, {{"user_id": "connected", "email": email}})
"""


@pytest.mark.parametrize("driver", ["postgres", "mysql"])
def test_cant_connect_to_an_undeclared_database_or_role(make, server, tenants_dir, driver):
    """Layer: database facade (declared endpoints only). A script that picks host, role and
    database (the server's superuser, the 'postgres'/'mysql' database) gets NotAllowed naming
    what the operator declared, through the CLI and the HTTP server alike."""
    root = make(driver)
    attack = UNDECLARED.format(driver=driver, port=PORTS[driver],
                               admin="postgres" if driver == "postgres" else "root",
                               dbkey="dbname" if driver == "postgres" else "database",
                               db="postgres" if driver == "postgres" else "mysql")
    (root / "scripts" / "get_user.py").write_text(attack)
    for out in (cli_connection(root, "get_user", "alice@example.com"),
                http_post(server, tenants_dir, root, "scripts/get_user", ["alice@example.com"])):
        assert out["ok"] is False
        assert out["error"]["code"] == "script_error"
        assert out["error"]["name"] == "NotAllowed"
        assert "declared for this tenant: legacy" in out["error"]["message"]
        assert f"{root.name}_legacy@127.0.0.1:{PORTS[driver]}" in out["error"]["message"]


@pytest.mark.parametrize("driver", ["postgres", "mysql"])
def test_cant_open_another_tenants_database_with_its_own_role(make, driver):
    """Layer: database grants made by ``db setup`` (CONNECT revoked from PUBLIC on PostgreSQL,
    per-database grants on MariaDB). Even with its role's leaked password, tenant A cannot
    open tenant B's database (the facade would not even let it name one)."""
    a, b = make(driver), make(driver)
    password = Path(re.search(r'password_file = "([^"]+)"', (a / "tenant.toml").read_text()).group(1)
                    ).read_text().strip()
    if driver == "postgres":
        import psycopg

        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(host="127.0.0.1", port=5432, user=f"{a.name}_legacy", password=password,
                            dbname=f"{b.name}_legacy", connect_timeout=3)
    else:
        import pymysql

        with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
            pymysql.connect(host="127.0.0.1", port=3306, user=f"{a.name}_legacy", password=password,
                            database=f"{b.name}_legacy", connect_timeout=3)


# =========================================================================== host commands and files

HOST_PG = """
import postgres

def attack(callback):
    db = postgres.connect("legacy")
    out = {}
    for label, sql in [("program", "COPY (SELECT 1) TO PROGRAM 'id > /tmp/pwned_by_tenant'"),
                       ("read_file", "SELECT pg_read_file('/etc/passwd') AS f"),
                       ("ls_dir", "SELECT pg_ls_dir('.') AS f"),
                       ("copy_from_file", "COPY users FROM '/etc/passwd'"),
                       ("lo_import", "SELECT lo_import('/etc/passwd') AS f")]:
        try:
            out[label] = db.query(sql)
        except postgres.DatabaseError as error:
            out[label] = str(error)
    callback(None, out)
"""

HOST_MY = """
import mysql

def attack(callback):
    db = mysql.connect("legacy")
    out = {"load_file": db.query("SELECT LOAD_FILE('/etc/passwd') AS f")[0]["f"]}
    for label, sql in [("outfile", "SELECT 'x' INTO OUTFILE '/tmp/pwned_by_tenant'"),
                       ("infile", "LOAD DATA INFILE '/etc/passwd' INTO TABLE users"),
                       ("other_db", "SELECT user FROM mysql.user")]:
        try:
            out[label] = db.query(sql)
        except mysql.DatabaseError as error:
            out[label] = str(error)
    callback(None, out)
"""


def test_cant_run_host_programs_or_read_host_files_through_postgres(shared, engine):
    """Layer: PostgreSQL role privileges (``db setup``'s role is no superuser and holds none of
    pg_execute_server_program / pg_read_server_files / pg_write_server_files)."""
    root = shared("postgres")
    res = run_script(engine, root, HOST_PG)
    assert res.ok, res.error
    out = res.result
    assert "must be superuser or have privileges of the pg_execute_server_program role" in out["program"]
    assert "permission denied for function pg_read_file" in out["read_file"]
    assert "permission denied for function pg_ls_dir" in out["ls_dir"]
    assert "pg_read_server_files" in out["copy_from_file"]
    assert "permission denied for function lo_import" in out["lo_import"]
    assert not os.path.exists("/tmp/pwned_by_tenant")


def test_cant_read_or_write_host_files_through_mariadb(shared, engine):
    """Layer: MariaDB account privileges (``db setup``'s account has no FILE and no global
    privilege: LOAD_FILE yields NULL, INTO OUTFILE and LOAD DATA INFILE are denied)."""
    root = shared("mysql")
    res = run_script(engine, root, HOST_MY)
    assert res.ok, res.error
    out = res.result
    assert out["load_file"] is None
    assert "Access denied" in out["outfile"]
    assert "Access denied" in out["infile"]
    assert "command denied" in out["other_db"] or "Access denied" in out["other_db"]
    assert not os.path.exists("/tmp/pwned_by_tenant")


@pytest.mark.parametrize("driver,account", [("postgres", "superuser"), ("postgres", "server_files"),
                                            ("mysql", "root"), ("mysql", "file")])
def test_cant_use_a_privileged_database_account_even_if_declared(make, server, tenants_dir, driver, account):
    """Layer: database facade privilege check on connect. An operator who declares a superuser,
    a member of pg_read_server_files, MariaDB root or an account with FILE gets NotAllowed with
    the way to make a least-privileged role, through the CLI and the HTTP server."""
    root = make(driver)
    toml = root / "tenant.toml"
    user = f"{root.name}_legacy"
    if account == "superuser":
        user = "postgres"
    elif account == "server_files":
        with pg_admin() as admin:
            admin.execute(f'GRANT pg_read_server_files TO "{user}"')
    elif account == "root":
        user = "root"
    else:
        admin = my_admin()
        try:
            with admin.cursor() as cur:
                cur.execute(f"GRANT FILE ON *.* TO '{user}'@'%'")
        finally:
            admin.close()
    text = re.sub(r'user = "[^"]+"', f'user = "{user}"', toml.read_text())
    if account in ("superuser", "root"):
        text = re.sub(r'password_file = "[^"]+"', 'password_env = "SV_TEST_EMPTY_PASSWORD"', text)
    toml.write_text(text)
    env = {"SV_TEST_EMPTY_PASSWORD": ""}
    out = json.loads(sv("connection", "login", "--tenant-dir", str(root), "--json", "alice@example.com",
                        "wonderland", env=env).stdout)
    assert out["ok"] is False
    assert out["error"]["name"] == "NotAllowed"
    assert "privilege" in out["error"]["message"] and "scriptvisor db setup" in out["error"]["message"]
    if account not in ("superuser", "root"):  # the server's environment lacks SV_TEST_EMPTY_PASSWORD
        body = http_post(server, tenants_dir, root, "connection/login", ["alice@example.com", "wonderland"])
        assert body["ok"] is False and body["error"]["name"] == "NotAllowed"


# =========================================================================== one statement per call

STACKED = """
import {driver}

def attack(sql, callback):
    db = {driver}.connect("legacy")
    refused = None
    try:
        db.query(sql)
    except {driver}.NotAllowed as error:
        refused, message = "NotAllowed", str(error)
    except {driver}.DatabaseError as error:
        refused, message = "DatabaseError", str(error)
    if refused:
        callback(None, {{"refused": refused, "message": message,
                        "users": db.query("SELECT count(*) AS n FROM users")[0]["n"]}})
        return
    callback(None, {{"refused": None, "users": db.query("SELECT count(*) AS n FROM users")[0]["n"]}})
"""

PG_STACKED = ["SELECT 1; DELETE FROM users", "SELECT E'\\\\''; DELETE FROM users",
              "SELECT 1 AS a$b; DELETE FROM users", "SELECT $x$;$x$; DELETE FROM users",
              "SELECT 1 /* ; */; DELETE FROM users"]
MY_STACKED = ["SELECT 1; DELETE FROM users", "SELECT 'a\\\\';'; DELETE FROM users",
              "SELECT 1 # x\n; DELETE FROM users", "SELECT `a;b` FROM (SELECT 1 AS `a;b`) t; DELETE FROM users"]


@pytest.mark.parametrize("driver,sql", [("postgres", s) for s in PG_STACKED] + [("mysql", s) for s in MY_STACKED])
def test_cant_stack_a_second_statement(shared, engine, driver, sql):
    """Layer: the driver protocol (PostgreSQL extended query protocol even without parameters;
    PyMySQL without CLIENT.MULTI_STATEMENTS): the server refuses a second statement however the
    text is quoted, and the users table keeps its rows."""
    root = shared(driver)
    res = run_script(engine, root, STACKED.format(driver=driver), args=[sql])
    assert res.ok, res.error
    assert res.result["refused"] in ("NotAllowed", "DatabaseError")
    assert res.result["users"] == 2
    assert admin_sql(driver, root, "SELECT count(*) FROM users")[0][0] == 2


def test_cant_stack_a_second_statement_through_the_http_server(shared, server, tenants_dir):
    """Layer: driver protocol, reached through the HTTP API."""
    root = shared("postgres")
    (root / "scripts" / "attack.py").write_text(STACKED.format(driver="postgres"))
    body = http_post(server, tenants_dir, root, "scripts/attack", ["SELECT 1; DELETE FROM users"])
    assert body["ok"] is True
    assert body["result"]["refused"] == "NotAllowed" and "one SQL statement" in body["result"]["message"]
    assert body["result"]["users"] == 2


# =========================================================================== the deadline reaches the database


def _stop_events(engine):
    events = []
    engine.add_listener(lambda ev: events.append(ev) if ev["event"] == "db_session_stopped" else None)
    return events


# A hostile worker is not inside an invocation of the runner: it makes one up for the facade.
AS_INVOCATION = """
import time
from scriptvisor.sandbox import context
context.set_current(context.Invocation(worker=context.worker(), deadline=time.monotonic() + 30,
                                       log=lambda line: None))
"""

HOSTILE_PG = AS_INVOCATION + """
from scriptvisor.sandbox.facades.db import postgres
conn = postgres.connect("legacy")
raw = conn._raw.pgconn
raw.exec_(b"SET statement_timeout = 0")
raw.exec_(b"SELECT pg_sleep(60) /* outlive */")
"""


def test_cant_keep_a_postgres_statement_running_after_the_timeout_kill(shared, engine):
    """Layer: engine.dbsessions. A hostile worker turns the statement timeout off and sleeps;
    at the deadline it is killed and the supervisor's helper terminates its backend
    (pg_terminate_backend with the declared role, waiting for the backend to exit)."""
    root = shared("postgres")
    tenant = configure(engine, root)
    events = _stop_events(engine)
    res = engine.debug_exec(tenant.name, HOSTILE_PG, timeout=2.0)
    assert res.error["code"] == "timeout"
    # The worker's earlier (closed) sessions are stopped too, as no-ops: wait for the live one.
    assert engine.run_until(lambda: any(e["tenant"] == tenant.name and e["stopped"] for e in events),
                            timeout=15), events
    assert all(e["error"] is None for e in events if e["tenant"] == tenant.name), events
    rows = admin_sql("postgres", root, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> "
                     "pg_backend_pid()", ("%outlive%",))
    assert rows[0][0] == 0


HOSTILE_MY = AS_INVOCATION + """
from scriptvisor.sandbox.facades.db import mysql
conn = mysql.connect("legacy")
conn._raw.query("SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(60) /* {lock} */")
"""

def _lock_is_free_again(lock: str, holder) -> bool:
    """Release ``lock`` and take it from a fresh session, waiting up to 5 s on the server: a
    statement still queued for it would get it first and hold it for its remaining minute."""
    with holder.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
    other = my_admin()
    try:
        with other.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 5)", (lock,))
            return cur.fetchone()[0] == 1
    finally:
        other.close()


@pytest.mark.parametrize("how", ["worker_killed", "script_caught"])
def test_cant_keep_a_mariadb_statement_running_after_the_invocation(shared, engine, how):
    """Layer: engine.dbsessions (worker killed at the deadline: KILL CONNECTION with the declared
    account) and the mysql facade (its read timed out: KILL QUERY before raising QueryTimeout),
    whatever max_statement_time the script SET for its statement."""
    root = shared("mysql")
    tenant = configure(engine, root)
    lock = f"sv_{secrets.token_hex(6)}"
    holder = my_admin()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 1)", (lock,))
        if how == "worker_killed":
            events = _stop_events(engine)
            res = engine.debug_exec(tenant.name, HOSTILE_MY.format(lock=lock), timeout=2.0)
            assert res.error["code"] == "timeout"
            assert engine.run_until(lambda: any(e["tenant"] == tenant.name and e["stopped"] for e in events),
                                    timeout=15), events
            assert all(e["error"] is None for e in events if e["tenant"] == tenant.name), events
            # KILL marks the thread at once ('Killed'); SLEEP would otherwise run its minute
            rows = admin_sql("mysql", root, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE "
                             "INFO LIKE %s AND COMMAND <> 'Killed' AND ID <> CONNECTION_ID()", (f"%{lock}%",))
            assert rows[0][0] == 0
            return
        else:
            res = run_script(engine, root, SCRIPT_MY_CAUGHT.format(lock=lock), timeout=3.0)
            # the override never reaches the server: the facade refuses it
            assert res.ok and res.result.startswith("NotAllowed"), res
        assert _lock_is_free_again(lock, holder)
    finally:
        holder.close()


SCRIPT_MY_CAUGHT = """
import mysql

def attack(callback):
    db = mysql.connect("legacy")
    try:
        db.query("SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK('{lock}', 60) AS got")
    except mysql.DatabaseError as error:
        callback(None, repr(error))
"""

SCRIPT_MY_AT_LIMIT = """
import mysql

def attack(sql, callback):
    # take every slot of the account (db_connections_per_tenant = 2), so a second
    # connection that could KILL QUERY the statement is refused by the server
    conns = [mysql.connect("legacy"), mysql.connect("legacy")]
    try:
        conns[0].query(sql)
    except mysql.DatabaseError as error:
        callback(None, repr(error))
"""

MY_OVERRIDES = [
    "SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK('{lock}', 60) AS got",
    "SET STATEMENT `MAX_STATEMENT_TIME`=0 FOR SELECT GET_LOCK('{lock}', 60) AS got",
    "PREPARE s FROM 'SELECT GET_LOCK(''{lock}'', 60)'",
    "EXECUTE IMMEDIATE 'SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(''{lock}'', 60)'",
]


@pytest.mark.parametrize("sql", MY_OVERRIDES, ids=["set_statement", "quoted_name", "prepare", "execute_immediate"])
def test_cant_keep_a_mariadb_statement_running_when_the_account_is_at_its_connection_limit(make, engine, sql):
    """Layer: the mysql facade refuses SQL that raises its statement limit (or dynamic SQL that
    could): the KILL QUERY it sends after a read timeout needs a connection of the same account,
    which the server refuses while the tenant holds all its slots, and the worker lives on."""
    root = make("mysql", limits="db_connections_per_tenant = 2")
    tenant = configure(engine, root)
    lock = f"sv_{secrets.token_hex(6)}"
    holder = my_admin()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 1)", (lock,))
        res = run_script(engine, root, SCRIPT_MY_AT_LIMIT, args=[sql.format(lock=lock)], timeout=3.0)
        assert res.ok and res.result.startswith("NotAllowed"), res
        assert _lock_is_free_again(lock, holder)
    finally:
        holder.close()


SCRIPT_PG = """
import postgres

def attack(callback):
    db = postgres.connect("legacy")
    try:
        db.query("SELECT set_config('statement_timeout', '0', false), pg_sleep(60) /* outlive2 */")
    except postgres.QueryTimeout as error:
        callback(None, str(error))
"""


def test_cant_switch_off_the_postgres_statement_timeout_from_a_script(shared, engine):
    """Layer: mysql/postgres facade statement timeout (set before every statement; a set_config
    inside the statement comes too late): the server cancels it before the deadline."""
    root = shared("postgres")
    res = run_script(engine, root, SCRIPT_PG, timeout=2.0)
    assert res.ok, res.error
    assert "timed out" in res.result
    rows = admin_sql("postgres", root, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                     "query LIKE %s AND pid <> pg_backend_pid()", ("%outlive2%",))
    assert rows[0][0] == 0


# =========================================================================== caps

HOARD = """
import {driver}

def attack(callback):
    held = []
    try:
        for i in range(20):
            held.append({driver}.connect("legacy"))
    except {driver}.NotAllowed as error:
        callback(None, {{"opened": len(held), "message": str(error)}})
"""


@pytest.mark.parametrize("driver", ["sqlite", "postgres", "mysql"])
def test_cant_hoard_database_connections_in_one_worker(make, engine, driver):
    """Layer: database facade (TenantLimits.db_connections per worker)."""
    root = make(driver, "db_connections = 3")
    source = HOARD.format(driver=driver)
    if driver == "sqlite":
        source = source.replace('connect("legacy")', 'connect("legacy.db")')
    res = run_script(engine, root, source)
    assert res.ok, res.error
    assert res.result["opened"] == 3
    assert "limit db_connections = 3" in res.result["message"]


@pytest.mark.parametrize("driver", ["postgres", "mysql"])
def test_cant_hoard_database_connections_across_the_tenant(make, engine, driver):
    """Layer: database role connection limit set by ``db setup`` from
    TenantLimits.db_connections_per_tenant (PostgreSQL CONNECTION LIMIT, MariaDB
    MAX_USER_CONNECTIONS), counted by the server over all of the tenant's workers."""
    root = make(driver, "db_connections_per_tenant = 2\ndb_connections = 4")
    res = run_script(engine, root, HOARD.format(driver=driver))
    assert res.ok, res.error
    assert res.result["opened"] == 2
    assert "db_connections_per_tenant" in res.result["message"]


FILL = """
import sqlite

def attack(callback):
    db = sqlite.connect("fill.db")
    db.execute("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
    written = 0
    try:
        for i in range(100):
            db.execute("INSERT INTO blobs VALUES (zeroblob(262144))")
            written += 1
    except sqlite.DataQuotaExceeded as error:
        callback(None, {"written": written, "message": str(error)})
"""

MANY_FILES = """
import sqlite

def attack(callback):
    made = 0
    try:
        for i in range(50):
            sqlite.connect("file%d.db" % i).execute("CREATE TABLE t (x)")
            made += 1
    except sqlite.DataQuotaExceeded as error:
        callback(None, {"made": made, "message": str(error)})
"""


def test_cant_fill_the_disk_past_the_data_quota(make, engine):
    """Layer: sqlite facade (max_page_count from TenantLimits.data_mb, file count from data_files)."""
    root = make("sqlite", "data_mb = 2\ndata_files = 3")
    res = run_script(engine, root, FILL)
    assert res.ok, res.error
    assert "data_mb = 2" in res.result["message"]
    total = sum(f.stat().st_size for f in (root / "data").iterdir())
    assert total <= 2 * 1024 * 1024 + 256 * 1024  # the quota plus a journal's worth
    res = run_script(engine, root, MANY_FILES)
    assert res.ok, res.error
    assert res.result["made"] == 1  # legacy.db and fill.db exist: one more file fits
    assert "limit data_files = 3" in res.result["message"]


def test_cant_write_a_file_larger_than_the_file_size_limit_in_the_data_dir(make, engine):
    """Layer: rlimits (RLIMIT_FSIZE = TenantLimits.file_size_mb) for a hostile worker writing
    straight into its data directory."""
    root = make("sqlite", "file_size_mb = 1")
    tenant = configure(engine, root)
    code = ("import errno\n"
            f"p = {str(root / 'data' / 'big.bin')!r}\n"
            "try:\n"
            "    with open(p, 'wb') as f:\n"
            "        f.write(b'x' * (3 * 1024 * 1024))\n"
            "    result = 'written'\n"
            "except OSError as e:\n"
            "    result = errno.errorcode[e.errno]\n")
    res = engine.debug_exec(tenant.name, code)
    assert res.ok, res.error
    assert res.result == "EFBIG"
    assert (root / "data" / "big.bin").stat().st_size <= 1024 * 1024


# =========================================================================== egress at the OS level

CONNECT = """
import errno, socket
result = {}
for port in (3306, 5432, 6379):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        result[str(port)] = "connected"
    except OSError as e:
        result[str(port)] = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
"""


def test_cant_connect_to_an_undeclared_host_port_with_full_code_execution(make, engine):
    """Layer: nftables egress rules on the tenant's uid (engine.egress): the tenant declares
    MariaDB 127.0.0.1:3306 and lets Landlock allow port 5432 too, yet a hostile worker's TCP
    connect to 127.0.0.1:5432 (PostgreSQL, listening) is reset (ECONNREFUSED); 6379 is not an
    allowed port at all, so Landlock refuses it first (EACCES)."""
    if os.geteuid() != 0:
        pytest.skip("per-tenant uids and nftables need a root supervisor")
    root = make("mysql")
    toml = root / "tenant.toml"
    toml.write_text("allowed_ports = [5432]\n" + toml.read_text())
    tenant = configure(engine, root)
    assert tenant.egress == (("127.0.0.1", 3306),)
    egress = engine.supervisor.egress
    assert egress is not None and egress.active, getattr(egress, "reason", "no egress layer")
    res = engine.debug_exec(tenant.name, CONNECT)
    assert res.ok, res.error
    assert res.result == {"3306": "connected", "5432": "ECONNREFUSED", "6379": "EACCES"}


FIRST_ENGINE = """
import sys
from scriptvisor.engine import Engine, EngineConfig
from scriptvisor.engine.tenants import load_tenant
code, state_dir, root = sys.stdin.readline(), sys.argv[1], sys.argv[2]
with Engine(EngineConfig(debug_exec=True, spares_per_tenant=0, max_workers=2, state_dir=state_dir)) as eng:
    t = load_tenant(root)
    eng.configure_tenant(t.name, limits=t.limits, data_dir=str(t.data_dir), databases=t.databases, egress=t.egress)
    print(repr(eng.debug_exec(t.name, code.encode().decode("unicode_escape")).result), flush=True)
    sys.stdin.readline()
print("stopped", flush=True)
"""


def test_cant_escape_egress_after_another_engine_on_the_same_uid_map_stops(make, tmp_path):
    """Layer: nftables egress rules on the tenant's uid (engine.egress). Two engine instances on
    one state dir (a restart overlapping the old server, a CLI run beside the server) give the
    tenant the same uid; the second used to leave that uid to the first instance's table, so once
    the first stopped (its table deleted) the second's workers reached every host:port Landlock
    allows."""
    if os.geteuid() != 0:
        pytest.skip("per-tenant uids and nftables need a root supervisor")
    root = make("mysql")
    toml = root / "tenant.toml"
    toml.write_text("allowed_ports = [5432]\n" + toml.read_text())
    state_dir = str(tmp_path / "state")
    first = subprocess.Popen([sys.executable, "-c", FIRST_ENGINE, state_dir, str(root)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        first.stdin.write(CONNECT.encode("unicode_escape").decode() + "\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == repr({"3306": "connected", "5432": "ECONNREFUSED",
                                                        "6379": "EACCES"})
        cfg = EngineConfig(debug_exec=True, spares_per_tenant=0, max_workers=2, state_dir=state_dir)
        with Engine(cfg) as second:
            tenant = configure(second, root)
            # a worker of the second instance while the first still polices the uid
            assert second.debug_exec(tenant.name, CONNECT).result["5432"] == "ECONNREFUSED"
            first.stdin.write("\n")
            first.stdin.flush()
            assert first.stdout.readline().strip() == "stopped"
            assert first.wait(timeout=30) == 0
            res = second.debug_exec(tenant.name, CONNECT)
            assert res.ok, res.error
            assert res.result == {"3306": "connected", "5432": "ECONNREFUSED", "6379": "EACCES"}
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_doctor_reports_the_egress_layer():
    res = sv("doctor", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)["layers"]}
    assert "egress_nft" in rows and rows["egress_nft"]["detail"]
    if os.geteuid() == 0:
        assert rows["egress_nft"]["active"] is True, rows["egress_nft"]


# =========================================================================== the platform user store

STORE_PG = """
import postgres

def attack(callback):
    try:
        db = postgres.connect(host="127.0.0.1", port=5432, user="postgres", dbname="{store_db}")
        callback(None, db.query("SELECT * FROM platform_users"))
    except postgres.NotAllowed as error:
        callback(error)
"""

STORE_SQLITE = """
import sqlite

def attack(callback):
    out = {{}}
    for name in ["../state/platform.db", "platform.db", "{store}"]:
        try:
            sqlite.connect(name)
            out[name] = "opened"
        except sqlite.NotAllowed as error:
            out[name] = "NotAllowed"
    callback(None, out)
"""


def test_cant_reach_the_postgres_user_store_with_its_dsn(shared, engine):
    """Layer: database facade (declared endpoints only): a script that knows the PostgreSQL user
    store's DSN (host, database, role) can neither read nor write it; the store's database is
    never declared for a tenant."""
    root = shared("postgres")
    store_db = f"sv_store_{secrets.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f"CREATE DATABASE {store_db}")
    try:
        from scriptvisor.engine.userstore import UserStore

        store = UserStore(root.name, dsn=f"postgresql://postgres@127.0.0.1:5432/{store_db}")
        store.close()
        res = run_script(engine, root, STORE_PG.format(store_db=store_db))
        assert res.ok is False
        assert res.error["name"] == "NotAllowed"
        assert "declared for this tenant: legacy" in res.error["message"]
    finally:
        with pg_admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {store_db} WITH (FORCE)")


def test_cant_reach_the_sqlite_user_store_with_its_path(shared, engine):
    """Layer: sqlite facade (plain names in data/ only, platform.db reserved); Landlock keeps
    state/ out of a hostile worker's reach (test_cant_tamper_user_store)."""
    root = shared("sqlite")
    from scriptvisor.engine.userstore import open_store

    store = open_store(root.name, str(root / "state"))
    store.close()
    res = run_script(engine, root, STORE_SQLITE.format(store=str(root / "state" / "platform.db")))
    assert res.ok, res.error
    assert set(res.result.values()) == {"NotAllowed"}
