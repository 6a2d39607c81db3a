"""Custom database connections: the seven operations, in legacy and migration mode.

A *connection* is a tenant's scripts folder plus its ``configuration`` plus
``import_users`` (see ``docs/action-scripts.md``).  Each operation is written
once, as a generator that yields *steps* and receives their outcomes:

    Invoke("get_user", [email])   -> the script's result dict (Result.to_dict())
    Blocking(fn, *args)           -> fn(*args): platform store work and hashing

so the same logic runs under a blocking ``engine.Engine`` (``run_operation_on``)
and inside an asyncio server on ``engine.AsyncEngine`` (``run_operation_async``,
store work in the default executor so bcrypt never blocks the event loop),
with no duplicated call orders.

Every operation returns the ``scriptvisor run --json`` object
(``ok, result, error, logs, duration_ms``) plus ``scripts_called`` (script
names in call order) and, in migration mode, ``from_platform_store``.

Call orders (the contract):
- legacy signup: ``get_user`` (found: ``user_exists``, no ``create``) ->
  ``create`` -> ``login`` to confirm the account works.
- migration login: platform store first (password checked there, no script);
  else ``login`` and on success the user is stored with the same ``user_id``
  and the password hashed by the platform.
- migration signup: store, then ``get_user`` in the legacy database; a user
  found in either cannot sign up; a new user goes into the store only.
- migration password reset for a user not yet migrated: ``get_user`` supplies
  the profile, the user is created in the store with the new password.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Mapping

from scriptvisor.engine.contract import check_same_user, normalize_profile
from scriptvisor.engine.errors import BadRequest, ContractViolation, EngineUnavailable, InvocationError, ScriptError
from scriptvisor.engine.hashing import PasswordEncodingError, password_bytes
from scriptvisor.engine.userstore import (IdentityClash, StoredUser, UserStore, UserStoreError, UserStoreTimeout,
                                          call_with_deadline, email_key)
from scriptvisor.sandbox import wire

__all__ = [
    "OPERATIONS",
    "SCRIPT_OF",
    "Blocking",
    "Connection",
    "Invoke",
    "run_operation",
    "run_operation_async",
    "run_operation_on",
]

#: Operation -> the script it is named after (``delete_user`` runs ``delete.py``).
SCRIPT_OF: dict[str, str] = {
    "login": "login",
    "signup": "create",
    "get_user": "get_user",
    "verify_email": "verify",
    "change_password": "change_password",
    "delete_user": "delete",
    "change_email": "change_email",
}
OPERATIONS = tuple(SCRIPT_OF)
#: Argument names per operation, in the order of the matching script's signature.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "login": ("email", "password"),
    "signup": ("user",),
    "get_user": ("email",),
    "verify_email": ("email",),
    "change_password": ("email", "new_password"),
    "delete_user": ("user_id",),
    "change_email": ("email", "new_email", "verified"),
}
#: Longest email / password accepted by an operation (beyond is a bad request).
MAX_FIELD_CHARS = 1024


@dataclass(frozen=True)
class Invoke:
    script: str
    args: list[Any]


@dataclass(frozen=True)
class Blocking:
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class Connection:
    """What an operation needs to know about a tenant."""

    tenant: str
    scripts_dir: Path
    configuration: Mapping[str, Any]
    import_users: bool
    store: UserStore
    name: str = "custom-database"  # the ``connection`` field of create's user
    timeout: float | None = None
    #: Seconds one operation may take in all (its store calls get what is left of it).
    budget: float = 20.0

    def script_path(self, script: str) -> Path:
        return Path(self.scripts_dir) / f"{script}.py"

    def has(self, script: str) -> bool:
        return self.script_path(script).is_file()


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    #: True when the answer came from the platform store; reported in migration mode only.
    from_platform_store: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Step = Invoke | Blocking
OpGen = Generator[Step, Any, Outcome]


# --------------------------------------------------------------------------
# helpers shared by the operations

#: Fields a signup may carry (docs/action-scripts.md); anything else is a bad request.
SIGNUP_FIELDS = ("email", "password", "username", "nickname", "user_metadata")
#: Largest ``user_metadata`` a signup may carry, as JSON text.
MAX_METADATA_CHARS = 16 * 1024


def _error(cls: type[InvocationError], message: str, **details: Any) -> Outcome:
    return Outcome(False, error=cls(message, **details).to_dict())


def _user_exists(email: str, where: str) -> Outcome:
    # Same shape as a script's callback(ValidationError("user_exists", ...)).
    return _error(ScriptError, f"the user already exists ({where})", name="ValidationError",
                  validation_code="user_exists")


def _wrong_credentials(email: str, user_known: bool) -> Outcome:
    # Same shape as a script's callback(WrongUsernameOrPasswordError(...)).
    return _error(ScriptError, "Wrong email or password.", name="WrongUsernameOrPasswordError",
                  email_or_id=email if user_known else None, user_known=user_known)


def _missing_script(conn: Connection, script: str, operation: str) -> Outcome:
    return _error(BadRequest, f"this connection has no {script}.py script, so {operation} is not available",
                  script=script, operation=operation)


def _clash(script: str, typed: str, profile: dict, existing: StoredUser | None) -> Outcome:
    """The script named a user that collides with a different stored user: nothing is written."""
    other_id = existing.user_id if existing else None
    other_email = existing.email if existing else None
    field_ = "user_id" if other_id == profile["user_id"] else "email"
    return _error(ContractViolation,
                  f"{script}: returned user_id {profile['user_id']!r} / email {profile.get('email')!r} for "
                  f"{typed!r}, which clashes with the stored user {other_id!r} / {other_email!r}; "
                  "nothing was written and nobody was logged in",
                  field=field_, script=script, user_id=profile["user_id"], email=profile.get("email"),
                  existing_user_id=other_id, existing_email=other_email)


def _same_person(row: StoredUser, profile: dict) -> bool:
    """Does a legacy profile naming ``row``'s user_id describe that row's person?

    Yes when the profile has no email, or its email key is the row's current
    key or the key of the address the legacy side knew the row by.
    """
    email = profile.get("email")
    if not email:
        return True
    key = email_key(email)
    return key == row.key or (row.legacy_email is not None and key == email_key(row.legacy_email))


def _profile(conn: Connection, email: str, value: Any, script: str) -> Generator[Step, Any, dict]:
    """Normalise a script's profile and check its user_id is stable for ``email``'s key."""
    profile = normalize_profile(value, script=script)
    seen = yield Blocking(conn.store.seen_user_id, (email, profile["user_id"], script))
    check_same_user(email, profile["user_id"], script, seen)
    return profile


def _call_get_user(conn: Connection, email: str) -> Generator[Step, Any, tuple[Outcome | None, dict | None]]:
    """(failure, None) | (None, profile) | (None, None) for "not found"."""
    res = yield Invoke("get_user", [email])
    if not res["ok"]:
        return Outcome(False, error=res["error"]), None
    if res["result"] is None:
        return None, None
    try:
        profile = yield from _profile(conn, email, res["result"], "get_user")
    except ContractViolation as exc:
        return Outcome(False, error=exc.to_dict()), None
    return None, profile


def _legacy_exists(conn: Connection, email: str) -> Generator[Step, Any, tuple[Outcome | None, dict | None]]:
    """Existence check on the legacy side by the identity key (and the address as typed, if it differs).

    The key is what decides; asking for the typed form too catches a legacy
    table that stores mixed case and compares case-sensitively, and the key's
    NFD form a legacy row written decomposed (``e`` + combining acute), which
    the key (composed by NFKC) is the same user as.
    """
    key = email_key(email)
    for candidate in dict.fromkeys((key, email, unicodedata.normalize("NFD", key))):
        failure, profile = yield from _call_get_user(conn, candidate)
        if failure is not None or profile is not None:
            return failure, profile
    return None, None


def _text(name: str, value: Any) -> str:
    """A trimmed, non-empty, UTF-8-encodable string of bounded length without NUL (emails, user ids)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise BadRequest(f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters",
                         field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid text (it cannot be encoded as UTF-8)", field=name) from None
    if "\x00" in value:  # no address or id has one, and PostgreSQL text cannot hold it (a store "outage")
        raise BadRequest(f"{name} must not contain a NUL character", field=name)
    return value.strip()


def _email(name: str, value: Any) -> str:
    """A new address (signup, change_email): text with an "@", so it is never a legacy username,
    which ``login`` and ``get_user`` also take as typed and the store would answer first."""
    value = _text(name, value)
    if "@" not in value:
        raise BadRequest(f"{name} must be an email address (it has no '@')", field=name)
    return value


def _password(name: str, value: Any) -> str:
    """Passwords are taken as they are (never trimmed), but must be encodable."""
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise BadRequest(f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters",
                         field=name)
    try:
        password_bytes(value)
    except PasswordEncodingError as exc:
        raise BadRequest(f"{name}: {exc}", field=name) from None
    return value


def _signup_user(user: Any) -> dict[str, Any]:
    """The signup object, reduced to the documented fields (anything else is refused, by name)."""
    if not isinstance(user, dict):
        raise BadRequest("signup takes one JSON object (the new user)", field="user")
    unknown = sorted(str(k) for k in user if k not in SIGNUP_FIELDS)
    if unknown:
        raise BadRequest(f"signup does not accept {', '.join(unknown)} (accepted: {', '.join(SIGNUP_FIELDS)})",
                         field=unknown[0], fields=unknown)
    out: dict[str, Any] = {"email": _email("email", user.get("email")),
                           "password": _password("password", user.get("password"))}
    for name in ("username", "nickname"):
        if user.get(name) is not None:
            out[name] = _text(name, user[name])
    if user.get("user_metadata") is not None:
        meta = user["user_metadata"]
        if not isinstance(meta, dict):
            raise BadRequest("user_metadata must be an object", field="user_metadata")
        try:
            normalize_profile({"user_id": "x", "user_metadata": meta}, script="signup")
            text = json.dumps(meta, ensure_ascii=False).encode("utf-8")
        except (ContractViolation, UnicodeEncodeError, ValueError) as exc:
            raise BadRequest(f"user_metadata is not plain JSON: {exc}", field="user_metadata") from None
        if len(text) > MAX_METADATA_CHARS:
            raise BadRequest(f"user_metadata is larger than {MAX_METADATA_CHARS} bytes", field="user_metadata")
        out["user_metadata"] = meta
    return out


def _unknown_user(error: dict | None) -> bool:
    return bool(error) and error.get("name") == "WrongUsernameOrPasswordError" and not error.get("user_known")


# --------------------------------------------------------------------------
# operations


def op_login(conn: Connection, email: str, password: str) -> OpGen:
    email = _text("email", email)
    password = _password("password", password)
    stored: StoredUser | None = None
    if conn.import_users:
        stored = yield Blocking(conn.store.find, (email,))
        if stored is not None and stored.password_hash is not None:
            return (yield from _store_decides(conn, stored, password, email))
    # Legacy database: mode legacy, or a user not migrated yet (or imported
    # without a password by verify/change_email: the legacy side knows them
    # by legacy_email, and their password is still there).
    asked = stored.legacy_email if stored is not None and stored.legacy_email else email
    res = yield Invoke("login", [asked, password])
    if not res["ok"]:
        return Outcome(False, error=res["error"])
    if res["result"] is None:  # a migration that was ended: login is a no-op
        yield Blocking(conn.store.dummy_verify, (password,))
        return _wrong_credentials(email, False)
    try:
        profile = yield from _profile(conn, email, res["result"], "login")
        if stored is not None:
            check_same_user(email, profile["user_id"], "login", (stored.user_id, "the platform store"))
    except ContractViolation as exc:
        return Outcome(False, error=exc.to_dict())
    if not conn.import_users:
        return Outcome(True, profile)
    return (yield from _migrate(conn, email, password, profile, stored))


def _store_decides(conn: Connection, stored: StoredUser, password: str, email: str) -> OpGen:
    """A migrated user: the store's hash decides, whatever the legacy side would say."""
    ok = yield Blocking(conn.store.check_and_upgrade, (stored, password))
    out = Outcome(True, stored.public_profile()) if ok else _wrong_credentials(email, True)
    out.from_platform_store = True
    return out


def _migrate(conn: Connection, email: str, password: str, profile: dict,
             stored: StoredUser | None) -> OpGen:
    """The legacy login authenticated ``profile``: store it, or let the store decide if it is there."""
    uid = profile["user_id"]
    by_id = stored if stored is not None and stored.user_id == uid else (
        yield Blocking(conn.store.find_by_id, (uid,)))
    legacy_email = _text("email", profile["email"]) if profile.get("email") else email
    if by_id is None:
        by_key = yield Blocking(conn.store.find, (legacy_email,))
        if by_key is not None and by_key.user_id != uid:  # another user already holds this email
            return _clash("login", email, profile, by_key)
        by_id = by_key  # None, or this very user stored a moment ago (another node, another request)
    if by_id is not None:
        if not _same_person(by_id, profile):
            return _clash("login", email, profile, by_id)
        if by_id.password_hash is not None:  # migrated already: never decided by the legacy answer
            return (yield from _store_decides(conn, by_id, password, email))
        password_hash = yield Blocking(conn.store.hash, (password,))
        changed = yield Blocking(conn.store.set_password_hash, (uid, password_hash))
        if not changed:  # deleted a moment ago: the next login migrates it again
            return _error(EngineUnavailable, "the user was deleted during this login; try again",
                          name="UserStoreConflict")
        by_id.password_hash = password_hash
        return Outcome(True, by_id.public_profile(), extra={"migrated": True})
    password_hash = yield Blocking(conn.store.hash, (password,))
    new = StoredUser(user_id=uid, email=legacy_email, password_hash=password_hash,
                     email_verified=bool(profile.get("email_verified", False)),
                     profile=profile, source="migrated", legacy_email=legacy_email)
    try:
        kept = yield Blocking(conn.store.insert, (new,))
    except IdentityClash as clash:
        return _clash("login", email, profile, clash.existing)
    if kept.password_hash != password_hash:  # the same user, migrated by another node a moment ago
        return (yield from _store_decides(conn, kept, password, email))
    return Outcome(True, kept.public_profile(), extra={"migrated": True})


def op_get_user(conn: Connection, email: str) -> OpGen:
    email = _text("email", email)
    if conn.import_users:
        stored = yield Blocking(conn.store.find, (email,))
        if stored is not None:
            return Outcome(True, stored.public_profile(), from_platform_store=True)
    failure, profile = yield from _call_get_user(conn, email)
    return failure if failure is not None else Outcome(True, profile)


def op_signup(conn: Connection, user: Any) -> OpGen:
    user = _signup_user(user)
    typed, password = user["email"], user["password"]
    email = user["email"] = email_key(typed)  # the canonical form is what is stored and created
    if conn.import_users:
        stored = yield Blocking(conn.store.find, (email,))
        if stored is not None:
            out = _user_exists(email, "platform store")
            out.from_platform_store = True
            return out
    if conn.import_users or conn.has("get_user"):
        failure, profile = yield from _legacy_exists(conn, typed)
        if failure is not None:
            return failure
        if profile is not None:
            return _user_exists(email, "legacy database")
    if conn.import_users:
        password_hash = yield Blocking(conn.store.hash, (password,))
        extra = {k: v for k, v in user.items() if k not in ("password", "email")}
        new = StoredUser(user_id=uuid.uuid4().hex, email=email, password_hash=password_hash,
                         email_verified=False, profile=extra, source="signup")
        try:
            kept = yield Blocking(conn.store.insert, (new,))
        except IdentityClash:  # someone signed up with this email a moment ago
            return _user_exists(email, "platform store")
        return Outcome(True, kept.public_profile(), from_platform_store=True)
    if not conn.has("create"):
        return _missing_script(conn, "create", "signup")
    full = {"tenant": conn.tenant, "connection": conn.name, "client_id": None, **user}
    res = yield Invoke("create", [full])
    if not res["ok"]:
        return Outcome(False, error=res["error"])
    res = yield Invoke("login", [email, password])
    if not res["ok"]:
        return Outcome(False, error=res["error"])
    try:
        profile = yield from _profile(conn, email, res["result"], "login")
    except ContractViolation as exc:
        return Outcome(False, error=exc.to_dict())
    return Outcome(True, profile)


def op_verify_email(conn: Connection, email: str) -> OpGen:
    email = _text("email", email)
    if not conn.import_users:
        if not conn.has("verify"):
            return _missing_script(conn, "verify", "verify_email")
        res = yield Invoke("verify", [email])
        return Outcome(res["ok"], res["result"], res["error"])
    stored = yield from _stored_or_imported(conn, email)
    if isinstance(stored, Outcome):
        return stored
    changed = yield Blocking(conn.store.set_verified, (stored.user_id,))
    return Outcome(True, bool(changed), from_platform_store=True)


def op_change_password(conn: Connection, email: str, new_password: str) -> OpGen:
    email = _text("email", email)
    new_password = _password("new_password", new_password)
    if not conn.import_users:
        if not conn.has("change_password"):
            return _missing_script(conn, "change_password", "change_password")
        if conn.has("get_user"):
            failure, profile = yield from _call_get_user(conn, email)
            if failure is not None:
                return failure
            if profile is None:
                return Outcome(True, False)  # no such user: nothing changed
        res = yield Invoke("change_password", [email, new_password])
        return Outcome(res["ok"], res["result"], res["error"])
    password_hash = yield Blocking(conn.store.hash, (new_password,))
    stored = yield from _stored_or_imported(conn, email, password_hash=password_hash)
    if isinstance(stored, Outcome):
        return stored
    if stored.password_hash != password_hash:
        changed = yield Blocking(conn.store.set_password_hash, (stored.user_id, password_hash))
        if not changed:
            return Outcome(True, False, from_platform_store=True)  # deleted meanwhile
    return Outcome(True, True, from_platform_store=True)


def op_delete_user(conn: Connection, user_id: Any) -> OpGen:
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)) or str(user_id) == "":
        raise BadRequest("user_id must be a string or a number", field="user_id")
    user_id = str(user_id)
    _text("user_id", user_id)  # checked (length, encodable), not trimmed: ids are the scripts' own, verbatim
    if conn.import_users:
        # The legacy row is left alone: a user still there is migrated again
        # on the next login (documented behaviour, action-scripts.md).  The
        # ids remembered for it go too: a re-created legacy row may have a new one.
        removed = yield Blocking(conn.store.delete, (user_id,))
        return Outcome(True, bool(removed), from_platform_store=True)
    if not conn.has("delete"):
        return _missing_script(conn, "delete", "delete_user")
    res = yield Invoke("delete", [user_id])
    if res["ok"]:
        yield Blocking(_forget_id, (conn.store, user_id))
        # a boolean in both modes: the script's own true/false when it gives
        # one, else true (callback(None): deleted, or there was nothing to delete)
        result = res["result"] if isinstance(res["result"], bool) else True
        return Outcome(True, result)
    return Outcome(res["ok"], res["result"], res["error"])


