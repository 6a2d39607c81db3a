"""Profile contract: what login/get_user return is validated and normalised."""

from __future__ import annotations

import math

import pytest

from scriptvisor.engine.contract import normalize_profile
from scriptvisor.engine.errors import ContractViolation
from tests.db.conftest import engine, make_tenant  # noqa: F401  (fixtures: real engine, tenant folders)


def _field(value, script="login"):
    with pytest.raises(ContractViolation) as info:
        normalize_profile(value, script=script)
    data = info.value.to_dict()
    assert data["code"] == "contract_violation" and data["name"] == "ContractViolation"
    assert data["script"] == script
    return data["field"]


def test_id_is_an_alias_of_user_id_and_numbers_become_strings():
    assert normalize_profile({"id": 7, "email": "a@b.c"}, script="login") == {"user_id": "7", "email": "a@b.c"}
    assert normalize_profile({"user_id": 7.0}, script="login")["user_id"] == "7"
    assert normalize_profile({"id": "x", "user_id": "x"}, script="login") == {"user_id": "x"}


def test_metadata_is_an_alias_of_app_metadata():
    out = normalize_profile({"user_id": "1", "metadata": {"plan": "gold"}}, script="get_user")
    assert out == {"user_id": "1", "app_metadata": {"plan": "gold"}}


@pytest.mark.parametrize("profile,field", [
    ({"email": "a@b.c"}, "user_id"),
    ({"user_id": None}, "user_id"),
    ({"user_id": True}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": 1.5}, "user_id"),
    ({"user_id": [1]}, "user_id"),
    ({"user_id": "x" * 300}, "user_id"),
    ({"id": "1", "user_id": "2"}, "id"),
    ({"user_id": "1", "metadata": {"a": 1}, "app_metadata": {"a": 2}}, "metadata"),
    ({"user_id": "1", "user_metadata": "text"}, "user_metadata"),
    ({"user_id": "1", "email": 5}, "email"),
    ({"user_id": "1", "email_verified": "yes"}, "email_verified"),
    ({"user_id": "1", "user_metadata": {"score": math.nan}}, "user_metadata.score"),
    ({"user_id": "1", "app_metadata": {"when": object()}}, "app_metadata.when"),
    (["user_id", "1"], "profile"),
    ("u1", "profile"),
])
def test_broken_profiles_name_the_field(profile, field):
    assert _field(profile) == field


# --- through the engine: scripts that break the contract -------------------------

LOGIN_RETURNS = "def login(email, password, callback):\n    callback(None, {profile})\n"
GET_USER_RETURNS = "def get_user(email, callback):\n    callback(None, {profile})\n"


def _scripts(login_profile, get_user_profile='{"user_id": "u-1", "email": email}'):
    return {"login": LOGIN_RETURNS.format(profile=login_profile),
            "get_user": GET_USER_RETURNS.format(profile=get_user_profile)}


@pytest.fixture(params=[False, True], ids=["legacy", "migration"])
def mode(request):
    return request.param


def test_missing_user_id_from_a_script_is_a_contract_violation(engine, make_tenant, mode):
    from scriptvisor.engine.connections import run_operation_on

    conn = make_tenant("sqlite", mode, scripts=_scripts('{"email": email}'))
    res = run_operation_on(engine, conn, "login", ["a@example.com", "pw"])
    assert res["ok"] is False
    assert res["error"]["code"] == "contract_violation" and res["error"]["field"] == "user_id"
    assert conn.store.find("a@example.com") is None  # nothing migrated from a broken profile


def test_login_and_get_user_disagreeing_on_user_id(engine, make_tenant, mode):
    from scriptvisor.engine.connections import run_operation_on

    conn = make_tenant("sqlite", mode, scripts=_scripts('{"user_id": "u-2", "email": email}'))
    assert run_operation_on(engine, conn, "get_user", ["a@example.com"])["result"]["user_id"] == "u-1"
    res = run_operation_on(engine, conn, "login", ["a@example.com", "pw"])
    assert res["ok"] is False
    assert res["error"]["code"] == "contract_violation"
    assert res["error"]["field"] == "user_id"
    assert res["error"]["previous_user_id"] == "u-1" and res["error"]["previous_script"] == "get_user"
    assert conn.store.find("a@example.com") is None


def test_id_and_metadata_aliases_through_the_engine(engine, make_tenant):
    from scriptvisor.engine.connections import run_operation_on

    conn = make_tenant("sqlite", True, scripts=_scripts('{"id": 42, "email": email, "metadata": {"plan": "pro"}}',
                                                         '{"id": 42, "email": email}'))
    res = run_operation_on(engine, conn, "login", ["a@example.com", "pw"])
    assert res["ok"], res["error"]
    assert res["result"]["user_id"] == "42" and res["result"]["app_metadata"] == {"plan": "pro"}
    assert "id" not in res["result"] and "metadata" not in res["result"]
    assert conn.store.find("a@example.com").user_id == "42"


def test_ended_migration_login_is_a_no_op(engine, make_tenant):
    """Ending a migration: login/get_user call back (None, None); unknown users stay unknown."""
    from scriptvisor.engine.connections import run_operation_on

    conn = make_tenant("sqlite", True, scripts=_scripts("None", "None"))
    res = run_operation_on(engine, conn, "login", ["a@example.com", "pw"])
    assert res["ok"] is False and res["error"]["user_known"] is False
    assert run_operation_on(engine, conn, "get_user", ["a@example.com"])["result"] is None


def test_missing_script_and_bad_arguments_are_structured(engine, make_tenant):
    from scriptvisor.engine.connections import run_operation_on
    from scriptvisor.engine.errors import BadRequest

    conn = make_tenant("sqlite", False, scripts=_scripts('{"user_id": "1"}', "None"))
    res = run_operation_on(engine, conn, "signup", [{"email": "n@example.com", "password": "pw"}])
    assert res["ok"] is False and res["error"]["code"] == "bad_request" and res["error"]["script"] == "create"
    with pytest.raises(BadRequest, match="takes 2 argument"):
        run_operation_on(engine, conn, "login", ["only-email"])
    with pytest.raises(BadRequest, match="unknown operation"):
        run_operation_on(engine, conn, "drop_everything", [])
