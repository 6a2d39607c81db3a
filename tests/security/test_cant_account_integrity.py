"""Issue 17: the nine account-integrity findings, each reproduced as an attack that now fails.

Tenants are made over a real SQLite legacy database (tests/db/legacy.py seeds
alice@example.com / wonderland, id 1, and bob@example.com / builder, id 2) and
driven through ``engine.connections`` on a real engine, exactly as
``scriptvisor connection`` does.  The layer that stops each attack is the
connection flow (``engine.connections``) or the user store
(``engine.userstore`` / ``engine.hashing``), named in each docstring.
"""

from __future__ import annotations

import pytest

from scriptvisor.engine.connections import run_operation_on
from tests.db.conftest import engine, make_tenant  # noqa: F401  (fixtures: real engine, tenant folders)
from tests.db.legacy import legacy_sql

#: A legacy login that also accepts a username (what finding 1 and 4 need).
LOGIN_BY_EMAIL_OR_USERNAME = '''
import bcrypt
import sqlite


def login(email, password, callback):
    rows = sqlite.connect("legacy.db").query(
        "SELECT id, email, password, nickname FROM users WHERE email = ? OR username = ?", [email, email])
    if not rows:
        callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        return
    user = rows[0]
    if not bcrypt.check(password, user["password"]):
        callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        return
    callback(None, {"user_id": USER_ID, "email": user["email"], "nickname": user["nickname"]})
'''
GET_USER = '''
import sqlite


def get_user(email, callback):
    rows = sqlite.connect("legacy.db").query("SELECT id, email, nickname FROM users WHERE email = ?", [email])
    if not rows:
        callback(None)
        return
    callback(None, {"user_id": USER_ID, "email": rows[0]["email"], "nickname": rows[0]["nickname"]})
'''


def scripts(user_id_expr: str = 'str(user["id"])') -> dict[str, str]:
    from scriptvisor.engine.tenantdir import TEMPLATES_DIR

    out = {name: (TEMPLATES_DIR / "sqlite" / f"{name}.py").read_text()
           for name in ("create", "verify", "change_password", "delete", "change_email")}
    out["login"] = LOGIN_BY_EMAIL_OR_USERNAME.replace("USER_ID", user_id_expr)
    out["get_user"] = GET_USER.replace("USER_ID", user_id_expr.replace("user[", "rows[0]["))
    return out


def op(engine, conn, operation, *args):
    return run_operation_on(engine, conn, operation, list(args))


def sql(conn, query, *args):
    return legacy_sql(conn.backend, conn.legacy_params, conn.data_dir, query, args)


def add_legacy_user(conn, email, password, *, username=None, nickname=None):
    from tests.db.legacy import _hash

    sql(conn, "INSERT INTO users (email, password, nickname, username) VALUES (?, ?, ?, ?)",
        email, _hash(password), nickname, username)
    return str(sql(conn, "SELECT id FROM users WHERE email = ?", email)[0][0])


# --- 1. a login returns another user's account -----------------------------------------


def test_cant_log_in_as_another_migrated_user_through_a_shared_user_id(engine, make_tenant):
    """Finding 1a. Layer: engine.connections._migrate (the legacy answer clashes on user_id)."""
    conn = make_tenant("sqlite", True, scripts=scripts('"7"'))  # a broken legacy: everyone is "7"
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["result"]["user_id"] == "7"
    res = op(engine, conn, "login", "bob@example.com", "builder")
    assert res["ok"] is False and res["result"] is None
    err = res["error"]
    assert err["code"] == "contract_violation" and err["field"] == "user_id"
    assert (err["user_id"], err["email"]) == ("7", "bob@example.com")
    assert (err["existing_user_id"], err["existing_email"]) == ("7", "alice@example.com")
    assert conn.store.count() == 1 and conn.store.find("bob@example.com") is None


def test_cant_log_in_as_a_migrated_user_through_a_case_variant_email(engine, make_tenant):
    """Finding 1b. Layer: engine.connections._migrate (clash on the identity key)."""
    conn = make_tenant("sqlite", True, scripts=scripts())
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["ok"]
    mallory = add_legacy_user(conn, "ALICE@Example.com", "mallory-pw", username="mallory")
    res = op(engine, conn, "login", "mallory", "mallory-pw")
    assert res["ok"] is False and res["result"] is None
    err = res["error"]
    assert err["code"] == "contract_violation" and err["field"] == "email"
    assert err["user_id"] == mallory and err["existing_user_id"] == "1"
    assert conn.store.count() == 1 and conn.store.find_by_id(mallory) is None