def _forget_id(store: UserStore, user_id: str) -> None:
    store.forget_seen(user_id=user_id)


def op_change_email(conn: Connection, email: str, new_email: str, verified: Any) -> OpGen:
    email = _text("email", email)
    new_email = _email("new_email", new_email)
    if not isinstance(verified, bool):
        raise BadRequest("verified must be true or false", field="verified")
    if email_key(new_email) == email_key(email):
        # a case or space variant of the same address is the same identity: nothing to change
        return Outcome(True, False, from_platform_store=conn.import_users)
    new_email = email_key(new_email)
    if conn.import_users:
        taken = yield Blocking(conn.store.find, (new_email,))
        if taken is not None:
            return _user_exists(new_email, "platform store")
    if conn.import_users or conn.has("get_user"):
        failure, profile = yield from _legacy_exists(conn, new_email)
        if failure is not None:
            return failure
        if profile is not None:
            return _user_exists(new_email, "legacy database")
    if not conn.import_users:
        if not conn.has("change_email"):
            return _missing_script(conn, "change_email", "change_email")
        res = yield Invoke("change_email", [email, new_email, verified])
        if res["ok"] and res["result"]:
            yield Blocking(_forget_email, (conn.store, email))
        return Outcome(res["ok"], res["result"], res["error"])
    stored = yield from _stored_or_imported(conn, email)
    if isinstance(stored, Outcome):
        return stored
    changed = yield Blocking(conn.store.set_email, (stored.user_id, new_email, verified))
    if not changed:
        return _user_exists(new_email, "platform store")
    yield Blocking(_forget_email, (conn.store, email))
    return Outcome(True, True, from_platform_store=True)


