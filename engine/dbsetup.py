"""``scriptvisor db setup``: give a PostgreSQL or MySQL tenant its legacy database.

For every postgres/mysql ``[[databases]]`` declaration of a tenant folder
(``scriptvisor init --template postgres|mysql`` writes one), with the
operator's admin connection:

1. creates the database (``database``) unless it exists;
2. creates (or resets the password of) the declared ``user`` as a
   least-privileged role: PostgreSQL ``LOGIN NOSUPERUSER NOCREATEDB
   NOCREATEROLE NOINHERIT CONNECTION LIMIT <db_connections_per_tenant>``,
   CONNECT on its database only (PUBLIC's CONNECT revoked, so no other
   tenant's role gets in); MySQL ``'user'@'%' WITH MAX_USER_CONNECTIONS <n>``
   with no global privilege;
3. loads the tenant's ``schema.sql`` and grants SELECT, INSERT, UPDATE,
   DELETE on its tables (and USAGE on its sequences) to the role: no DDL,
   no FILE, no server programs;
4. seeds the example users (alice@example.com / wonderland, bob@example.com
   / builder) when the users table is empty;
5. writes a generated password to the declaration's ``password_file``
   (mode 0600, owned by the operator running the command, outside the tenant
   folder: the tenant's worker uid can neither read it nor reach it through
   Landlock), or prints the ``export`` line for a ``password_env``.

Running it again is safe: it keeps the data and rotates the password.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from scriptvisor.engine.databases import DatabaseDecl
from scriptvisor.engine.tenantdir import EXAMPLE_USERS
from scriptvisor.sandbox.facades.crypto import DEFAULT_ROUNDS, hash_password

__all__ = ["DEFAULT_ADMIN", "SetupError", "setup_database", "setup_tenant"]

#: Admin connection used when ``--admin-dsn`` is not given (the local servers' defaults).
DEFAULT_ADMIN = {"postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
                 "mysql": "mysql://root@127.0.0.1:3306/"}


class SetupError(Exception):
    """The setup could not finish; the message says why and what to do."""


@dataclass
class Done:
    name: str
    driver: str
    database: str
    user: str
    secret: str  # where the password went


def _mysql_kwargs(dsn: str) -> dict[str, Any]:
    from urllib.parse import unquote, urlsplit

    u = urlsplit(dsn)
    if u.scheme not in ("mysql", "mariadb"):
        raise SetupError(f"MySQL admin DSN must look like mysql://user:password@host:port/ (got {u.scheme}://)")
    return {"host": u.hostname or "127.0.0.1", "port": u.port or 3306, "user": unquote(u.username or "root"),
            "password": unquote(u.password or "")}


def _users(rounds: int) -> list[tuple[str, str, str, bool]]:
    return [(email, hash_password(pw, rounds), nick, verified) for email, pw, nick, verified in EXAMPLE_USERS]


def setup_postgres(decl: DatabaseDecl, admin_dsn: str, password: str, schema: str, *,
                   connection_limit: int, rounds: int = DEFAULT_ROUNDS) -> None:
    import psycopg
    from psycopg import sql

    db, role = sql.Identifier(decl.database), sql.Identifier(decl.user)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (decl.user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(sql.SQL("{} ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                              "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}").format(
            sql.SQL(verb), role, sql.Literal(password), sql.Literal(connection_limit)))
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (decl.database,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(db))
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))
        info = admin.info
        params = {"host": info.host, "port": info.port, "user": info.user, "dbname": decl.database}
        if info.password:
            params["password"] = info.password
    with psycopg.connect(**params, autocommit=True, connect_timeout=5) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(schema)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
        if not conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            for email, hashed, nick, verified in _users(rounds):
                conn.execute("INSERT INTO users (email, password, nickname, email_verified) VALUES (%s, %s, %s, %s)",
                             (email, hashed, nick, verified))


def setup_mysql(decl: DatabaseDecl, admin_dsn: str, password: str, schema: str, *,
                connection_limit: int, rounds: int = DEFAULT_ROUNDS) -> None:
    import pymysql

    kwargs = _mysql_kwargs(admin_dsn)
    admin = pymysql.connect(**kwargs, autocommit=True, connect_timeout=5)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{decl.database}` CHARACTER SET utf8mb4")
            cur.execute(f"CREATE USER IF NOT EXISTS '{decl.user}'@'%%' IDENTIFIED BY %s", (password,))
            cur.execute(f"ALTER USER '{decl.user}'@'%%' IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS %s",
                        (password, connection_limit))
            cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{decl.database}`.* TO '{decl.user}'@'%'")
            cur.execute(f"USE `{decl.database}`")
            cur.execute(schema)
            cur.execute("SELECT 1 FROM users LIMIT 1")
            if cur.fetchone() is None:
                for email, hashed, nick, verified in _users(rounds):
                    cur.execute("INSERT INTO users (email, password, nickname, email_verified) "
                                "VALUES (%s, %s, %s, %s)", (email, hashed, nick, verified))
    finally:
        admin.close()


def write_secret(path: str, password: str) -> None:
    """``path`` holds the password, mode 0600, created atomically (never world-readable)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (password + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def setup_database(decl: DatabaseDecl, admin_dsn: str | None, schema: str, *, connection_limit: int,
                   rounds: int = DEFAULT_ROUNDS, password: str | None = None) -> Done:
    """Set up one declaration; returns where its password went."""
    if decl.driver not in ("postgres", "mysql"):
        raise SetupError(f"database {decl.name!r} is {decl.driver}: nothing to set up")
    password = password or secrets.token_urlsafe(24)
    admin = admin_dsn or DEFAULT_ADMIN[decl.driver]
    try:
        if decl.driver == "postgres":
            setup_postgres(decl, admin, password, schema, connection_limit=connection_limit, rounds=rounds)
        else:
            setup_mysql(decl, admin, password, schema, connection_limit=connection_limit, rounds=rounds)
    except SetupError:
        raise
    except Exception as exc:
        raise SetupError(f"setting up {decl.driver} database {decl.database!r} failed: "
                         f"{' '.join(str(exc).split())[:500]}") from None
    if decl.password_file:
        write_secret(decl.password_file, password)
        where = decl.password_file
    elif decl.password_env:
        where = f"export {decl.password_env}={password}"
    else:
        raise SetupError(f"database {decl.name!r} declares neither password_file nor password_env")
    return Done(decl.name, decl.driver, decl.database, decl.user, where)


def setup_tenant(tenant_dir: str | os.PathLike[str], admin_dsn: str | None = None, *,
                 rounds: int = DEFAULT_ROUNDS, echo: Callable[[str], None] = lambda s: None) -> list[Done]:
    """Set up every postgres/mysql database a tenant folder declares."""
    from scriptvisor.engine.tenants import TenantConfigError, load_tenant

    root = Path(tenant_dir)
    try:
        tenant = load_tenant(root)
    except TenantConfigError as exc:
        raise SetupError(str(exc)) from None
    decls = [d for d in tenant.databases if d.driver in ("postgres", "mysql")]
    if not decls:
        raise SetupError(f"{root / 'tenant.toml'} declares no postgres or mysql [[databases]]")
    schema_file = root / "schema.sql"
    try:
        schema = schema_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"cannot read {schema_file}: {exc.strerror}") from None
    done = []
    for decl in decls:
        d = setup_database(decl, admin_dsn, schema, connection_limit=tenant.limits.db_connections_per_tenant,
                           rounds=rounds)
        echo(f"{d.driver} database {d.database!r} ready for role {d.user!r} "
             f"(declared as {d.name!r}); password: {d.secret}")
        done.append(d)
    return done
