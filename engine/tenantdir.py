"""``scriptvisor init``: create a working tenant folder from a template.

    TENANT_DIR/tenant.toml       configuration, import_users, limits, declared databases
    TENANT_DIR/scripts/*.py      the seven action scripts of templates/<template>/
    TENANT_DIR/schema.sql        the users table those scripts expect (database templates)
    TENANT_DIR/README.md         what the template does and how to try it
    TENANT_DIR/data/             the tenant's data directory
    TENANT_DIR/data/legacy.db    (sqlite only) a seeded example legacy database

The ``webservice`` template talks to a legacy REST API instead of a database:
its tenant.toml declares the API as an ``[[http]]`` endpoint and gets a fresh
random ``API_KEY``; ``scriptvisor legacy-api --tenant-dir TENANT_DIR`` serves
the reference API (``engine.legacy_api``) with that key on the declared port.

The layout is the one ``engine.tenants`` loads (and ``scriptvisor serve``
serves).  The example legacy database holds ``alice@example.com`` /
``wonderland`` (and ``bob@example.com`` / ``builder``) so that
``scriptvisor connection login`` works right away.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import secrets
import shutil
import sqlite3
from pathlib import Path

from scriptvisor.engine.names import tenant_name_problem
from scriptvisor.engine.names import TENANT_NAME
from scriptvisor.sandbox.facades.crypto import DEFAULT_ROUNDS, hash_password

__all__ = ["SCRIPTS", "TEMPLATES", "TEMPLATES_DIR", "InitError", "default_secrets_dir", "init_tenant",
           "seed_sqlite"]

#: Where the shipped templates live: package data of ``scriptvisor.templates``
#: (the repository's ``templates/`` in a checkout, site-packages in a wheel).
TEMPLATES_DIR = Path(str(importlib.resources.files("scriptvisor.templates")))
TEMPLATES = ("sqlite", "postgres", "mysql", "webservice")
#: The seven action scripts every template ships.
SCRIPTS = ("login", "get_user", "create", "verify", "change_password", "delete", "change_email")
#: Example users of the seeded sqlite legacy database: (email, password, nickname, verified).
EXAMPLE_USERS = (
    ("alice@example.com", "wonderland", "alice", True),
    ("bob@example.com", "builder", "bob", False),
)


class InitError(Exception):
    """The tenant folder cannot be created (message says why and what to do)."""


def seed_sqlite(path: str | os.PathLike[str], users=EXAMPLE_USERS, *, rounds: int = DEFAULT_ROUNDS,
                schema: str | None = None) -> None:
    """Create the users table in ``path`` and insert ``users`` with bcrypt-hashed passwords."""
    schema = schema or (TEMPLATES_DIR / "sqlite" / "schema.sql").read_text(encoding="utf-8")
    db = sqlite3.connect(path)
    try:
        db.executescript(schema)
        for email, password, nickname, verified in users:
            db.execute("INSERT INTO users (email, password, nickname, email_verified) VALUES (?, ?, ?, ?)",
                       (email, hash_password(password, rounds), nickname, int(verified)))
        db.commit()
    finally:
        db.close()


def _set_import_users(toml_text: str, import_users: bool) -> str:
    value = "true" if import_users else "false"
    new, n = re.subn(r"(?m)^import_users\s*=\s*(true|false)", f"import_users = {value}", toml_text)
    if n != 1:
        raise InitError("template tenant.toml has no single import_users line")
    return new


def _set_api_key(toml_text: str) -> str:
    new, n = re.subn(r'(?m)^API_KEY\s*=\s*"change-me"', f'API_KEY = "{secrets.token_urlsafe(24)}"', toml_text)
    if n != 1:
        raise InitError('template tenant.toml has no single API_KEY = "change-me" line')
    return new


def default_secrets_dir() -> Path:
    """Where ``db setup`` keeps database passwords: outside every tenant folder,
    readable by the operator only (``$SCRIPTVISOR_SECRETS_DIR`` overrides)."""
    env = os.environ.get("SCRIPTVISOR_SECRETS_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/scriptvisor/secrets")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "scriptvisor" / "secrets"


def _declare_database(toml_text: str, tenant: str, secrets_dir: Path) -> str:
    """Fill the template's [[databases]] placeholders: names derived from the tenant."""
    ident = re.sub(r"[^a-z0-9_]", "_", tenant)[:50]
    values = {"@DATABASE@": f"{ident}_legacy", "@USER@": f"{ident}_legacy",
              "@PASSWORD_FILE@": str(secrets_dir.resolve() / f"{tenant}.legacy.password")}
    for key, value in values.items():
        toml_text = toml_text.replace(key, value)
    return toml_text


def init_tenant(tenant_dir: str | os.PathLike[str], template: str, import_users: bool = False, *,
                seed_rounds: int = DEFAULT_ROUNDS, secrets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create ``tenant_dir`` from ``templates/<template>``; return its path.

    Refuses a non-empty existing folder (nothing is overwritten) and a folder
    name the server could not serve.  For postgres/mysql the tenant.toml
    declares the legacy database (``<tenant>_legacy``, role of the same name,
    password file in ``secrets_dir``) that ``scriptvisor db setup`` creates.
    """
    if template not in TEMPLATES:
        raise InitError(f"unknown template {template!r} (choose one of: {', '.join(TEMPLATES)})")
    source = TEMPLATES_DIR / template
    if not source.is_dir():
        raise InitError(f"template folder {source} is missing: the installation is incomplete; reinstall scriptvisor")
    root = Path(tenant_dir)
    if not TENANT_NAME.match(root.resolve().name):
        raise InitError(f"tenant folder name {root.resolve().name!r} becomes the tenant name: "
                        + str(tenant_name_problem(root.resolve().name)))
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InitError(f"{root} exists and is not an empty folder; choose a new one")
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    for script in SCRIPTS:
        shutil.copyfile(source / f"{script}.py", root / "scripts" / f"{script}.py")
    if (source / "schema.sql").is_file():
        shutil.copyfile(source / "schema.sql", root / "schema.sql")
    shutil.copyfile(source / "README.md", root / "README.md")
    toml_text = _set_import_users((source / "tenant.toml").read_text(encoding="utf-8"), import_users)
    if template == "webservice":
        toml_text = _set_api_key(toml_text)
    secrets_root = Path(secrets_dir) if secrets_dir is not None else default_secrets_dir()
    if secrets_root.resolve().is_relative_to(root.resolve()):
        raise InitError(f"secrets folder {secrets_root} is inside the tenant folder: the tenant's scripts could read it")
    toml_text = _declare_database(toml_text, root.resolve().name, secrets_root)
    (root / "tenant.toml").write_text(toml_text, encoding="utf-8")
    if template == "sqlite":
        seed_sqlite(root / "data" / "legacy.db", rounds=seed_rounds,
                    schema=(source / "schema.sql").read_text(encoding="utf-8"))
    return root