def _forget_email(store: UserStore, email: str) -> None:
    store.forget_seen(email=email)


def _stored_or_imported(conn: Connection, email: str, *,
                        password_hash: str | None = None) -> Generator[Step, Any, StoredUser | Outcome]:
    """The platform store's user, importing it from ``get_user`` when not migrated yet.

    Imported without a password (``password_hash`` None) its password stays in
    the legacy database (the next login asks ``login`` for ``legacy_email``
    once); with one (password reset) the user is fully migrated.  A legacy
    profile naming a user already stored under another address is that user
    when it is the same person (``_same_person``) and a ``contract_violation``
    otherwise; nothing else is ever written.
    """
    stored = yield Blocking(conn.store.find, (email,))
    if stored is not None:
        return stored
    failure, profile = yield from _call_get_user(conn, email)
    if failure is not None:
        return failure
    if profile is None:
        return Outcome(True, False, from_platform_store=True)  # unknown user: nothing changed
    by_id = yield Blocking(conn.store.find_by_id, (profile["user_id"],))
    if by_id is not None:
        return by_id if _same_person(by_id, profile) else _clash("get_user", email, profile, by_id)
    legacy_email = _text("email", profile["email"]) if profile.get("email") else email
    new = StoredUser(user_id=profile["user_id"], email=legacy_email, password_hash=password_hash,
                     email_verified=bool(profile.get("email_verified", False)),
                     profile=profile, source="imported", legacy_email=legacy_email)
    try:
        return (yield Blocking(conn.store.insert, (new,)))
    except IdentityClash as clash:
        return _clash("get_user", email, profile, clash.existing)


