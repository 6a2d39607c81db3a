"""The database and bcrypt facades, in-process, against real SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from scriptvisor.sandbox.facades.crypto import bcrypt
from scriptvisor.sandbox.facades.db import mysql, postgres, sqlite

from .conftest import declaration, declare

BACKENDS = ["sqlite", "postgres", "mysql"]


@pytest.fixture(params=BACKENDS)
def db(request, invocation):
    """(facade, connection, placeholder) with an empty ``items`` table."""
    kind = request.param
    if kind == "sqlite":
        conn = sqlite.connect("facade.db")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "name TEXT UNIQUE NOT NULL, n INTEGER)")
        yield sqlite, conn, "?"
    elif kind == "postgres":
        declare(invocation(), declaration("postgres", request.getfixturevalue("pg_legacy")))
        conn = postgres.connect("legacy")
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, n INTEGER)")
        yield postgres, conn, "%s"
    else:
        declare(invocation(), declaration("mysql", request.getfixturevalue("my_legacy")))
        conn = mysql.connect("legacy")
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, "
                     "name VARCHAR(100) UNIQUE NOT NULL, n INT)")
        yield mysql, conn, "%s"
    conn.close()


def test_rows_are_dicts_and_execute_counts(db):
    facade, conn, ph = db
    assert conn.execute(f"INSERT INTO items (name, n) VALUES ({ph}, {ph})", ["a", 1]) == 1
    assert conn.execute(f"INSERT INTO items (name, n) VALUES ({ph}, {ph})", ("b", 2)) == 1
    rows = conn.query(f"SELECT name, n FROM items WHERE n >= {ph} ORDER BY n", [1])
    assert rows == [{"name": "a", "n": 1}, {"name": "b", "n": 2}]
    assert conn.execute(f"UPDATE items SET n = n + 1 WHERE name = {ph}", ["zzz"]) == 0
    assert conn.query(f"SELECT name FROM items WHERE name = {ph}", ["none"]) == []


def test_duplicate_key_is_catchable_by_name(db):
    facade, conn, ph = db
    conn.execute(f"INSERT INTO items (name) VALUES ({ph})", ["dup"])
    with pytest.raises(facade.DuplicateKey):
        conn.execute(f"INSERT INTO items (name) VALUES ({ph})", ["dup"])
    assert issubclass(facade.DuplicateKey, facade.IntegrityError)
    assert issubclass(facade.IntegrityError, facade.DatabaseError)


def test_not_null_is_an_integrity_error_but_not_a_duplicate(db):
    facade, conn, ph = db
    with pytest.raises(facade.IntegrityError) as info:
        conn.execute(f"INSERT INTO items (name) VALUES ({ph})", [None])
    assert not isinstance(info.value, facade.DuplicateKey)


def test_transaction_commits_and_rolls_back(db):
    facade, conn, ph = db
    with conn.transaction():
        conn.execute(f"INSERT INTO items (name) VALUES ({ph})", ["kept"])
    with pytest.raises(ZeroDivisionError):
        with conn.transaction():
            conn.execute(f"INSERT INTO items (name) VALUES ({ph})", ["dropped"])
            1 / 0
    assert [r["name"] for r in conn.query("SELECT name FROM items")] == ["kept"]
    assert conn.in_transaction is False


def test_nested_transaction_is_refused(db):
    facade, conn, ph = db
    with conn.transaction():
        with pytest.raises(facade.DatabaseError, match="already open"):
            with conn.transaction():
                pass


def test_syntax_error_is_a_database_error(db):
    facade, conn, ph = db
    with pytest.raises(facade.DatabaseError) as info:
        conn.query("SELEC nothing")
    assert type(info.value) is facade.DatabaseError


@pytest.mark.parametrize("bad", [{"x": object()}, [object()], [[1, 2]], [float("nan")], "abc", 5])
def test_params_must_be_plain_scalars(db, bad):
    facade, conn, ph = db
    with pytest.raises(TypeError):
        conn.query(f"SELECT {ph} AS v", bad)


def test_second_statement_is_refused(db):
    facade, conn, ph = db
    with pytest.raises(facade.DatabaseError):
        conn.query("SELECT 1; DROP TABLE items")
    assert conn.query("SELECT count(*) AS n FROM items") == [{"n": 0}]  # still there
    # a ';' inside a literal or a trailing ';' is one statement
    assert conn.query("SELECT ';' AS s;") == [{"s": ";"}]


def test_last_insert_id_after_insert(db):
    facade, conn, ph = db
    if facade is postgres:
        rows = conn.query(f"INSERT INTO items (name) VALUES ({ph}) RETURNING id", ["r"])
        assert isinstance(rows[0]["id"], int)
    else:
        conn.execute(f"INSERT INTO items (name) VALUES ({ph})", ["r"])
        assert conn.last_insert_id == conn.query("SELECT id FROM items")[0]["id"]


def test_closed_connection_refuses_queries(db):
    facade, conn, ph = db
    conn.close()
    conn.close()  # idempotent
    assert conn.closed
    with pytest.raises(facade.ConnectError, match="closed"):
        conn.query("SELECT 1")


def test_recycle_closes_connections_kept_open(db, invocation):
    facade, conn, ph = db
    ctx = invocation()
    ctx.run_cleanups()
    assert conn.closed


def test_values_are_json_ready(db):
    facade, conn, ph = db
    if facade is sqlite:
        sql = "SELECT 1.5 AS d, 'x' AS s, NULL AS z"
    else:
        sql = "SELECT CAST(1.5 AS DECIMAL(4,2)) AS d, 'x' AS s, NULL AS z, CURRENT_DATE AS t"
    row = conn.query(sql)[0]
    assert row["d"] == 1.5 and row["s"] == "x" and row["z"] is None
    if "t" in row:
        assert isinstance(row["t"], str) and len(row["t"]) == 10


def test_row_cap(invocation, monkeypatch):
    import scriptvisor.sandbox.facades.db as dbmod
    monkeypatch.setattr(dbmod, "MAX_ROWS", 3)
    conn = sqlite.connect()
    with pytest.raises(sqlite.DatabaseError, match="more than 3 rows"):
        conn.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT x FROM c")


# --- deadlines ---------------------------------------------------------------


def test_sqlite_slow_query_times_out_before_the_deadline(invocation):
    invocation(0.6)
    conn = sqlite.connect()
    with pytest.raises(sqlite.QueryTimeout, match="timed out") as info:
        conn.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    from scriptvisor.sandbox import context
    deadline_left = context.current().remaining()
    assert deadline_left > 0, "the facade must stop the statement before the hard deadline"
    assert "s left" in str(info.value)
    # the connection is still usable afterwards
    invocation(5)
    assert conn.query("SELECT 1 AS one") == [{"one": 1}]


def test_postgres_pg_sleep_times_out_before_the_deadline(invocation, pg_legacy):
    from scriptvisor.sandbox import context
    declare(invocation(), declaration("postgres", pg_legacy))
    conn = postgres.connect("legacy")
    invocation(0.8)
    with pytest.raises(postgres.QueryTimeout, match="timed out") as info:
        conn.query("SELECT pg_sleep(30)")
    assert context.current().remaining() > 0
    assert "deadline" in str(info.value)
    invocation(5)
    assert conn.query("SELECT 1 AS one") == [{"one": 1}]


def test_mariadb_sleep_times_out_before_the_deadline(invocation, my_legacy):
    from scriptvisor.sandbox import context
    declare(invocation(), declaration("mysql", my_legacy))
    conn = mysql.connect("legacy")
    invocation(0.8)
    with pytest.raises(mysql.QueryTimeout, match="timed out"):
        conn.query("SELECT SLEEP(30)")
    assert context.current().remaining() > 0
    invocation(5)
    assert conn.query("SELECT 1 AS one") == [{"one": 1}]


def test_no_time_left_means_no_statement(invocation):
    conn = sqlite.connect()
    invocation(0.0)
    with pytest.raises(sqlite.QueryTimeout, match="no time left"):
        conn.query("SELECT 1")


def test_wrong_password_is_a_connect_error(invocation, my_legacy):
    declare(invocation(), declaration("mysql", {**my_legacy, "user": "nobody_here", "password": "x"}))
    with pytest.raises(mysql.ConnectError, match="cannot connect"):
        mysql.connect("legacy")


# --- bcrypt --------------------------------------------------------------------


def test_bcrypt_hash_and_check():
    h = bcrypt.hash("wonderland", 4)
    assert h.startswith("$2b$04$")
    assert bcrypt.check("wonderland", h) is True
    assert bcrypt.check("Wonderland", h) is False


def test_bcrypt_rounds_are_clamped(monkeypatch):
    import scriptvisor.sandbox.facades.crypto as crypto
    assert bcrypt.hash("x", 1).startswith("$2b$04$")
    seen = []
    real_gensalt = crypto._bcrypt.gensalt
    monkeypatch.setattr(crypto._bcrypt, "gensalt", lambda rounds: seen.append(rounds) or real_gensalt(4))
    bcrypt.hash("x", 99)
    assert seen == [14]
    with pytest.raises(TypeError):
        bcrypt.hash("x", "10")


def test_bcrypt_accepts_php_2y_hashes_and_rejects_garbage():
    h = bcrypt.hash("pw", 4).replace("$2b$", "$2y$", 1)
    assert bcrypt.check("pw", h) is True
    assert bcrypt.check("pw", "not a hash") is False
    assert bcrypt.check("pw", None) is False


def test_bcrypt_long_passwords_use_the_first_72_bytes():
    h = bcrypt.hash("a" * 100, 4)
    assert bcrypt.check("a" * 72 + "different tail", h) is True
    with pytest.raises(TypeError):
        bcrypt.hash(12345)
