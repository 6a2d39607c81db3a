"""The webservice templates against the reference legacy API, in both modes, through the real engine.

Each tenant is made by ``init --template webservice`` (tenant.toml pointed at
the session's API server), loaded by ``load_tenant`` (the ``[[http]]``
declaration travels to the confined workers), and every test runs the
connection operations exactly as ``scriptvisor connection`` does. The same
cases as tests/db/test_templates.py; the API's own state is checked behind
the scripts' backs with direct requests.
"""

from __future__ import annotations

import pytest

from scriptvisor.engine.connections import run_operation_on

MODES = [pytest.param(False, id="legacy"), pytest.param(True, id="migration")]


@pytest.fixture(params=MODES)
def tenant(request, make_tenant):
    return make_tenant(request.param)


def op(engine, conn, operation, *args):
    return run_operation_on(engine, conn, operation, list(args))


def api_user(conn, email):
    status, body = conn.api.call("GET", f"users?email={email}")
    return body if status == 200 else None


def test_login_success(engine, tenant):
    res = op(engine, tenant, "login", "alice@example.com", "wonderland")
    assert res["ok"], res["error"]
    assert res["result"] == {"user_id": "1", "email": "alice@example.com", "nickname": "alice",
                             "email_verified": True}
    assert res["scripts_called"] == ["login"]
    if tenant.import_users:
        assert res["from_platform_store"] is False and res["migrated"] is True
    else:
        assert "from_platform_store" not in res


def test_login_wrong_password(engine, tenant):
    res = op(engine, tenant, "login", "alice@example.com", "not-wonderland")
    assert res["ok"] is False
    assert res["error"]["name"] == "WrongUsernameOrPasswordError"
    assert res["error"]["user_known"] is True
    assert tenant.store.find("alice@example.com") is None  # nothing migrated


def test_login_unknown_user(engine, tenant):
    res = op(engine, tenant, "login", "nobody@example.com", "x")
    assert res["ok"] is False
    assert res["error"]["name"] == "WrongUsernameOrPasswordError"
    assert res["error"]["user_known"] is False


def test_get_user_found_and_not_found(engine, tenant):
    res = op(engine, tenant, "get_user", "bob@example.com")
    assert res["ok"] and res["result"]["user_id"] == "2"
    assert res["result"]["email_verified"] is False
    assert "password" not in res["result"]
    res = op(engine, tenant, "get_user", "nobody@example.com")
    assert res["ok"] and res["result"] is None
    assert res["scripts_called"] == ["get_user"]


def test_signup_then_login(engine, tenant):
    res = op(engine, tenant, "signup", {"email": "carol@example.com", "password": "s3cret", "nickname": "caz"})
    assert res["ok"], res["error"]
    if tenant.import_users:
        assert res["scripts_called"] == ["get_user"]
        assert res["from_platform_store"] is True
        assert api_user(tenant, "carol@example.com") is None  # signed up on the platform only
    else:
        assert res["scripts_called"] == ["get_user", "create", "login"]
        assert res["result"]["nickname"] == "caz"
        assert api_user(tenant, "carol@example.com")["nickname"] == "caz"
    res = op(engine, tenant, "login", "carol@example.com", "s3cret")
    assert res["ok"], res["error"]
    assert res["result"]["email"] == "carol@example.com"
    assert res["scripts_called"] == ([] if tenant.import_users else ["login"])


def test_duplicate_signup_is_user_exists(engine, tenant):
    res = op(engine, tenant, "signup", {"email": "alice@example.com", "password": "again"})
    assert res["ok"] is False
    assert res["error"]["name"] == "ValidationError"
    assert res["error"]["validation_code"] == "user_exists"
    assert res["scripts_called"] == ["get_user"]  # create is skipped


def test_create_script_reports_duplicates_itself(engine, tenant):
    """Even without the get_user pre-check, create.py answers user_exists (the API's 409), not a crash."""
    res = engine.invoke(tenant.tenant, path=str(tenant.script_path("create")), args=[
        {"email": "alice@example.com", "password": "x", "tenant": tenant.tenant, "connection": "c"}],
        configuration=dict(tenant.configuration))
    assert res.ok is False
    assert res.error["name"] == "ValidationError" and res.error["validation_code"] == "user_exists"


def test_verify_email(engine, tenant):
    res = op(engine, tenant, "verify_email", "bob@example.com")
    assert res["ok"] and res["result"] is True
    assert op(engine, tenant, "get_user", "bob@example.com")["result"]["email_verified"] is True


def test_change_password_then_login(engine, tenant):
    res = op(engine, tenant, "change_password", "alice@example.com", "looking-glass")
    assert res["ok"] and res["result"] is True, res
    assert op(engine, tenant, "login", "alice@example.com", "looking-glass")["ok"] is True
    old = op(engine, tenant, "login", "alice@example.com", "wonderland")
    assert old["ok"] is False and old["error"]["user_known"] is True