OPERATION_FUNCS: dict[str, Callable[..., OpGen]] = {
    "login": op_login,
    "signup": op_signup,
    "get_user": op_get_user,
    "verify_email": op_verify_email,
    "change_password": op_change_password,
    "delete_user": op_delete_user,
    "change_email": op_change_email,
}


# --------------------------------------------------------------------------
# drivers


class _Run:
    """Bookkeeping of one operation: scripts called, logs, wall clock."""

    def __init__(self, conn: Connection, operation: str, args: list[Any]) -> None:
        if operation not in OPERATION_FUNCS:
            raise BadRequest(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS)})",
                             operation=operation)
        wanted = ARGUMENTS[operation]
        if not isinstance(args, (list, tuple)) or len(args) != len(wanted):
            raise BadRequest(f"{operation} takes {len(wanted)} argument(s): {' '.join(a.upper() for a in wanted)}",
                             operation=operation)
        for name, value in zip(wanted, args):
            # Before the store or any script sees it: a value no frame can
            # carry (a lone surrogate from a login form, NaN) is the request's
            # fault, named, never a crash or a store error.
            try:
                wire.encode_arguments([value], {})
            except wire.ArgumentError as exc:
                raise BadRequest(exc.message.replace("args[0]", name), field=name, argument=name,
                                 reason=exc.reason, operation=operation) from None
        self.conn = conn
        self.operation = operation
        self.started = time.perf_counter()
        #: store calls must finish by then (monotonic): the operation's remaining time
        self.deadline = time.monotonic() + (conn.timeout or conn.budget)
        self.scripts: list[str] = []
        self.logs: list[str] = []
        self.worker: dict[str, Any] = {}
        self.gen = OPERATION_FUNCS[operation](conn, *args)

    def invoke_kwargs(self, step: Invoke) -> dict[str, Any]:
        if not self.conn.has(step.script):
            raise _MissingScript(step.script)
        self.scripts.append(step.script)
        return dict(path=str(self.conn.script_path(step.script)), function=step.script, args=step.args,
                    configuration=dict(self.conn.configuration), timeout=self.conn.timeout)

    def record(self, res: Any) -> dict[str, Any]:
        data = res.to_dict(with_worker=True) if hasattr(res, "to_dict") else dict(res)
        self.logs.extend(data.get("logs") or [])
        self.worker = data.get("worker") or self.worker
        return data

    def finish(self, outcome: Outcome) -> dict[str, Any]:
        out = {
            "ok": outcome.ok,
            "result": outcome.result if outcome.ok else None,
            "error": outcome.error,
            "logs": self.logs,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),  # as `run` rounds
            "worker": self.worker,
            "operation": self.operation,
            "scripts_called": self.scripts,
        }
        if self.conn.import_users:
            out["from_platform_store"] = outcome.from_platform_store
        out.update(outcome.extra)
        return out


