"""``[[databases]]`` in tenant.toml: validation, secrets, the egress pairs a tenant exposes."""

from __future__ import annotations

import pytest

from scriptvisor.engine.tenants import TenantConfigError, load_tenant


def _tenant(tmp_path, body: str, name: str = "acme"):
    root = tmp_path / name
    (root / "scripts").mkdir(parents=True)
    (root / "tenant.toml").write_text(body)
    return root


DECL = """
[[databases]]
name = "legacy"
driver = "postgres"
host = "127.0.0.1"
port = 5433
database = "acme_legacy"
user = "acme_legacy"
"""


def test_declaration_with_a_password_file_outside_the_tenant(tmp_path):
    secret = tmp_path / "secrets" / "acme.password"
    secret.parent.mkdir()
    secret.write_text("s3cret\n")
    root = _tenant(tmp_path, DECL + f'password_file = "{secret}"\n')
    tenant = load_tenant(root)
    (decl,) = tenant.databases
    assert decl.password == "s3cret" and decl.secret_error is None
    assert "s3cret" not in repr(tenant)  # never in logs or reprs
    assert tenant.egress == (("127.0.0.1", 5433),)
    assert 5433 in tenant.limits.allowed_ports  # Landlock's fallback lets the declared port through


def test_password_env_and_a_missing_secret_are_reported_at_connect(tmp_path):
    root = _tenant(tmp_path, DECL + 'password_env = "ACME_PW"\n')
    assert load_tenant(root, environ={"ACME_PW": "x"}).databases[0].password == "x"
    missing = load_tenant(root, environ={}).databases[0]
    assert missing.password is None and "ACME_PW" in missing.secret_error


@pytest.mark.parametrize("extra,key", [
    ('password_file = "{root}/secret"\n', "databases[0].password_file"),   # readable by the tenant
    ('password_file = "relative"\n', "databases[0].password_file"),
    ('password_env = "A"\npassword_file = "/x"\n', "databases[0].password_env"),
    ('dsn = "postgresql://..."\n', "databases[0].dsn"),
])
def test_bad_declarations_name_the_key(tmp_path, extra, key):
    root = tmp_path / "acme"
    _tenant(tmp_path, DECL + extra.format(root=root))
    with pytest.raises(TenantConfigError) as info:
        load_tenant(root)
    assert info.value.key == key


def test_sqlite_declaration_takes_a_file_name_only(tmp_path):
    root = _tenant(tmp_path, '[[databases]]\nname = "legacy"\ndriver = "sqlite"\ndatabase = "../x.db"\n')
    with pytest.raises(TenantConfigError, match="plain file name"):
        load_tenant(root)
