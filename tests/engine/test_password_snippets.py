"""templates/snippets: the login variants for Django, WordPress and crypt tables,
run in a real worker against sqlite tables holding hashes that the reference
implementations wrote (tests/sandbox/data/password_vectors.json; the WordPress
6.8 ``$wp$`` hash below was made by PHP 8.2's password_hash over WordPress's
HMAC-SHA384 pre-hash)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from scriptvisor.engine import TenantLimits
from scriptvisor.engine.tenantdir import TEMPLATES_DIR

VECTORS = json.loads((Path(__file__).parents[1] / "sandbox" / "data" / "password_vectors.json")
                     .read_text("utf-8"))["vectors"]
#: php -r 'echo "$wp" . password_hash(base64_encode(hash_hmac("sha384", "wonderland", "wp-sha384", true)), PASSWORD_BCRYPT);'
WP68 = "$wp$2y$10$zCMpuT8mvyFX4cA5wr6hv.O1Sx09hEd0l7A1pijIftc/gcb291wGy"


def _vector(scheme: str, password: str = "wonderland") -> str:
    return next(v["hash"] for v in VECTORS if v["scheme"] == scheme and v["password"] == password)


def _django_hash() -> str:
    v = next(v for v in VECTORS if v["scheme"] == "django_pbkdf2_sha256")
    return v["hash"], v["password"]


TABLES = {
    "django": ("CREATE TABLE auth_user (id INTEGER PRIMARY KEY, username TEXT, email TEXT, password TEXT, "
               "first_name TEXT, is_active INTEGER)",
               "INSERT INTO auth_user VALUES (7, 'alice', 'Alice@Example.com', ?, 'Alice', 1)"),
    "wordpress": ("CREATE TABLE wp_users (ID INTEGER PRIMARY KEY, user_login TEXT, user_email TEXT, "
                  "user_pass TEXT, display_name TEXT)",
                  "INSERT INTO wp_users VALUES (7, 'alice', 'alice@example.com', ?, 'Alice')"),
    "crypt": ("CREATE TABLE accounts (uid INTEGER PRIMARY KEY, mail TEXT, cn TEXT, hash TEXT)",
              "INSERT INTO accounts VALUES (7, 'alice@example.com', 'Alice', ?)"),
}


def _cases():
    django, django_pw = _django_hash()
    yield "django", django, django_pw
    yield "wordpress", _vector("phpass"), "wonderland"
    yield "wordpress", WP68, "wonderland"
    yield "wordpress", _vector("hex_md5"), "wonderland"
    yield "crypt", _vector("sha512_crypt"), "wonderland"
    yield "crypt", _vector("ldap_salted_sha1"), "wonderland"
    yield "crypt", _vector("apr_md5_crypt"), "wonderland"


@pytest.mark.slow
@pytest.mark.parametrize("system,stored,password", list(_cases()),
                         ids=[f"{c[0]}-{c[1][:6]}" for c in _cases()])
def test_snippet_logs_in_with_the_legacy_hash(shared_engine, tmp_path, system, stored, password):
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "legacy.db")
    create, insert = TABLES[system]
    db.execute(create)
    db.execute(insert, (stored,))
    db.commit()
    db.close()
    tenant = f"snip-{system}"
    shared_engine.configure_tenant(tenant, limits=TenantLimits(timeout=20.0), data_dir=str(data))
    source = (TEMPLATES_DIR / "snippets" / f"login_{system}.py").read_text("utf-8")
    config = {"DB_FILE": "legacy.db"}
    ok = shared_engine.invoke(tenant, source=source, path="login.py", args=["alice@example.com", password],
                              configuration=config)
    assert ok.ok, ok.error
    assert ok.result["user_id"] == "7" and ok.result["email"].lower() == "alice@example.com"
    bad = shared_engine.invoke(tenant, source=source, path="login.py", args=["alice@example.com", "nope"],
                               configuration=config)
    assert bad.error["code"] == "script_error" and bad.error["name"] == "WrongUsernameOrPasswordError"
    assert bad.error.get("email_or_id") == "alice@example.com"