class _MissingScript(Exception):
    def __init__(self, script: str) -> None:
        self.script = script


def _failed(run: _Run, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, _MissingScript):
        outcome = _missing_script(run.conn, exc.script, run.operation)
    elif isinstance(exc, InvocationError):
        outcome = Outcome(False, error=exc.to_dict())
    elif isinstance(exc, UserStoreTimeout):
        outcome = _error(EngineUnavailable, str(exc), name="UserStoreTimeout")
    elif isinstance(exc, UserStoreError):
        outcome = _error(EngineUnavailable, str(exc), name="UserStoreUnavailable")
    else:
        raise exc
    return run.finish(outcome)


#: Threads per tenant for store work and hashing (the per-tenant bound, issue 14).
STORE_THREADS = 4
_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def tenant_executor(tenant: str) -> ThreadPoolExecutor:
    """The tenant's own store/hashing thread pool (created on first use, never shared)."""
    with _executors_lock:
        pool = _executors.get(tenant)
        if pool is None:
            pool = _executors[tenant] = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix=f"sv-store-{tenant}")
        return pool


def run_operation_on(engine: Any, conn: Connection, operation: str, args: list[Any]) -> dict[str, Any]:
    """Run ``operation`` on a started blocking ``engine.Engine`` (tenant configured)."""
    run = _Run(conn, operation, args)
    value: Any = None
    try:
        while True:
            step = run.gen.send(value)
            if isinstance(step, Invoke):
                value = run.record(engine.invoke(conn.tenant, **run.invoke_kwargs(step)))
            else:
                value = call_with_deadline(run.deadline, step.fn, *step.args)
    except StopIteration as stop:
        return run.finish(stop.value)
    except Exception as exc:
        return _failed(run, exc)


