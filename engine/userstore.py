"""The platform's own user store, filled by automatic migration.

Embedded SQLite (``TENANT_DIR/state/platform.db``, outside the workers' writable ``data/``) by default; PostgreSQL for
operators who run several nodes against one store (``dsn=...`` or the
``SCRIPTVISOR_USER_STORE_DSN`` environment variable).  One schema, written in
SQL both understand; the only dialect difference is the placeholder.

Why it looks like this:
- One identity key (``email_key``): an email trimmed, NFKC-normalised and
  lowercased (not case-folded: casefold's ``ß`` -> ``ss`` merges addresses a
  legacy table keeps apart, which the existence check cannot find).  ``(tenant, user_id)`` is the primary key and ``(tenant,
  email_key)`` unique, so a case, space or compatibility-form variant of an
  existing user is that user, never a second one (docs/action-scripts.md).
- ``insert`` never hands back a row other than the one it was asked to store:
  the same user inserted twice (two nodes migrating it at once) returns the
  stored row, anything else that collides on the id or the email key raises
  ``IdentityClash`` naming the row already there.
- Passwords are argon2id hashes (``engine.hashing``), never plain text;
  bcrypt hashes from earlier versions are verified and replaced on the next
  successful login.  ``password_hash`` is NULL for a user imported without a
  password (verified or renamed before their first login): their password
  still lives in the legacy database, and ``legacy_email`` is the address the
  legacy ``login`` script knows them by.
- ``sv_seen_ids`` remembers which ``user_id`` the scripts returned for an
  identity key, so ``login`` and ``get_user`` disagreeing is caught
  (engine.contract) in both modes; ``delete`` forgets them.
- Healing (PostgreSQL): a small connection pool per tenant (psycopg-pool)
  whose connections are checked before use, so the first call after a
  database restart reconnects instead of failing on a dead socket.
- Every statement is bounded by the calling invocation's remaining time
  (``call_with_deadline``): ``statement_timeout`` on PostgreSQL, a progress
  handler and ``busy_timeout`` on SQLite; running out is ``UserStoreTimeout``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from scriptvisor.engine.hashing import DEFAULT_HASHER, Hasher

__all__ = ["IdentityClash", "StoredUser", "UserStore", "UserStoreError", "UserStoreTimeout",
           "call_with_deadline", "email_key", "open_store", "store_health"]

#: Environment variable naming a PostgreSQL DSN for a shared store.
DSN_ENV = "SCRIPTVISOR_USER_STORE_DSN"
#: File name of the embedded store inside the tenant's data directory.
SQLITE_FILE = "platform.db"
#: Advisory lock key held while creating the schema on PostgreSQL ("svusers").
SCHEMA_LOCK_KEY = 0x7376757365727300
#: Longest a store call may take when no invocation deadline applies (CLI, tests).
DEFAULT_CALL_SECONDS = 10.0
#: PostgreSQL connections per tenant store: the bound on one tenant's store work.
POOL_MAX = 4

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
        legacy_email TEXT,
        PRIMARY KEY (tenant, user_id),
        UNIQUE (tenant, email_key)
    )""",
    """CREATE TABLE IF NOT EXISTS sv_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sv_seen_ids (
        tenant TEXT NOT NULL,
        email_key TEXT NOT NULL,
        user_id TEXT NOT NULL,
        script TEXT NOT NULL,
        PRIMARY KEY (tenant, email_key)
    )""",
]

#: Version of ``email_key`` the stored keys were computed with (table sv_meta).
KEY_VERSION = "nfkc-lower-1"
#: Earlier versions whose remembered ids cannot be re-keyed (their key folded
#: "ß" and "ss" together: which one a remembered key came from is unknown).
_LOSSY_KEY_VERSIONS = ("nfkc-casefold-1",)

_COLUMNS = "user_id, email, password_hash, email_verified, profile, source, legacy_email"


class UserStoreError(Exception):
    """The store could not be opened or a statement failed (details in the message)."""


class UserStoreTimeout(UserStoreError):
    """A store call ran out of the invocation's remaining time (lock wait, slow statement)."""


class UserStoreConflict(UserStoreError):
    """A statement broke a uniqueness rule (id or email key taken)."""