# --- 2. signup squats a legacy user who has not migrated --------------------------------


@pytest.mark.parametrize("variant", ["BOB@example.com", "  bob@example.com ", "bob@EXAMPLE.com",
                                     "\uff42ob@example.com"])  # fullwidth b: NFKC folds it
def test_cant_squat_an_unmigrated_user_by_signup_with_a_variant(engine, make_tenant, variant):
    """Finding 2 (signup). Layer: engine.connections.op_signup (existence check by the identity key)."""
    conn = make_tenant("sqlite", True)
    res = op(engine, conn, "signup", {"email": variant, "password": "attacker"})
    assert res["ok"] is False
    assert res["error"]["code"] == "script_error" and res["error"]["validation_code"] == "user_exists"
    assert conn.store.count() == 0
    login = op(engine, conn, "login", "bob@example.com", "builder")
    assert login["ok"] and login["result"]["user_id"] == "2"
    assert op(engine, conn, "login", "bob@example.com", "attacker")["ok"] is False


def test_cant_squat_an_unmigrated_user_by_change_email_to_a_variant(engine, make_tenant):
    """Finding 2 (change_email). Layer: engine.connections.op_change_email (identity key)."""
    conn = make_tenant("sqlite", True)
    assert op(engine, conn, "signup", {"email": "carol@example.com", "password": "carol-pw"})["ok"]
    res = op(engine, conn, "change_email", "carol@example.com", " BOB@example.com", True)
    assert res["ok"] is False and res["error"]["validation_code"] == "user_exists"
    assert conn.store.find("bob@example.com") is None
    assert op(engine, conn, "login", "bob@example.com", "builder")["result"]["user_id"] == "2"


# --- 3. legacy mode: a signup locks a legacy user out ------------------------------------


def test_cant_lock_out_a_legacy_user_by_signing_up_a_case_variant(engine, make_tenant):
    """Finding 3. Layer: engine.connections.op_signup (get_user asked for the identity key)."""
    conn = make_tenant("sqlite", False)
    res = op(engine, conn, "signup", {"email": "ALICE@example.com", "password": "attacker"})
    assert res["ok"] is False and res["error"]["validation_code"] == "user_exists"
    assert res["scripts_called"] == ["get_user"]  # create never ran
    assert sql(conn, "SELECT count(*) FROM users")[0][0] == 2
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["result"]["user_id"] == "1"
    assert op(engine, conn, "get_user", "alice@example.com")["result"]["user_id"] == "1"


# --- 4. an old legacy password keeps working after a reset --------------------------------


def test_cant_log_in_with_the_old_legacy_password_through_another_identifier(engine, make_tenant):
    """Finding 4. Layer: engine.connections._migrate (a migrated user is decided by the store hash)."""
    conn = make_tenant("sqlite", True, scripts=scripts())
    sql(conn, "UPDATE users SET username = 'alice' WHERE id = 1")
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["ok"]
    assert op(engine, conn, "change_password", "alice@example.com", "looking-glass")["result"] is True
    res = op(engine, conn, "login", "alice", "wonderland")  # the legacy script still accepts this
    assert res["scripts_called"] == ["login"]
    assert res["ok"] is False and res["error"]["name"] == "WrongUsernameOrPasswordError"
    assert res["error"]["user_known"] is True and res["from_platform_store"] is True
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["ok"] is False
    assert op(engine, conn, "login", "alice@example.com", "looking-glass")["ok"] is True


# --- 5. change_email before the first login -----------------------------------------------