async def run_operation_on_async(engine: Any, conn: Connection, operation: str,
                                 args: list[Any]) -> dict[str, Any]:
    """Same on a started ``engine.AsyncEngine``; blocking store work runs in the tenant's executor.

    Each tenant has its own small thread pool for store work and hashing
    (``tenant_executor``), so a tenant whose store stalls (a lock, a slow
    disk) fills only its own threads; every call is also bounded by the
    operation's remaining time (``userstore.call_with_deadline``).
    """
    run = _Run(conn, operation, args)
    loop = asyncio.get_running_loop()
    executor = tenant_executor(conn.tenant)
    value: Any = None
    try:
        while True:
            step = run.gen.send(value)
            if isinstance(step, Invoke):
                value = run.record(await engine.invoke(conn.tenant, **run.invoke_kwargs(step)))
            else:
                value = await loop.run_in_executor(executor, call_with_deadline, run.deadline, step.fn, *step.args)
    except StopIteration as stop:
        return run.finish(stop.value)
    except Exception as exc:
        return _failed(run, exc)


# --------------------------------------------------------------------------
# tenant folders


def connection_of(tenant: Any, *, tenant_name: str | None = None, store: UserStore | None = None,
                  dsn: str | None = None) -> Connection:
    """The Connection of an already loaded ``engine.tenants.Tenant``."""
    from scriptvisor.engine.userstore import open_store

    name = tenant_name or tenant.name
    if store is None:
        store = open_store(name, str(tenant.state_dir), dsn=dsn)
    budget = getattr(getattr(tenant, "limits", None), "timeout", None) or 20.0
    return Connection(tenant=name, scripts_dir=tenant.scripts_dir, configuration=dict(tenant.configuration),
                      import_users=tenant.import_users, store=store, name=f"{name}-custom-database",
                      budget=float(budget))