class IdentityClash(Exception):
    """``insert`` met a different user on the id or the email key; ``existing`` is that row."""

    def __init__(self, wanted: "StoredUser", existing: "StoredUser | None") -> None:
        super().__init__(f"user_id {wanted.user_id!r} / {wanted.email!r} clashes with stored user "
                         f"{existing.user_id if existing else '?'!r} / {existing.email if existing else '?'!r}")
        self.wanted = wanted
        self.existing = existing


def email_key(email: str) -> str:
    """The identity key: trimmed, NFKC-normalised, lowercased (docs/action-scripts.md).

    NFKC folds compatibility forms (fullwidth letters, ligatures, superscripts)
    into their plain letters.  ``lower()``, not ``casefold()``: casefold also
    folds "ß" into "ss" and "ς" into "σ", which makes a legacy user with one
    form the same key as a different address with the other, and the legacy
    existence check (``get_user`` asked for the key's form) cannot find them.
    Look-alikes from other scripts (a Cyrillic "а" for a Latin "a") are
    different characters and so different keys.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email.strip()).lower())
    return folded.strip()


def _fetch(cur: Any) -> list:
    return cur.fetchall() if cur.description else []


def _upgrade_keys(execute: Callable[..., list]) -> list[tuple[str, str, str]]:
    """Recompute stored identity keys made by an earlier ``email_key`` (lower/strip only), once.

    Runs inside the schema transaction.  A user row whose new key another row
    of the tenant already holds keeps its old key and is returned as
    (tenant, user_id, email) for the operator; a remembered id whose new key is
    taken is dropped (it is a consistency hint, not data).
    """
    done = execute("SELECT value FROM sv_meta WHERE name = 'identity_key'")
    if done and done[0][0] == KEY_VERSION:
        return []
    if done and done[0][0] in _LOSSY_KEY_VERSIONS:
        execute("DELETE FROM sv_seen_ids")  # hints only: re-learnt on the next login or get_user
    conflicts = []
    for tenant, user_id, email, key in execute("SELECT tenant, user_id, email, email_key FROM sv_users"):
        new = email_key(email)
        if new == key:
            continue
        if execute("SELECT 1 FROM sv_users WHERE tenant = ? AND email_key = ?", (tenant, new)):
            conflicts.append((tenant, user_id, email))
            _log.warning("user store upgrade: %s user %s (%s) keeps its old key: another user has %s",
                         tenant, user_id, email, new)
        else:
            execute("UPDATE sv_users SET email_key = ? WHERE tenant = ? AND user_id = ?", (new, tenant, user_id))
    for tenant, key in execute("SELECT tenant, email_key FROM sv_seen_ids"):
        new = email_key(key)
        if new == key:
            continue
        if execute("SELECT 1 FROM sv_seen_ids WHERE tenant = ? AND email_key = ?", (tenant, new)):
            execute("DELETE FROM sv_seen_ids WHERE tenant = ? AND email_key = ?", (tenant, key))
        else:
            execute("UPDATE sv_seen_ids SET email_key = ? WHERE tenant = ? AND email_key = ?", (new, tenant, key))
    execute("DELETE FROM sv_meta WHERE name = 'identity_key'")
    execute("INSERT INTO sv_meta (name, value) VALUES ('identity_key', ?)", (KEY_VERSION,))
    return conflicts


_local = threading.local()
_log = logging.getLogger("scriptvisor.userstore")


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Store calls in this thread must finish by ``at`` (``time.monotonic()`` seconds)."""
    before = getattr(_local, "deadline", None)
    _local.deadline = at
    try:
        yield
    finally:
        _local.deadline = before


def call_with_deadline(at: float | None, fn: Callable[..., Any], *args: Any) -> Any:
    with deadline(at):
        return fn(*args)


def remaining() -> float:
    """Seconds the current store call may take; ``UserStoreTimeout`` when none are left."""
    budget = DEFAULT_CALL_SECONDS
    at = getattr(_local, "deadline", None)
    if at is not None:
        budget = min(budget, at - time.monotonic())
    if budget <= 0.001:
        raise UserStoreTimeout("the invocation has no time left for the user store")
    return budget


