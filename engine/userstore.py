"""The platform's own user store, filled by automatic migration.

Embedded SQLite (``TENANT_DIR/state/platform.db``, outside the workers' writable ``data/``) by default; PostgreSQL for
operators who run several nodes against one store (``dsn=...`` or the
``SCRIPTVISOR_USER_STORE_DSN`` environment variable).  One schema, written in
SQL both understand; the only dialect difference is the placeholder.

Why it looks like this:
- ``(tenant, user_id)`` is the primary key and ``(tenant, email_key)`` unique,
  and users are inserted with ``ON CONFLICT DO NOTHING``: two nodes migrating
  the same user at the same moment end with one row, and both read it back.
- Passwords are bcrypt hashes (``sandbox.facades.crypto``), never plain text.
  ``password_hash`` is NULL for a user imported without a password (verified
  or renamed before their first login): their password still lives in the
  legacy database, so the next login goes through the legacy script once.
- ``sv_seen_ids`` remembers which ``user_id`` the scripts returned for an
  email, so ``login`` and ``get_user`` disagreeing is caught (engine.contract)
  in both modes.
- One connection per store, guarded by a lock: operations are a few indexed
  statements; the slow part, hashing, happens before the lock is taken.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from scriptvisor.sandbox.facades.crypto import DEFAULT_ROUNDS, check_password, hash_password

__all__ = ["StoredUser", "UserStore", "UserStoreError", "open_store"]

#: Environment variable naming a PostgreSQL DSN for a shared store.
DSN_ENV = "SCRIPTVISOR_USER_STORE_DSN"
#: File name of the embedded store inside the tenant's data directory.
SQLITE_FILE = "platform.db"
#: Advisory lock key held while creating the schema on PostgreSQL ("svusers").
SCHEMA_LOCK_KEY = 0x7376757365727300

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS sv_users (
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL,
        password_hash TEXT,
        email_verified BOOLEAN NOT NULL DEFAULT FALSE,
        profile TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, user_id),
        UNIQUE (tenant, email_key)
    )""",
    """CREATE TABLE IF NOT EXISTS sv_seen_ids (
        tenant TEXT NOT NULL,
        email_key TEXT NOT NULL,
        user_id TEXT NOT NULL,
        script TEXT NOT NULL,
        PRIMARY KEY (tenant, email_key)
    )""",
]

_COLUMNS = "user_id, email, password_hash, email_verified, profile, source"


class UserStoreError(Exception):
    """The store could not be opened or a statement failed (details in the message)."""


def email_key(email: str) -> str:
    """Emails compare case-insensitively (the legacy database may not; we do)."""
    return email.strip().lower()


@dataclass
class StoredUser:
    user_id: str
    email: str
    password_hash: str | None
    email_verified: bool
    profile: dict[str, Any] = field(default_factory=dict)
    source: str = "migrated"  # migrated | signup | imported

    def public_profile(self) -> dict[str, Any]:
        """The profile callers see: the stored one with the current id/email/verified."""
        out = dict(self.profile)
        out.update(user_id=self.user_id, email=self.email, email_verified=self.email_verified)
        return out