def connection_for(tenant_dir: str | os.PathLike[str], *, tenant_name: str | None = None,
                   store: UserStore | None = None, dsn: str | None = None) -> tuple[Connection, Any]:
    """(Connection, engine.tenants.Tenant) for a tenant folder (tenant.toml validated)."""
    from scriptvisor.engine.tenants import load_tenant

    tenant = load_tenant(Path(tenant_dir))
    return connection_of(tenant, tenant_name=tenant_name, store=store, dsn=dsn), tenant


async def run_operation_async(engine: Any, tenant: Any, operation: str,
                              args: list[Any], *, tenant_name: str | None = None) -> dict[str, Any]:
    """For the operator server: ``engine`` is its AsyncEngine, the tenant already configured.

    ``tenant`` is the server's loaded ``Tenant`` (its tenant.toml is not read
    again per request) or a tenant folder, which is loaded here.
    """
    try:
        if isinstance(tenant, (str, os.PathLike)):
            conn, _ = connection_for(tenant, tenant_name=tenant_name)
        else:
            conn = connection_of(tenant, tenant_name=tenant_name)
    except UserStoreError as exc:
        return _store_unavailable(exc)
    return await run_operation_on_async(engine, conn, operation, args)


#: Error fields an end user's response keeps when the server hides account hints
#: (``serve --end-user-responses``).  ``user_known``/``email_or_id`` (does this
#: account exist?) and a contract violation's ids and emails (other users'
#: accounts) are for the operator's log only.
END_USER_ERROR_FIELDS = frozenset({"code", "name", "message", "field", "fields", "validation_code",
                                   "retry_after", "operation"})