@dataclass
class StoredUser:
    user_id: str
    email: str
    password_hash: str | None
    email_verified: bool
    profile: dict[str, Any] = field(default_factory=dict)
    source: str = "migrated"  # migrated | signup | imported
    #: The email the legacy database knows this user by (None for signups).
    legacy_email: str | None = None

    @property
    def key(self) -> str:
        return email_key(self.email)

    def public_profile(self) -> dict[str, Any]:
        """The profile callers see: the stored one with the current id/email/verified."""
        out = dict(self.profile)
        out.update(user_id=self.user_id, email=self.email, email_verified=self.email_verified)
        return out


class UserStore:
    """One tenant's users in an embedded SQLite file or a shared PostgreSQL database."""

    def __init__(self, tenant: str, *, path: str | None = None, dsn: str | None = None,
                 hasher: Hasher = DEFAULT_HASHER, pool_max: int = POOL_MAX) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("give exactly one of path (sqlite) or dsn (postgres)")
        self.tenant = tenant
        self.hasher = hasher
        #: Rows whose key could not be recomputed at an upgrade (another row has the new key).
        self.key_conflicts: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self.kind = "sqlite" if path else "postgres"
        self._db: Any = None
        self._pool: Any = None
        try:
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
                self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA busy_timeout = 10000")
                for ddl in _SCHEMA:
                    self._db.execute(ddl)
                cols = {row[1] for row in self._db.execute("PRAGMA table_info(sv_users)")}
                if "legacy_email" not in cols:  # a store made by an earlier version
                    self._db.execute("ALTER TABLE sv_users ADD COLUMN legacy_email TEXT")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self.key_conflicts = _upgrade_keys(lambda q, a=(): self._db.execute(q, a).fetchall())
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            else:
                import psycopg_pool

                # check_connection runs before a pooled connection is handed
                # out: a connection the server closed (restart, failover,
                # pg_terminate_backend) is replaced instead of failing a call.
                self._pool = psycopg_pool.ConnectionPool(
                    dsn, min_size=1, max_size=max(1, pool_max), open=False, name=f"sv-store-{tenant}",
                    kwargs={"autocommit": True, "connect_timeout": 10,
                            "application_name": f"scriptvisor-store-{tenant}"[:63]},
                    check=psycopg_pool.ConnectionPool.check_connection, timeout=DEFAULT_CALL_SECONDS,
                    reconnect_timeout=0)
                self._pool.open(wait=True, timeout=10.0)
                # Nodes starting at once would race on CREATE TABLE IF NOT
                # EXISTS (a pg_type unique violation): serialise the DDL on a
                # transaction-scoped advisory lock.
                with self._pool.connection() as db, db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                    for ddl in _SCHEMA:
                        db.execute(ddl)
                    db.execute("ALTER TABLE sv_users ADD COLUMN IF NOT EXISTS legacy_email TEXT")
                    self.key_conflicts = _upgrade_keys(
                        lambda q, a=(): _fetch(db.execute(q.replace("?", "%s"), a)))
        except Exception as exc:
            if self._pool is not None:
                self._pool.close()
            where = path or "the PostgreSQL user store"
            raise UserStoreError(f"cannot open the user store at {where}: {exc}") from exc
        self.location = path or "postgresql"

    # -- plumbing ------------------------------------------------------------

    def _exec(self, sql: str, params: tuple = ()) -> Any:
        budget = remaining()
        if self.kind == "sqlite":
            return self._exec_sqlite(sql, params, budget)
        return self._exec_pg(sql.replace("?", "%s"), params, budget)

    @staticmethod
    def _rows(cur: Any) -> Any:
        rows = cur.fetchall() if cur.description else None
        return rows if rows is not None else cur.rowcount

    def _exec_sqlite(self, sql: str, params: tuple, budget: float) -> Any:
        if not self._lock.acquire(timeout=budget):
            raise UserStoreTimeout(f"the user store was busy for {budget:.2f} s (the invocation's remaining time)")
        try:
            if self._db is None:
                raise UserStoreError("the user store is closed")
            end = time.monotonic() + budget
            self._db.execute(f"PRAGMA busy_timeout = {max(1, int(budget * 1000))}")
            self._db.set_progress_handler(lambda: time.monotonic() > end, 1000)
            try:
                return self._rows(self._db.execute(sql, params))
            finally:
                self._db.set_progress_handler(None, 0)
        except sqlite3.IntegrityError as exc:
            raise UserStoreConflict(f"user store statement refused: {exc}") from exc
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "interrupted" in text or "locked" in text or "busy" in text:
                raise UserStoreTimeout(f"user store statement did not finish in {budget:.2f} s: {exc}") from exc
            raise UserStoreError(f"user store statement failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise UserStoreError(f"user store statement failed: {exc}") from exc
        finally:
            self._lock.release()

    def _exec_pg(self, sql: str, params: tuple, budget: float) -> Any:
        import psycopg
        import psycopg_pool

        try:
            with self._pool.connection(timeout=budget) as db, db.transaction():
                left = remaining()  # the wait for a connection counted too
                db.execute("SELECT set_config('statement_timeout', %s, true)", (str(max(1, int(left * 1000))),))
                return self._rows(db.execute(sql, params))
        except psycopg_pool.PoolTimeout as exc:
            raise UserStoreTimeout(f"no user store connection within {budget:.2f} s: {exc}") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise UserStoreTimeout(f"user store statement did not finish in {budget:.2f} s") from exc
        except psycopg.errors.IntegrityError as exc:
            raise UserStoreConflict(f"user store statement refused: {exc}") from exc
        except (psycopg.Error, psycopg_pool.PoolClosed) as exc:
            raise UserStoreError(f"user store statement failed: {exc}") from exc

    def health(self) -> dict[str, Any]:
        """``{"ok": bool, "kind": ..., "error"?: ...}`` after one trivial statement (for /readyz)."""
        try:
            with deadline(time.monotonic() + 2.0):
                self._exec("SELECT 1")
            return {"ok": True, "kind": self.kind}
        except UserStoreError as exc:
            return {"ok": False, "kind": self.kind, "error": str(exc)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- passwords (hashing happens outside any lock) ---------------------------

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_password(self, user: StoredUser, password: str) -> bool:
        return user.password_hash is not None and self.hasher.verify(user.password_hash, password)

    def dummy_verify(self, password: str) -> bool:
        return self.hasher.dummy_verify(password)

    def check_and_upgrade(self, user: StoredUser, password: str) -> bool:
        """Verify against the stored hash; on success replace a legacy (bcrypt) or outdated hash."""
        if not self.verify_password(user, password):
            return False
        assert user.password_hash is not None
        if self.hasher.needs_rehash(user.password_hash, password):
            new = self.hash(password)
            # only if nobody changed the hash meanwhile (a concurrent reset wins)
            if self._exec("UPDATE sv_users SET password_hash = ?, updated_at = ?"
                          " WHERE tenant = ? AND user_id = ? AND password_hash = ?",
                          (new, time.time(), self.tenant, user.user_id, user.password_hash)) > 0:
                user.password_hash = new
        return True

    @staticmethod
    def _user(row: tuple) -> StoredUser:
        user_id, email, pw, verified, profile, source, legacy_email = row
        return StoredUser(user_id=user_id, email=email, password_hash=pw, email_verified=bool(verified),
                          profile=json.loads(profile), source=source, legacy_email=legacy_email)

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
        """Store ``user``; return the stored row, which is always this user.

        The same user already stored (same id and same email key: another
        node migrated it a moment ago) is not an error and that row is
        returned.  A different user holding the id or the email key raises
        ``IdentityClash``: nothing is written and nobody else is returned.
        """
        now = time.time()
        profile = {k: v for k, v in user.profile.items() if k not in ("user_id", "email", "email_verified")}
        inserted = self._exec(
            "INSERT INTO sv_users (tenant, user_id, email, email_key, password_hash, email_verified,"
            " profile, source, created_at, updated_at, legacy_email) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (self.tenant, user.user_id, user.email, user.key, user.password_hash,
             bool(user.email_verified), json.dumps(profile), user.source, now, now, user.legacy_email),
        )
        if inserted:
            return user
        by_id = self.find_by_id(user.user_id)
        if by_id is not None and by_id.key == user.key:
            return by_id
        raise IdentityClash(user, by_id or self.find(user.email))

    def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        return self._exec("UPDATE sv_users SET password_hash = ?, updated_at = ? WHERE tenant = ? AND user_id = ?",
                          (password_hash, time.time(), self.tenant, user_id)) > 0

    def set_verified(self, user_id: str) -> bool:
        return self._exec("UPDATE sv_users SET email_verified = ?, updated_at = ? WHERE tenant = ? AND user_id = ?",
                          (True, time.time(), self.tenant, user_id)) > 0

    def set_email(self, user_id: str, new_email: str, verified: bool) -> bool:
        """Change the email; False when another user already has ``new_email``'s key."""
        try:
            return self._exec(
                "UPDATE sv_users SET email = ?, email_key = ?, email_verified = ?, updated_at = ?"
                " WHERE tenant = ? AND user_id = ?",
                (new_email, email_key(new_email), bool(verified), time.time(), self.tenant, user_id)) > 0
        except UserStoreConflict:
            return False

    def delete(self, user_id: str) -> bool:
        """Remove the user and every id remembered for it (a new id after a delete is legitimate)."""
        user_id = str(user_id)
        user = self.find_by_id(user_id)
        removed = self._exec("DELETE FROM sv_users WHERE tenant = ? AND user_id = ?", (self.tenant, user_id)) > 0
        self.forget_seen(user_id=user_id)
        if user is not None:
            self.forget_seen(email=user.email)
            if user.legacy_email:
                self.forget_seen(email=user.legacy_email)
        return removed

    def count(self) -> int:
        return self._exec("SELECT count(*) FROM sv_users WHERE tenant = ?", (self.tenant,))[0][0]

    def all_users(self) -> list[StoredUser]:
        return [self._user(r) for r in self._exec(f"SELECT {_COLUMNS} FROM sv_users WHERE tenant = ?",
                                                   (self.tenant,))]

    # -- user_id stability (engine.contract) -----------------------------------

    def seen_user_id(self, email: str, user_id: str, script: str) -> tuple[str, str] | None:
        """Remember ``user_id`` for ``email``'s key; return the earlier (user_id, script) if it differs."""
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


_stores: dict[tuple[str, str, Hasher], UserStore] = {}
_stores_lock = threading.Lock()


def open_store(tenant: str, state_dir: str, *, dsn: str | None = None,
               hasher: Hasher = DEFAULT_HASHER) -> UserStore:
    """The (cached) store for a tenant: PostgreSQL when a DSN is given or set, else sqlite."""
    dsn = dsn or os.environ.get(DSN_ENV) or None
    location = dsn or os.path.join(os.path.realpath(state_dir), SQLITE_FILE)
    key = (tenant, location, hasher)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if dsn:
                store = UserStore(tenant, dsn=dsn, hasher=hasher)
            else:
                os.makedirs(state_dir, mode=0o700, exist_ok=True)
                store = UserStore(tenant, path=location, hasher=hasher)
            _stores[key] = store
        return store


def open_stores() -> list[UserStore]:
    """The stores opened so far (what /readyz reports on)."""
    with _stores_lock:
        return list(_stores.values())


def store_health(dsn: str | None = None) -> dict[str, Any]:
    """The user store as it is now, for /readyz.

    PostgreSQL (a shared DSN): one trivial statement through an open store's
    pool (which replaces dead connections first), or a fresh connection when
    no tenant has opened the store yet; ``ok`` False means no tenant in
    migration mode can log anyone in, so the node is not ready.  SQLite: the
    per-tenant files opened so far, each checked; a failing one is that
    tenant's problem (``failing`` names them) and leaves the node ready.
    """
    dsn = dsn or os.environ.get(DSN_ENV) or None
    stores = open_stores()
    if dsn:
        pg = [s for s in stores if s.kind == "postgres"]
        if pg:
            return pg[0].health()
        try:
            import psycopg

            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as db:
                db.execute("SELECT 1")
            return {"ok": True, "kind": "postgres"}
        except Exception as exc:
            return {"ok": False, "kind": "postgres", "error": f"cannot reach the user store: {exc}"}
    failing = {}
    for store in stores:
        if store.kind == "sqlite":
            health = store.health()
            if not health["ok"]:
                failing[store.tenant] = health["error"]
    return {"ok": not failing, "kind": "sqlite", "failing": failing}


def close_stores() -> None:
    """Close every cached store (CLI exit, tests)."""
    with _stores_lock:
        for store in _stores.values():
            try:
                store.close()
            except Exception:
                pass
        _stores.clear()
