"""Build tenant folders over real legacy databases for the connection tests.

Every legacy database is reset to the same two users before a test:
alice@example.com / wonderland (id 1, verified) and bob@example.com / builder
(id 2, not verified), hashed with bcrypt cost 4 to keep the suite fast.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from scriptvisor.engine.connections import Connection
from scriptvisor.engine.tenantdir import SCRIPTS, TEMPLATES_DIR
from scriptvisor.engine.hashing import FAST_HASHER
from scriptvisor.engine.userstore import UserStore
from scriptvisor.sandbox.facades.crypto import hash_password

ROUNDS = 4
SEED = (("alice@example.com", "wonderland", "alice", True), ("bob@example.com", "builder", "bob", False))
_HASHES: dict[str, str] = {}


def _hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password, ROUNDS)
    return _HASHES[password]


def _schema(backend: str) -> str:
    return (TEMPLATES_DIR / backend / "schema.sql").read_text()


def reset_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE IF EXISTS users;" + _schema("sqlite"))
    db.executemany("INSERT INTO users (email, password, nickname, email_verified) VALUES (?, ?, ?, ?)",
                   [(e, _hash(p), n, int(v)) for e, p, n, v in SEED])
    db.commit()
    db.close()


def reset_postgres(params: dict) -> None:
    import psycopg

    with psycopg.connect(autocommit=True, **params) as db:
        db.execute("DROP TABLE IF EXISTS users")
        db.execute(_schema("postgres"))
        for e, p, n, v in SEED:
            db.execute("INSERT INTO users (email, password, nickname, email_verified) VALUES (%s, %s, %s, %s)",
                       (e, _hash(p), n, v))


def reset_mysql(params: dict) -> None:
    import pymysql

    db = pymysql.connect(autocommit=True, **params)
    try:
        with db.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS users")
            cur.execute(_schema("mysql"))
            for e, p, n, v in SEED:
                cur.execute("INSERT INTO users (email, password, nickname, email_verified) VALUES (%s, %s, %s, %s)",
                            (e, _hash(p), n, v))
    finally:
        db.close()


def legacy_sql(backend: str, params: dict | None, data_dir: Path, sql: str, args: tuple = ()) -> list:
    """Run SQL on the legacy database directly (to check or change rows behind the scripts)."""
    if backend == "sqlite":
        db = sqlite3.connect(data_dir / "legacy.db")
        try:
            rows = db.execute(sql.replace("%s", "?"), args).fetchall()
            db.commit()
            return rows
        finally:
            db.close()
    if backend == "postgres":
        import psycopg

        with psycopg.connect(autocommit=True, **params) as db:
            cur = db.execute(sql, args)
            return cur.fetchall() if cur.description else []
    import pymysql

    db = pymysql.connect(autocommit=True, **params)
    try:
        with db.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        db.close()


def configuration(backend: str, params: dict | None) -> dict:
    conf = {"BCRYPT_ROUNDS": ROUNDS}
    if backend == "sqlite":
        conf["DB_FILE"] = "legacy.db"
    return conf


def make_connection(tenant: str, root: Path, backend: str, params: dict | None, import_users: bool,
                    scripts: dict[str, str] | None = None) -> Connection:
    """A tenant folder under ``root`` with the backend's template scripts (or ``scripts`` sources)."""
    (root / "scripts").mkdir(parents=True)
    (root / "data").mkdir()
    if scripts is None:
        for name in SCRIPTS:
            shutil.copyfile(TEMPLATES_DIR / backend / f"{name}.py", root / "scripts" / f"{name}.py")
    else:
        for name, source in scripts.items():
            (root / "scripts" / f"{name}.py").write_text(source)
    if backend == "sqlite":
        reset_sqlite(root / "data" / "legacy.db")
    elif backend == "postgres":
        reset_postgres(params)
    elif backend == "mysql":
        reset_mysql(params)
    store = UserStore(tenant, path=str(root / "state" / "platform.db"), hasher=FAST_HASHER)
    return Connection(tenant=tenant, scripts_dir=root / "scripts", configuration=configuration(backend, params),
                      import_users=import_users, store=store, timeout=10.0)