def test_cant_break_an_account_by_changing_its_email_before_the_first_login(engine, make_tenant):
    """Finding 5. Layer: engine.connections (imported row keeps legacy_email; login migrates it fully)."""
    conn = make_tenant("sqlite", True)
    res = op(engine, conn, "change_email", "alice@example.com", "alice@new.example", True)
    assert res["ok"] and res["result"] is True
    login = op(engine, conn, "login", "alice@new.example", "wonderland")
    assert login["ok"], login["error"]
    assert login["result"]["user_id"] == "1" and login["result"]["email"] == "alice@new.example"
    assert login["migrated"] is True and login["scripts_called"] == ["login"]
    stored = conn.store.find("alice@new.example")
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2id$")
    again = op(engine, conn, "login", "alice@new.example", "wonderland")
    assert again["ok"] and again["scripts_called"] == []  # migrated for good
    assert op(engine, conn, "login", "alice@new.example", "wrong")["ok"] is False
    assert conn.store.count() == 1


# --- 6. delete_user in migration mode keeps the remembered id ------------------------------


def test_cant_lock_out_a_recreated_user_after_delete_in_migration_mode(engine, make_tenant):
    """Finding 6. Layer: engine.userstore.UserStore.delete (forgets remembered ids)."""
    conn = make_tenant("sqlite", True)
    assert op(engine, conn, "login", "bob@example.com", "builder")["result"]["user_id"] == "2"
    assert op(engine, conn, "delete_user", "2")["result"] is True
    sql(conn, "DELETE FROM users WHERE id = 2")
    new_id = add_legacy_user(conn, "bob@example.com", "builder", nickname="bob")
    assert new_id != "2"
    res = op(engine, conn, "login", "bob@example.com", "builder")
    assert res["ok"], res["error"]
    assert res["result"]["user_id"] == new_id and res["migrated"] is True


# --- 7. signup stores whatever the caller sends ------------------------------------------


@pytest.mark.parametrize("import_users", [False, True], ids=["legacy", "migration"])
@pytest.mark.parametrize("extra", [{"app_metadata": {"roles": ["admin"]}}, {"user_id": "1"},
                                   {"email_verified": True}, {"tenant": "other"}])
def test_cant_smuggle_fields_through_signup(engine, make_tenant, import_users, extra):
    """Finding 7. Layer: engine.connections._signup_user (documented fields only)."""
    conn = make_tenant("sqlite", import_users)
    res = op(engine, conn, "signup", {"email": "eve@example.com", "password": "eve-pw", **extra})
    assert res["ok"] is False and res["error"]["code"] == "bad_request"
    assert res["error"]["field"] == next(iter(extra)) and res["scripts_called"] == []
    assert conn.store.count() == 0
    assert sql(conn, "SELECT count(*) FROM users")[0][0] == 2


def test_cant_reach_app_metadata_through_user_metadata(engine, make_tenant):
    """Finding 7 (the allowed path). Layer: engine.connections.op_signup."""
    conn = make_tenant("sqlite", True)
    res = op(engine, conn, "signup", {"email": "eve@example.com", "password": "eve-pw", "nickname": "eve",
                                      "user_metadata": {"app_metadata": {"roles": ["admin"]}}})
    assert res["ok"], res["error"]
    login = op(engine, conn, "login", "eve@example.com", "eve-pw")["result"]
    assert "app_metadata" not in login and login["user_metadata"] == {"app_metadata": {"roles": ["admin"]}}


# --- 8. truncated passwords and unencodable ones -------------------------------------------


def test_cant_log_in_with_a_password_that_only_shares_the_first_72_bytes(engine, make_tenant):
    """Finding 8 (truncation). Layer: engine.hashing (argon2id reads the whole password)."""
    conn = make_tenant("sqlite", True)
    assert op(engine, conn, "signup", {"email": "long@example.com", "password": "A" * 72 + "x"})["ok"]
    res = op(engine, conn, "login", "long@example.com", "A" * 72 + "y")
    assert res["ok"] is False and res["error"]["user_known"] is True
    assert op(engine, conn, "login", "long@example.com", "A" * 72 + "x")["ok"] is True


