"""``scriptvisor init`` and ``scriptvisor connection``: the end-to-end session of the issue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scriptvisor.engine.tenantdir import SCRIPTS, TEMPLATES, TEMPLATES_DIR

ROOT = Path(__file__).resolve().parent.parent


def sv(*args, cwd):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_init_then_migrated_login(tmp_path):
    rc, out, err = sv("init", "acme", "--template", "sqlite", "--import-users", cwd=tmp_path)
    assert rc == 0, err
    tenant = tmp_path / "acme"
    assert sorted(p.name for p in (tenant / "scripts").iterdir()) == sorted(f"{s}.py" for s in SCRIPTS)
    assert (tenant / "data" / "legacy.db").is_file() and (tenant / "schema.sql").is_file()
    assert "import_users = true" in (tenant / "tenant.toml").read_text()

    rc, out, err = sv("connection", "login", "--tenant-dir", "acme", "--json",
                      "alice@example.com", "wonderland", cwd=tmp_path)
    assert rc == 0, err
    first = json.loads(out)
    assert {"ok", "result", "error", "logs", "duration_ms"} <= set(first)
    assert first["ok"] and first["result"]["user_id"] == "1"
    assert first["scripts_called"] == ["login"] and first["from_platform_store"] is False

    rc, out, err = sv("connection", "login", "--tenant-dir", "acme", "--json",
                      "alice@example.com", "wonderland", cwd=tmp_path)
    second = json.loads(out)
    assert rc == 0 and second["scripts_called"] == [] and second["from_platform_store"] is True

    rc, out, err = sv("connection", "login", "--tenant-dir", "acme", "--json",
                      "alice@example.com", "wrong", cwd=tmp_path)
    assert rc == 1 and json.loads(out)["error"]["name"] == "WrongUsernameOrPasswordError"


def test_connection_usage_errors_exit_2(tmp_path):
    assert sv("init", "acme", "--template", "sqlite", cwd=tmp_path)[0] == 0
    for args in (["connection", "login", "--tenant-dir", "acme", "only-email"],
                 ["connection", "nope", "--tenant-dir", "acme"],
                 ["connection", "signup", "--tenant-dir", "acme", "not json"],
                 ["connection", "login", "--tenant-dir", "missing", "a", "b"],
                 ["init", "acme", "--template", "sqlite"],           # exists, not empty
                 ["init", "Bad Name", "--template", "sqlite"],
                 ["init", "other", "--template", "oracle"]):
        rc, out, err = sv(*args, cwd=tmp_path)
        assert rc == 2, (args, out, err)
        assert "Traceback" not in err


def test_legacy_signup_through_the_cli(tmp_path):
    assert sv("init", "acme", "--template", "sqlite", cwd=tmp_path)[0] == 0
    rc, out, err = sv("connection", "signup", "--tenant-dir", "acme", "--json",
                      '{"email": "carol@example.com", "password": "12345"}', cwd=tmp_path)
    res = json.loads(out)
    assert rc == 0 and res["scripts_called"] == ["get_user", "create", "login"]
    rc, out, err = sv("connection", "change_email", "--tenant-dir", "acme",
                      "carol@example.com", "carol@new.example", "true", cwd=tmp_path)
    assert rc == 0 and "result: true" in out, (out, err)


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_passes_check(template):
    from scriptvisor.engine.checker import check_sources

    sources = [(f"{template}/{s}.py", (TEMPLATES_DIR / template / f"{s}.py").read_text()) for s in SCRIPTS]
    problems = {path: issues for path, issues in check_sources(sources) if issues}
    assert problems == {}


def test_init_writes_a_tenant_the_server_loads(tmp_path):
    from scriptvisor.engine.tenants import load_tenant
    from scriptvisor.engine.tenantdir import init_tenant

    for template in TEMPLATES:
        root = init_tenant(tmp_path / f"t-{template}", template, import_users=(template == "postgres"),
                           seed_rounds=4, secrets_dir=tmp_path / "secrets")
        tenant = load_tenant(root)
        assert tenant.import_users is (template == "postgres")
        if template == "webservice":  # the declared [[http]] endpoint's port
            assert tenant.limits.allowed_ports == (8931,) and tenant.egress == (("127.0.0.1", 8931),)
        elif template != "sqlite":
            port = 5432 if template == "postgres" else 3306
            assert tenant.limits.allowed_ports == (port,)
            (decl,) = tenant.databases
            assert (decl.name, decl.driver, decl.database, decl.user) == (
                "legacy", template, f"t_{template}_legacy", f"t_{template}_legacy")
            assert decl.password_file == str((tmp_path / "secrets" / f"t-{template}.legacy.password").resolve())
            assert "not exist" in decl.secret_error and "db setup" in decl.secret_error  # until db setup
            assert tenant.egress == (("127.0.0.1", port),)
