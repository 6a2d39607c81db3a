"""Review of issue 17: Unicode forms of an email that the identity key must not merge (or must find).

The identity key may fold two addresses into one user only when the legacy
existence check (``get_user`` asked for the key's form) can find a legacy user
holding either of them.  Casefold's expansions (``ß`` -> ``ss``, ``ς`` -> ``σ``)
merge addresses a legacy table keeps apart, so a signup of the plain form
squatted (migration mode) or locked out for good (legacy mode) a legacy user
with the other form; and a legacy row stored decomposed (NFD) was not found by
the composed key.  Tenants and helpers as in ``test_cant_account_integrity``.
"""

from __future__ import annotations

import unicodedata

import pytest

from tests.db.conftest import engine, make_tenant, pg_database, pg_legacy  # noqa: F401  (fixtures: engine, tenants, PostgreSQL and its role)
from tests.db.legacy import _hash
from tests.security.test_cant_account_integrity import add_legacy_user, op, sql

SHARP_S = "anna@stra\u00dfe.de"     # a legacy user's real address (German IDN domains keep ß)
PLAIN_SS = "anna@strasse.de"         # casefold(SHARP_S): a different mailbox


@pytest.mark.parametrize("import_users", [True, False], ids=["migration", "legacy"])
def test_cant_squat_a_legacy_user_by_signup_with_the_casefolded_address(engine, make_tenant, import_users):
    """Layer: engine.userstore.email_key (lower(), not casefold(): ß and ss are different users)."""
    conn = make_tenant("sqlite", import_users)
    anna = add_legacy_user(conn, SHARP_S, "anna-pw")
    signup = op(engine, conn, "signup", {"email": PLAIN_SS, "password": "attacker-pw"})
    assert signup["ok"] is True and signup["result"]["email"] == PLAIN_SS
    login = op(engine, conn, "login", SHARP_S, "anna-pw")
    assert login["ok"] is True, login["error"]
    assert login["result"]["user_id"] == anna and login["result"]["email"] == SHARP_S
    wrong = op(engine, conn, "login", SHARP_S, "attacker-pw")
    assert wrong["ok"] is False and wrong["error"]["name"] == "WrongUsernameOrPasswordError"
    if import_users:
        assert {u.email for u in conn.store.all_users()} == {PLAIN_SS, SHARP_S}


@pytest.mark.parametrize("import_users", [True, False], ids=["migration", "legacy"])
def test_cant_lock_out_a_legacy_user_whose_address_casefolds_like_another(engine, make_tenant, import_users):
    """Two legacy users, ß and ss: each logs in as themselves, in either order.
    Layer: engine.userstore.email_key (store rows and remembered ids keyed apart)."""
    conn = make_tenant("sqlite", import_users)
    plain = add_legacy_user(conn, PLAIN_SS, "plain-pw")
    sharp = add_legacy_user(conn, SHARP_S, "sharp-pw")
    for _ in range(2):
        first = op(engine, conn, "login", PLAIN_SS, "plain-pw")
        second = op(engine, conn, "login", SHARP_S, "sharp-pw")
        assert first["ok"] and first["result"]["user_id"] == plain, first["error"]
        assert second["ok"] and second["result"]["user_id"] == sharp, second["error"]


@pytest.mark.parametrize("import_users", [True, False], ids=["migration", "legacy"])
def test_cant_squat_a_legacy_user_stored_decomposed_by_signup_composed(engine, make_tenant, import_users):
    """A legacy row written in NFD (e + combining acute) is the composed address's user.
    Layer: engine.connections._legacy_exists (asks get_user for the key's NFD form too)."""
    conn = make_tenant("sqlite", import_users)
    decomposed = unicodedata.normalize("NFD", "jos\u00e9@example.com")
    add_legacy_user(conn, decomposed, "jose-pw")
    res = op(engine, conn, "signup", {"email": "Jos\u00e9@example.com", "password": "attacker-pw"})
    assert res["ok"] is False
    assert res["error"]["code"] == "script_error" and res["error"]["validation_code"] == "user_exists"
    if import_users:
        assert conn.store.count() == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("import_users", [True, False], ids=["migration", "legacy"])
