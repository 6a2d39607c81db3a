"""Operator-declared database endpoints: ``[[databases]]`` in ``tenant.toml``.

A tenant's scripts may open only the databases its operator declared::

    [[databases]]
    name = "legacy"              # what scripts name: postgres.connect("legacy")
    driver = "postgres"          # sqlite | postgres | mysql
    host = "127.0.0.1"
    port = 5432
    database = "acme_legacy"
    user = "acme_legacy"
    password_file = "/etc/scriptvisor/secrets/acme.legacy.password"
    # or: password_env = "SCRIPTVISOR_ACME_LEGACY_PASSWORD"

Why declarations instead of connect arguments: a script that picks host, user
and database can reach any database and role on an allowed port (another
tenant's, the platform user store, a superuser).  With declarations the
script names an endpoint; host, port, database, user and secret come from the
operator.  The secret never appears in ``configuration`` (scripts read that)
nor in the tenant folder (the tenant's workers can read parts of it): it is
read by the supervisor from its environment or from a file outside the tenant
folder (``scriptvisor db setup`` writes one, mode 0600, owned by the
supervisor's user) and handed to the tenant's workers inside their spawn
policy.  A sqlite declaration names a file in the tenant's data directory.

``Tenant.egress`` lists the (host, port) pairs the declarations name: the OS
egress layer (``engine.egress``) lets a tenant's workers connect to exactly
those.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["DRIVERS", "DatabaseDecl", "DeclarationError", "parse_databases"]

DRIVERS = ("sqlite", "postgres", "mysql")
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
#: Declared names: what scripts pass to ``connect``.
DECL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: Database and user names we accept (they end up in SQL the setup command runs).
SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SQLITE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")
MAX_DECLARATIONS = 16
MAX_SECRET_BYTES = 4096
KEYS = frozenset({"name", "driver", "host", "port", "database", "user", "password_env", "password_file"})


class DeclarationError(Exception):
    """A ``[[databases]]`` entry that cannot be used: ``key`` names the field."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class DatabaseDecl:
    name: str
    driver: str
    database: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    #: The resolved secret (None: none declared, or unavailable: see ``secret_error``).
    password: str | None = field(default=None, repr=False)
    secret_error: str | None = None

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """(host, port) a worker connects to; None for sqlite."""
        if self.driver == "sqlite" or self.host is None or self.port is None:
            return None
        return (self.host, self.port)

    def describe(self) -> str:
        if self.driver == "sqlite":
            return f"{self.name} (sqlite {self.database})"
        return f"{self.name} ({self.driver} {self.user}@{self.host}:{self.port}/{self.database})"

    def to_policy(self) -> dict[str, Any]:
        """What a worker needs to connect (travels in the spawn policy, never to scripts)."""
        return {"name": self.name, "driver": self.driver, "host": self.host, "port": self.port,
                "database": self.database, "user": self.user, "password": self.password,
                "secret_error": self.secret_error}


def read_secret(decl: DatabaseDecl, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(password, error)`` for a declaration; the error says what to do."""
    if decl.password_env:
        value = environ.get(decl.password_env)
        if value is None:
            return None, (f"environment variable {decl.password_env} (password of database "
                          f"{decl.name!r}) is not set on the server")
        return value, None
    if decl.password_file:
        try:
            with open(decl.password_file, "rb") as fh:
                data = fh.read(MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            return None, (f"password file {decl.password_file} of database {decl.name!r} does not exist "
                          "(create it with: scriptvisor db setup --tenant-dir DIR)")
        except OSError as exc:
            return None, f"cannot read password file {decl.password_file}: {exc.strerror}"
        if len(data) > MAX_SECRET_BYTES:
            return None, f"password file {decl.password_file} is larger than {MAX_SECRET_BYTES} bytes"
        try:
            return data.decode("utf-8").strip("\r\n"), None
        except UnicodeDecodeError:
            return None, f"password file {decl.password_file} is not UTF-8 text"
    return None, None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def parse_databases(raw: Any, root: Path, environ: Mapping[str, str]) -> tuple[DatabaseDecl, ...]:
    """Validate the ``databases`` array of a tenant.toml. Raises ``DeclarationError``."""
    if not isinstance(raw, list):
        raise DeclarationError("databases", "must be an array of [[databases]] tables")
    if len(raw) > MAX_DECLARATIONS:
        raise DeclarationError("databases", f"at most {MAX_DECLARATIONS} declarations")
    out: list[DatabaseDecl] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"databases[{i}]"
        if not isinstance(item, dict):
            raise DeclarationError(where, "must be a table")
        extra = set(item) - KEYS
        if extra:
            raise DeclarationError(f"{where}.{sorted(extra)[0]}",
                                   f"unknown key (known: {', '.join(sorted(KEYS))})")
        name = item.get("name")
        if not isinstance(name, str) or not DECL_NAME.match(name):
            raise DeclarationError(f"{where}.name", "must be an identifier (letters, digits, '_')")
        if name in seen:
            raise DeclarationError(f"{where}.name", f"database {name!r} is declared twice")
        seen.add(name)
        driver = item.get("driver")
        if driver not in DRIVERS:
            raise DeclarationError(f"{where}.driver", f"must be one of {', '.join(DRIVERS)}")
        database = item.get("database")
        if driver == "sqlite":
            if not isinstance(database, str) or not SQLITE_FILE.match(database) or ".." in database:
                raise DeclarationError(f"{where}.database", "must be a plain file name in the data directory")
            bad = {"host", "port", "user", "password_env", "password_file"} & set(item)
            if bad:
                raise DeclarationError(f"{where}.{sorted(bad)[0]}", "not used by a sqlite database")
            out.append(DatabaseDecl(name=name, driver=driver, database=database))
            continue
        if not isinstance(database, str) or not SQL_NAME.match(database):
            raise DeclarationError(f"{where}.database", "must be a database name (letters, digits, '_')")
        host = item.get("host", "127.0.0.1")
        if not isinstance(host, str) or not HOST.match(host):
            raise DeclarationError(f"{where}.host", "must be a host name or IP address")
        port = item.get("port", DEFAULT_PORTS[driver])
        if type(port) is not int or not 1 <= port <= 65535:
            raise DeclarationError(f"{where}.port", "must be an integer port 1..65535")
        user = item.get("user")
        if not isinstance(user, str) or not SQL_NAME.match(user):
            raise DeclarationError(f"{where}.user", "must be a role name (letters, digits, '_')")
        penv, pfile = item.get("password_env"), item.get("password_file")
        if penv is not None and pfile is not None:
            raise DeclarationError(f"{where}.password_env", "set password_env or password_file, not both")
        if penv is not None and (not isinstance(penv, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", penv)):
            raise DeclarationError(f"{where}.password_env", "must name an environment variable")
        if pfile is not None:
            if not isinstance(pfile, str) or not os.path.isabs(pfile):
                raise DeclarationError(f"{where}.password_file", "must be an absolute path")
            if _inside(Path(pfile), root):
                raise DeclarationError(f"{where}.password_file",
                                       "must be outside the tenant folder (the tenant's scripts could read it)")
        decl = DatabaseDecl(name=name, driver=driver, database=database, host=host, port=port, user=user,
                            password_env=penv, password_file=pfile)
        password, error = read_secret(decl, environ)
        out.append(replace(decl, password=password, secret_error=error))
    return tuple(out)