def test_change_password_of_unknown_user_changes_nothing(engine, tenant):
    res = op(engine, tenant, "change_password", "nobody@example.com", "pw")
    assert res["ok"] and res["result"] is False


def test_change_email(engine, tenant):
    res = op(engine, tenant, "change_email", "alice@example.com", "alice@new.example", True)
    assert res["ok"] and res["result"] is True, res
    moved = op(engine, tenant, "get_user", "alice@new.example")
    assert moved["result"]["user_id"] == "1"
    assert moved["result"]["email_verified"] is True
    if not tenant.import_users:
        assert op(engine, tenant, "get_user", "alice@example.com")["result"] is None


def test_change_email_to_a_taken_address(engine, tenant):
    res = op(engine, tenant, "change_email", "alice@example.com", "bob@example.com", False)
    assert res["ok"] is False and res["error"]["validation_code"] == "user_exists"


def test_delete(engine, tenant):
    if tenant.import_users:
        assert op(engine, tenant, "login", "bob@example.com", "builder")["ok"]
    res = op(engine, tenant, "delete_user", "2")
    assert res["ok"], res["error"]
    if tenant.import_users:
        assert res["result"] is True and res["scripts_called"] == []
        assert tenant.store.find_by_id("2") is None
        # still in the legacy API: the next login migrates bob again (documented)
        again = op(engine, tenant, "login", "bob@example.com", "builder")
        assert again["ok"] and again["scripts_called"] == ["login"] and again["result"]["user_id"] == "2"
    else:
        assert res["scripts_called"] == ["delete"]
        assert op(engine, tenant, "get_user", "bob@example.com")["result"] is None
        assert api_user(tenant, "bob@example.com") is None


def test_api_down_is_an_error_not_a_wrong_password(engine, make_tenant):
    """A refused connection reaches callback(error) as http.ConnectError, never as 'unknown user'."""
    conn = make_tenant(False, base_url="http://127.0.0.1:9/api/", api_url="http://127.0.0.1:9/api/")
    res = op(engine, conn, "login", "alice@example.com", "wonderland")
    assert res["ok"] is False
    assert res["error"]["name"] == "ConnectError" and "127.0.0.1:9" in res["error"]["message"]


# --- migration mode ------------------------------------------------------------


@pytest.fixture
def migrating(make_tenant):
    return make_tenant(True)


def test_migration_calls_the_legacy_login_once(engine, migrating):
    first = op(engine, migrating, "login", "alice@example.com", "wonderland")
    assert first["scripts_called"] == ["login"] and first["from_platform_store"] is False
    stored = migrating.store.find("alice@example.com")
    assert stored.user_id == "1"
    assert stored.password_hash.startswith("$argon2id$") and "wonderland" not in stored.password_hash
    for _ in range(2):
        again = op(engine, migrating, "login", "alice@example.com", "wonderland")
        assert again["ok"] and again["scripts_called"] == [] and again["from_platform_store"] is True
        assert again["result"]["user_id"] == "1"
    wrong = op(engine, migrating, "login", "alice@example.com", "nope")
    assert wrong["scripts_called"] == [] and wrong["error"]["user_known"] is True
    assert migrating.api.calls().get("login alice@example.com") == 1  # the API saw one login


def test_migrated_user_survives_the_legacy_row(engine, migrating):
    assert op(engine, migrating, "login", "alice@example.com", "wonderland")["ok"]
    assert migrating.api.call("DELETE", "users/1") == (200, {"deleted": True})
    res = op(engine, migrating, "login", "alice@example.com", "wonderland")
    assert res["ok"] and res["from_platform_store"] is True and res["result"]["user_id"] == "1"
    assert op(engine, migrating, "get_user", "alice@example.com")["result"]["user_id"] == "1"


def test_password_reset_of_an_unmigrated_user_goes_through_get_user(engine, migrating):
    res = op(engine, migrating, "change_password", "bob@example.com", "new-builder")
    assert res["ok"] and res["result"] is True and res["scripts_called"] == ["get_user"]
    login = op(engine, migrating, "login", "bob@example.com", "new-builder")
    assert login["ok"] and login["scripts_called"] == [] and login["result"]["user_id"] == "2"
    # the legacy API still has the old password: it is not the source of truth any more
    assert op(engine, migrating, "login", "bob@example.com", "builder")["ok"] is False


def test_verify_of_an_unmigrated_user_imports_it_without_a_password(engine, migrating):
    assert op(engine, migrating, "verify_email", "bob@example.com")["result"] is True
    stored = migrating.store.find("bob@example.com")
    assert stored.email_verified is True and stored.password_hash is None
    login = op(engine, migrating, "login", "bob@example.com", "builder")
    assert login["ok"] and login["scripts_called"] == ["login"]
    assert op(engine, migrating, "login", "bob@example.com", "builder")["scripts_called"] == []
