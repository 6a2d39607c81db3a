"""The platform user store: embedded SQLite and shared PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from scriptvisor.engine.hashing import FAST_HASHER
from scriptvisor.engine.userstore import StoredUser, UserStore


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    """``make_store(tenant)``: a new handle on the same backing database (a second node)."""
    made = []
    if request.param == "postgres":
        params = request.getfixturevalue("pg_database")
        dsn = " ".join(f"{k}={v}" for k, v in params.items())

        def make(tenant="acme"):
            store = UserStore(tenant, dsn=dsn, hasher=FAST_HASHER)
            made.append(store)
            return store

        first = make("cleanup")
        first._exec("DROP TABLE IF EXISTS sv_users")
        first._exec("DROP TABLE IF EXISTS sv_seen_ids")
        first.close()
        made.clear()
    else:
        def make(tenant="acme"):
            store = UserStore(tenant, path=str(tmp_path / "platform.db"), hasher=FAST_HASHER)
            made.append(store)
            return store
    yield make
    for store in made:
        store.close()


def _user(user_id="1", email="alice@example.com", password="wonderland", store=None):
    return StoredUser(user_id=user_id, email=email, password_hash=store.hash(password) if password else None,
                      email_verified=False, profile={"user_id": user_id, "nickname": "alice"})


def test_passwords_are_stored_as_argon2id_hashes(make_store):
    store = make_store()
    kept = store.insert(_user(store=store))
    row = store._exec("SELECT password_hash FROM sv_users WHERE tenant = ?", (store.tenant,))[0][0]
    assert row.startswith("$argon2id$") and "wonderland" not in row
    assert store.verify_password(kept, "wonderland") and not store.verify_password(kept, "x")
    assert store.find("ALICE@example.com").public_profile() == {
        "user_id": "1", "email": "alice@example.com", "email_verified": False, "nickname": "alice"}


def test_same_user_inserted_twice_is_one_row(make_store):
    store = make_store()
    a = store.insert(_user(store=store))
    b = store.insert(_user(password="other", store=store))
    assert store.count() == 1 and a.password_hash == b.password_hash


def test_insert_never_returns_another_user(make_store):
    """Same id with another email, or another id with the same email key: IdentityClash, nothing written."""
    from scriptvisor.engine.userstore import IdentityClash

    store = make_store()
    store.insert(_user(store=store))
    for clash in (_user("1", "mallory@example.com", store=store), _user("9", " ALICE@Example.com ", store=store)):
        with pytest.raises(IdentityClash) as info:
            store.insert(clash)
        assert info.value.existing.user_id == "1" and info.value.existing.email == "alice@example.com"
    assert store.count() == 1 and store.find_by_id("9") is None


def test_two_nodes_migrating_the_same_user_at_once_make_one_user(make_store):
    nodes = [make_store(), make_store()]
    hashes = [nodes[0].hash("wonderland")] * 2
    barrier = threading.Barrier(len(nodes))
    results = []

    def migrate(store, password_hash):
        barrier.wait()
        results.append(store.insert(StoredUser("1", "alice@example.com", password_hash, False, {})))

    threads = [threading.Thread(target=migrate, args=(s, h)) for s, h in zip(nodes, hashes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert nodes[0].count() == 1
    assert {r.user_id for r in results} == {"1"}


def test_tenants_do_not_see_each_other(make_store):
    acme, other = make_store("acme"), make_store("other")
    acme.insert(_user(store=acme))
    assert other.find("alice@example.com") is None and other.count() == 0
    other.insert(_user(store=other))
    assert acme.count() == 1 and other.count() == 1


def test_email_change_to_a_taken_email_is_refused(make_store):
    store = make_store()
    store.insert(_user(store=store))
    store.insert(_user("2", "bob@example.com", store=store))
    assert store.set_email("1", "bob@example.com", True) is False
    assert store.set_email("1", "alice@new.example", True) is True
    assert store.find("alice@new.example").email_verified is True


def test_seen_user_ids(make_store):
    store = make_store()
    assert store.seen_user_id("a@example.com", "u1", "get_user") is None
    assert store.seen_user_id("A@example.com", "u1", "login") is None
    assert store.seen_user_id("a@example.com", "u2", "login") == ("u1", "get_user")
    store.forget_seen(user_id="u1")
    assert store.seen_user_id("a@example.com", "u2", "login") is None


def test_keys_made_by_an_earlier_version_are_recomputed_once(make_store):
    """Rows keyed by the old lower()/strip() form are found under the NFKC+lower key after an upgrade."""
    store = make_store()
    store._exec("INSERT INTO sv_users (tenant, user_id, email, email_key, profile, source, created_at, updated_at)"
                " VALUES (?, '7', ?, ?, '{}', 'migrated', 0, 0)",
                (store.tenant, "\uff22OB@example.com", "\uff42ob@example.com"))  # fullwidth B, old key
    store._exec("INSERT INTO sv_seen_ids (tenant, email_key, user_id, script) VALUES (?, ?, '7', 'login')",
                (store.tenant, "stra\u00dfe@example.com"))
    assert store.find("bob@example.com") is None
    store._exec("DELETE FROM sv_meta")
    store.close()
    upgraded = make_store()
    assert upgraded.find("bob@example.com").user_id == "7" and upgraded.key_conflicts == []
    assert upgraded.seen_user_id("STRASSE@example.com", "8", "get_user") is None  # ß and ss: different keys
    assert upgraded.seen_user_id("STRA\u00dfE@example.com", "9", "get_user") == ("7", "login")


def test_ids_remembered_under_casefolded_keys_are_forgotten_at_the_upgrade(make_store):
    """A casefold key ("strasse") may have come from "straße": which one is unknown, so the hint goes."""
    store = make_store()
    store._exec("INSERT INTO sv_seen_ids (tenant, email_key, user_id, script) VALUES (?, ?, '7', 'login')",
                (store.tenant, "strasse@example.com"))
    store._exec("UPDATE sv_meta SET value = 'nfkc-casefold-1' WHERE name = 'identity_key'")
    store.close()
    upgraded = make_store()
    assert upgraded.seen_user_id("strasse@example.com", "8", "login") is None
    assert upgraded._exec("SELECT value FROM sv_meta WHERE name = 'identity_key'")[0][0] == "nfkc-lower-1"


def test_bcrypt_hashes_in_the_store_are_rehashed_to_argon2id_on_login(make_store):
    """Rows hashed with bcrypt by earlier versions: verified, then replaced by argon2id on the next good login."""
    from scriptvisor.sandbox.facades.crypto import hash_password

    store = make_store()
    user = store.insert(StoredUser("1", "alice@example.com", hash_password("wonderland", 4), False, {}))
    assert store.check_and_upgrade(user, "not-it") is False
    assert store.find_by_id("1").password_hash.startswith("$2b$04$")  # a failed login changes nothing
    assert store.check_and_upgrade(user, "wonderland") is True
    stored = store.find_by_id("1").password_hash
    assert stored.startswith("$argon2id$") and store.hasher.verify(stored, "wonderland")
    # a password over 72 bytes only ever matched a bcrypt hash on its first 72: kept as bcrypt, not pinned
    long_user = store.insert(StoredUser("2", "long@example.com", hash_password("A" * 80, 4), False, {}))
    assert store.check_and_upgrade(long_user, "A" * 80) is True
    assert store.find_by_id("2").password_hash.startswith("$2b$04$")