@pytest.mark.parametrize("import_users", [False, True], ids=["legacy", "migration"])
@pytest.mark.parametrize("operation,args", [
    ("login", ["alice@example.com", "pw\udc80"]),
    ("login", ["alice\ud800@example.com", "pw"]),
    ("signup", [{"email": "s@example.com", "password": "\ud83d"}]),
    ("change_password", ["alice@example.com", "new\udfff"]),
])
def test_cant_crash_a_flow_with_an_unencodable_password(engine, make_tenant, import_users, operation, args):
    """Finding 8 (lone surrogates). Layer: engine.connections (_password/_text refuse before any script)."""
    from scriptvisor.engine.errors import BadRequest

    conn = make_tenant("sqlite", import_users)
    try:  # refused when the arguments are read (raised) or by the operation (returned): both before any script
        res = op(engine, conn, operation, *args)
    except BadRequest as exc:
        res = {"ok": False, "error": exc.to_dict(), "scripts_called": []}
    assert res["ok"] is False and res["error"]["code"] == "bad_request"
    assert res["error"]["field"] in ("password", "email", "new_password", "user") and res["scripts_called"] == []
    assert conn.store.count() == 0
    assert op(engine, conn, "login", "alice@example.com", "wonderland")["ok"]  # nothing broke


# --- 9. enumeration by timing ------------------------------------------------------------


def test_cant_tell_an_unknown_user_by_the_work_a_login_does(tmp_path, monkeypatch):
    """Finding 9. Layer: the template login (one bcrypt check for an unknown user too) and
    engine.connections (a dummy verification where the platform answers "unknown").

    The time itself is measured by ``bench/login_timing.py`` (timing goals are
    never asserted in tests); here the amount of work is: an unknown email
    costs exactly one bcrypt check at the connection's cost, like a wrong password.
    """
    import sqlite3

    from scriptvisor.engine.tenantdir import TEMPLATES_DIR, seed_sqlite
    from scriptvisor.sandbox.context import WorkerContext
    from scriptvisor.sandbox.facades import crypto
    from scriptvisor.sandbox.runner import Runner

    data = tmp_path / "data"
    data.mkdir()
    seed_sqlite(data / "legacy.db", rounds=4)
    assert sqlite3.connect(data / "legacy.db").execute("SELECT count(*) FROM users").fetchone()[0] >= 1
    checked: list[int] = []
    real = crypto._bcrypt.checkpw

    def counting(password, hashed):
        checked.append(int(hashed[4:6]))
        return real(password, hashed)

    monkeypatch.setattr(crypto._bcrypt, "checkpw", counting)
    source = (TEMPLATES_DIR / "sqlite" / "login.py").read_text()
    from scriptvisor.sandbox import context

    worker = WorkerContext(tenant="acme", data_dir=str(data))
    context.set_worker(worker)
    runner = Runner(worker)

    def login(email, password):
        checked.clear()
        out = runner.invoke(path="/t/login.py", source=source, source_hash="", function="login",
                            args=[email, password], configuration={"BCRYPT_ROUNDS": 4}, timeout=10.0)
        assert out["ok"] is False, out
        return out["error"], list(checked)

    try:
        wrong_error, wrong_checks = login("alice@example.com", "not-wonderland")
        unknown_error, unknown_checks = login("nobody@example.com", "not-wonderland")
    finally:
        worker.run_cleanups()
        context.set_worker(None)
    assert wrong_error["user_known"] is True and unknown_error["user_known"] is False
    assert wrong_checks == [4] and unknown_checks == [4]

    # where the platform itself answers "unknown" (a migration that was ended), it verifies a dummy hash
    from scriptvisor.engine.hashing import FAST_HASHER, Hasher

    calls = []
    monkeypatch.setattr(Hasher, "verify", lambda self, stored, password: calls.append(stored) or False)
    assert FAST_HASHER.dummy_verify("x") is False and len(calls) == 1 and calls[0].startswith("$argon2id$")


def test_cant_tell_an_ended_migration_unknown_user_from_a_wrong_password(engine, make_tenant, monkeypatch):
    """Finding 9 (platform side). Layer: engine.connections.op_login (dummy verification)."""
    conn = make_tenant("sqlite", True, scripts={
        "login": "def login(email, password, callback):\n    callback(None, None)\n",
        "get_user": "def get_user(email, callback):\n    callback(None)\n"})
    verified = []
    real = type(conn.store.hasher).verify
    monkeypatch.setattr(type(conn.store.hasher), "verify",
                        lambda self, stored, pw: verified.append(stored) or real(self, stored, pw))
    res = op(engine, conn, "login", "nobody@example.com", "pw")
    assert res["ok"] is False and res["error"]["user_known"] is False
    assert len(verified) == 1 and verified[0].startswith("$argon2id$")
