"""Tokens: only hashes stored; a tenant's token opens that tenant only."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from scriptvisor.engine.server import auth
from scriptvisor.engine.tenants import TenantConfigError, load_tenant

HASHES = {"a": (auth.hash_token("tok-a"),), "b": (auth.hash_token("tok-b"), auth.hash_token("tok-b2"))}


@pytest.mark.parametrize(
    ("token", "tenant", "admin", "expected"),
    [
        ("tok-a", "a", None, auth.Decision.ALLOW),
        ("tok-b2", "b", None, auth.Decision.ALLOW),
        (None, "a", None, auth.Decision.UNAUTHENTICATED),
        ("garbage", "a", None, auth.Decision.UNAUTHENTICATED),
        ("tok-a", "b", None, auth.Decision.FORBIDDEN),
        ("tok-b", "a", None, auth.Decision.FORBIDDEN),
        ("tok-a", "unknown", None, auth.Decision.FORBIDDEN),
        ("root", "a", auth.hash_token("root"), auth.Decision.ALLOW),
        ("root", "unknown", auth.hash_token("root"), auth.Decision.ALLOW),
        ("root", "a", None, auth.Decision.UNAUTHENTICATED),
    ],
)
def test_decide(token: str | None, tenant: str, admin: str | None, expected: auth.Decision) -> None:
    assert auth.decide(token, tenant, HASHES, admin) is expected


def test_cant_use_a_token_hash_as_the_token() -> None:
    assert auth.decide(HASHES["a"][0], "a", HASHES) is auth.Decision.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), ("", None),
     (None, None), ("Bearer " + "x" * 600, None)],
)
def test_bearer_token_parsing(header: str | None, expected: str | None) -> None:
    assert auth.bearer_token(header) == expected


def test_admin_hash_from_env() -> None:
    assert auth.admin_hash_from_env({}) is None
    assert auth.admin_hash_from_env({auth.ADMIN_TOKEN_ENV: "x"}) == auth.hash_token("x")
    h = auth.hash_token("y")
    assert auth.admin_hash_from_env({auth.ADMIN_TOKEN_HASH_ENV: h}) == h
    with pytest.raises(ValueError):
        auth.admin_hash_from_env({auth.ADMIN_TOKEN_HASH_ENV: "y"})


def test_create_token_stores_only_the_hash(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    (folder / "scripts").mkdir(parents=True)
    (folder / "tenant.toml").write_text('import_users = false\n[configuration]\nK = "v"')  # no final newline
    (folder / "tenant.toml").chmod(0o600)
    first = auth.create_token(tmp_path, "acme")
    second = auth.create_token(tmp_path, "acme", name="ci \"bot\"")
    assert first != second and first.startswith("svt_") and len(first) > 40
    text = (folder / "tenant.toml").read_text()
    assert first not in text and second not in text
    data = tomllib.loads(text)
    assert data["configuration"] == {"K": "v"}
    assert data["tokens"][1]["name"] == 'ci "bot"'
    tenant = load_tenant(folder)
    assert tenant.token_hashes == (auth.hash_token(first), auth.hash_token(second))
    assert (folder / "tenant.toml").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir() if p.name.startswith(".tenant.")] == []


def test_create_token_refuses_unknown_tenant_and_inline_arrays(tmp_path: Path) -> None:
    with pytest.raises(TenantConfigError, match="missing"):
        auth.create_token(tmp_path, "nobody")
    with pytest.raises(TenantConfigError, match="not a valid tenant name"):
        auth.create_token(tmp_path, "../etc")
    folder = tmp_path / "acme"
    folder.mkdir()
    original = f'tokens = ["{auth.hash_token("t")}"]\n'
    (folder / "tenant.toml").write_text(original)
    with pytest.raises(TenantConfigError, match="inline array"):
        auth.create_token(tmp_path, "acme")
    assert (folder / "tenant.toml").read_text() == original


def test_token_list_and_revoke_by_id(tmp_path: Path) -> None:
    folder = tmp_path / "acme"
    (folder / "scripts").mkdir(parents=True)
    (folder / "tenant.toml").write_text('# acme\n[configuration]\nK = "v"\n')
    first = auth.create_token(tmp_path, "acme", name="ci")
    second = auth.create_token(tmp_path, "acme")
    (folder / "tenant.toml").write_text((folder / "tenant.toml").read_text() + "\n# limits below\n[limits]\ntimeout = 3\n")
    rows = auth.list_tokens(tmp_path, "acme")
    assert [r["name"] for r in rows] == ["ci", ""]
    assert rows[0]["id"] == auth.hash_token(first)[7:19] and rows[0]["created"].endswith("Z")
    assert first not in str(rows) and second not in str(rows)
    with pytest.raises(TenantConfigError, match="at least 8 hex"):
        auth.revoke_token(tmp_path, "acme", rows[0]["id"][:4])
    with pytest.raises(TenantConfigError, match="no token with id"):
        auth.revoke_token(tmp_path, "acme", "00000000")
    assert auth.revoke_token(tmp_path, "acme", rows[0]["id"])["name"] == "ci"
    text = (folder / "tenant.toml").read_text()
    assert text.startswith("# acme\n") and "# limits below\n[limits]\ntimeout = 3\n" in text
    tenant = load_tenant(folder)
    assert tenant.token_hashes == (auth.hash_token(second),)
    assert tenant.limits.timeout == 3 and tenant.configuration["K"] == "v"