#: Result fields an end user's response keeps: which scripts ran, whether the
#: store answered or a user was just migrated, and the scripts' log lines all
#: tell a migrated user from an unknown one.
END_USER_RESULT_FIELDS = frozenset({"ok", "result", "error", "duration_ms", "operation"})


def end_user_view(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as an end user may see it: no account-existence hints, no other users' ids or emails."""
    out = {k: v for k, v in result.items() if k in END_USER_RESULT_FIELDS}
    out["logs"] = []  # the scripts' own lines are for the operator (the log stream has them)
    error = result.get("error")
    if isinstance(error, dict):
        kept = {k: v for k, v in error.items() if k in END_USER_ERROR_FIELDS}
        if error.get("code") == "contract_violation":
            kept["message"] = "the account could not be resolved; the operator has the details"
            kept.pop("field", None)
        out["error"] = kept
    return out


def _store_unavailable(exc: Exception) -> dict[str, Any]:
    err = EngineUnavailable(str(exc), name="UserStoreUnavailable").to_dict()
    return {"ok": False, "result": None, "error": err, "logs": [], "duration_ms": 0.0, "worker": {},
            "scripts_called": []}


def run_operation(tenant_dir: str | os.PathLike[str], operation: str, args: list[Any], *,
                  engine_config: Any = None, store: UserStore | None = None) -> dict[str, Any]:
    """One operation on a fresh blocking engine (what ``scriptvisor connection`` runs).

    Raises ``engine.tenants.TenantConfigError`` for a broken tenant
    folder and ``BadRequest`` for an unknown operation or wrong arguments
    (both are usage errors: exit status 2).
    """
    from scriptvisor.engine import Engine, EngineConfig

    if operation not in OPERATION_FUNCS:
        raise BadRequest(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS)})")
    conn, tenant = connection_for(tenant_dir, store=store)
    _Run(conn, operation, args)  # validate the arity before starting an engine
    cfg = engine_config or EngineConfig(limits=tenant.limits, spares_per_tenant=0)
    with Engine(cfg) as eng:
        eng.configure_tenant(conn.tenant, **tenant.engine_settings())
        return run_operation_on(eng, conn, operation, args)


# --------------------------------------------------------------------------
# command line helpers (engine.cli stays a thin layer)


def parse_cli_args(operation: str, args: list[str] | tuple[str, ...]) -> list[Any]:
    """ARGS of ``scriptvisor connection OPERATION`` -> typed arguments.

    Emails, passwords and ids stay strings (a password ``12345`` is not a
    number); ``signup`` takes one JSON object; ``change_email``'s VERIFIED is
    ``true``/``false``.  Raises ``BadRequest`` with the expected usage.  The
    operation and the argument count are checked once, by ``_Run`` (the same
    check for the CLI, the server and the Python API).
    """
    import json

    wanted = ARGUMENTS.get(operation, ())
    usage = f"{operation} {' '.join(a.upper() for a in wanted)}"
    out: list[Any] = list(args)
    if len(args) != len(wanted):
        return out  # _Run refuses it, naming the usage
    if operation == "signup":
        try:
            user = json.loads(args[0])
        except ValueError as exc:
            raise BadRequest(f"USER must be a JSON object ({exc}): {usage}") from None
        if not isinstance(user, dict):
            raise BadRequest(f"USER must be a JSON object: {usage}")
        out = [user]
    elif operation == "change_email":
        flag = args[2].strip().lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise BadRequest(f"VERIFIED must be true or false: {usage}")
        out[2] = flag in ("true", "1", "yes")
    return out