class UserStore:
    """One tenant's users in an embedded SQLite file or a shared PostgreSQL database."""

    def __init__(self, tenant: str, *, path: str | None = None, dsn: str | None = None,
                 rounds: int = DEFAULT_ROUNDS) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("give exactly one of path (sqlite) or dsn (postgres)")
        self.tenant = tenant
        self.rounds = rounds
        self._lock = threading.Lock()
        self.kind = "sqlite" if path else "postgres"
        try:
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
                self._db: Any = sqlite3.connect(path, timeout=10.0, isolation_level=None,
                                                check_same_thread=False)
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA busy_timeout = 10000")
            else:
                import psycopg

                self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            if self.kind == "postgres":
                # Nodes starting at once would race on CREATE TABLE IF NOT
                # EXISTS (a pg_type unique violation): serialise the DDL on a
                # transaction-scoped advisory lock.
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                    for ddl in _SCHEMA:
                        self._db.execute(ddl)
            else:
                for ddl in _SCHEMA:
                    self._db.execute(ddl)
        except Exception as exc:
            where = path or "the PostgreSQL user store"
            raise UserStoreError(f"cannot open the user store at {where}: {exc}") from exc
        self.location = path or "postgresql"

    # -- plumbing ------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.kind == "sqlite" else sql.replace("?", "%s")

    def _exec(self, sql: str, params: tuple = ()) -> Any:
        with self._lock:
            try:
                cur = self._db.execute(self._sql(sql), params)
                rows = cur.fetchall() if cur.description else None
                return rows if rows is not None else cur.rowcount
            except (sqlite3.Error, Exception) as exc:
                if isinstance(exc, UserStoreError):
                    raise
                raise UserStoreError(f"user store statement failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def hash(self, password: str) -> str:
        return hash_password(password, self.rounds)

    @staticmethod
    def _user(row: tuple) -> StoredUser:
        user_id, email, pw, verified, profile, source = row
        return StoredUser(user_id=user_id, email=email, password_hash=pw, email_verified=bool(verified),
                          profile=json.loads(profile), source=source)

    # -- users ---------------------------------------------------------------

    def find(self, email: str) -> StoredUser | None:
        rows = self._exec(f"SELECT {_COLUMNS} FROM sv_users WHERE tenant = ? AND email_key = ?",
                          (self.tenant, email_key(email)))
        return self._user(rows[0]) if rows else None

    def find_by_id(self, user_id: str) -> StoredUser | None:
        rows = self._exec(f"SELECT {_COLUMNS} FROM sv_users WHERE tenant = ? AND user_id = ?",
                          (self.tenant, str(user_id)))
        return self._user(rows[0]) if rows else None

    def insert(self, user: StoredUser) -> StoredUser:
        """Insert unless the id or email exists already; return the row that is stored.

        A concurrent insert of the same user (another node migrating it at
        the same time) is not an error: the existing row wins and is returned.
        """
        now = time.time()
        profile = {k: v for k, v in user.profile.items() if k not in ("user_id", "email", "email_verified")}
        self._exec(
            "INSERT INTO sv_users (tenant, user_id, email, email_key, password_hash, email_verified,"
            " profile, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (self.tenant, user.user_id, user.email, email_key(user.email), user.password_hash,
             bool(user.email_verified), json.dumps(profile), user.source, now, now),
        )
        stored = self.find_by_id(user.user_id) or self.find(user.email)
        if stored is None:  # deleted between insert and read: report what we meant to store
            return user
        return stored

    def verify_password(self, user: StoredUser, password: str) -> bool:
        return user.password_hash is not None and check_password(password, user.password_hash)

    def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        return self._exec("UPDATE sv_users SET password_hash = ?, updated_at = ? WHERE tenant = ? AND user_id = ?",
                          (password_hash, time.time(), self.tenant, user_id)) > 0

    def set_verified(self, user_id: str) -> bool:
        return self._exec("UPDATE sv_users SET email_verified = ?, updated_at = ? WHERE tenant = ? AND user_id = ?",
                          (True, time.time(), self.tenant, user_id)) > 0

    def set_email(self, user_id: str, new_email: str, verified: bool) -> bool:
        """Change the email; False when another user already has ``new_email``."""
        try:
            return self._exec(
                "UPDATE sv_users SET email = ?, email_key = ?, email_verified = ?, updated_at = ?"
                " WHERE tenant = ? AND user_id = ?",
                (new_email, email_key(new_email), bool(verified), time.time(), self.tenant, user_id)) > 0
        except UserStoreError as exc:
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                return False
            raise

    def delete(self, user_id: str) -> bool:
        return self._exec("DELETE FROM sv_users WHERE tenant = ? AND user_id = ?", (self.tenant, str(user_id))) > 0

    def count(self) -> int:
        return self._exec("SELECT count(*) FROM sv_users WHERE tenant = ?", (self.tenant,))[0][0]

    # -- user_id stability (engine.contract) -----------------------------------

    def seen_user_id(self, email: str, user_id: str, script: str) -> tuple[str, str] | None:
        """Remember ``user_id`` for ``email``; return the earlier (user_id, script) if it differs."""
        key = email_key(email)
        self._exec("INSERT INTO sv_seen_ids (tenant, email_key, user_id, script) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT DO NOTHING", (self.tenant, key, user_id, script))
        rows = self._exec("SELECT user_id, script FROM sv_seen_ids WHERE tenant = ? AND email_key = ?",
                          (self.tenant, key))
        if rows and rows[0][0] != user_id:
            return (rows[0][0], rows[0][1])
        return None

    def forget_seen(self, *, email: str | None = None, user_id: str | None = None) -> None:
        """Forget a remembered id (after delete or email change, a new id is legitimate)."""
        if email is not None:
            self._exec("DELETE FROM sv_seen_ids WHERE tenant = ? AND email_key = ?", (self.tenant, email_key(email)))
        if user_id is not None:
            self._exec("DELETE FROM sv_seen_ids WHERE tenant = ? AND user_id = ?", (self.tenant, str(user_id)))


_stores: dict[tuple[str, str, int], UserStore] = {}
_stores_lock = threading.Lock()


def open_store(tenant: str, state_dir: str, *, dsn: str | None = None, rounds: int = DEFAULT_ROUNDS) -> UserStore:
    """The (cached) store for a tenant: PostgreSQL when a DSN is given or set, else sqlite."""
    dsn = dsn or os.environ.get(DSN_ENV) or None
    location = dsn or os.path.join(os.path.realpath(state_dir), SQLITE_FILE)
    key = (tenant, location, rounds)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if dsn:
                store = UserStore(tenant, dsn=dsn, rounds=rounds)
            else:
                os.makedirs(state_dir, mode=0o700, exist_ok=True)
                store = UserStore(tenant, path=location, rounds=rounds)
            _stores[key] = store
        return store


def close_stores() -> None:
    """Close every cached store (CLI exit, tests)."""
    with _stores_lock:
        for store in _stores.values():
            try:
                store.close()
            except Exception:
                pass
        _stores.clear()