def test_cant_squat_a_mixed_case_legacy_row_by_signup_lowercase(engine, make_tenant, backend, import_users):
    """A legacy row stored as "Carol@Example.com" (imported from elsewhere): the key's form is
    lowercase, so the templates' get_user must compare case-insensitively or the existence
    check misses carol.  Layer: templates/{sqlite,postgres} (get_user and login by email)."""
    conn = make_tenant(backend, import_users)
    sql(conn, "INSERT INTO users (email, password, nickname) VALUES (%s, %s, 'carol')",
        "Carol@Example.com", _hash("carol-pw"))
    carol = str(sql(conn, "SELECT id FROM users WHERE email = %s", "Carol@Example.com")[0][0])
    res = op(engine, conn, "signup", {"email": "carol@example.com", "password": "attacker-pw"})
    assert res["ok"] is False
    assert res["error"]["code"] == "script_error" and res["error"]["validation_code"] == "user_exists"
    login = op(engine, conn, "login", "carol@example.com", "carol-pw")
    assert login["ok"] is True and login["result"]["user_id"] == carol, login["error"]


@pytest.mark.parametrize("import_users", [True, False], ids=["migration", "legacy"])
def test_cant_squat_a_legacy_username_by_signup_with_it_as_the_email(engine, make_tenant, import_users):
    """login takes the identifier as typed, which may be a username the legacy side knows; a
    signup whose "email" is that username took it over (the store answered first in migration
    mode; the legacy table got a second row matching it in legacy mode).  An email has an "@".
    Layer: engine.connections._signup_user / op_change_email (bad_request naming the field)."""
    from tests.security.test_cant_account_integrity import scripts

    conn = make_tenant("sqlite", import_users, scripts=scripts())
    dave = add_legacy_user(conn, "dave@example.com", "dave-pw", username="dave")
    res = op(engine, conn, "signup", {"email": "dave", "password": "attacker-pw"})
    assert res["ok"] is False and res["error"]["code"] == "bad_request" and res["error"]["field"] == "email"
    assert op(engine, conn, "signup", {"email": "carol@example.com", "password": "carol-pw"})["ok"]
    res = op(engine, conn, "change_email", "carol@example.com", "dave", False)
    assert res["ok"] is False and res["error"]["code"] == "bad_request" and res["error"]["field"] == "new_email"
    login = op(engine, conn, "login", "dave", "dave-pw")
    assert login["ok"] is True and login["result"]["user_id"] == dave, login["error"]
    assert op(engine, conn, "login", "dave", "attacker-pw")["ok"] is False


@pytest.mark.parametrize("operation, args, field", [
    ("login", ["alice@example.com\x00", "wonderland"], "email"),
    ("get_user", ["\x00alice@example.com"], "email"),
    ("signup", [{"email": "z\x00@example.com", "password": "pw"}], "email"),
    ("change_password", ["alice@example.com\x00", "new-pw"], "email"),
    ("change_email", ["alice@example.com", "a\x00@example.com", False], "new_email"),
    ("delete_user", ["1\x00"], "user_id"),
])
def test_cant_turn_a_nul_in_an_identifier_into_a_store_outage(engine, make_tenant, pg_database,
                                                             operation, args, field):
    """PostgreSQL text cannot hold NUL: the shared store refused the statement, which answered
    engine_unavailable (the platform's fault, retried) for an end user's bad input.
    Layer: engine.connections._text (bad_request naming the field, before the store)."""
    from scriptvisor.engine.hashing import FAST_HASHER
    from scriptvisor.engine.userstore import UserStore

    conn = make_tenant("sqlite", True)
    conn.store.close()
    conn.store = UserStore(conn.tenant, dsn=" ".join(f"{k}={v}" for k, v in pg_database.items()),
                           hasher=FAST_HASHER)
    try:
        res = op(engine, conn, operation, *args)
        assert res["ok"] is False
        assert res["error"]["code"] == "bad_request" and res["error"]["field"] == field, res["error"]
        assert op(engine, conn, "login", "alice@example.com", "wonderland")["ok"]
    finally:
        conn.store.close()
