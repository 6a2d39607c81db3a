"""The webservice session as an operator types it: init, legacy-api, connection login, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

from click.testing import CliRunner

from scriptvisor.engine.cli import main
from scriptvisor.engine.tenants import load_tenant


def test_init_webservice_writes_the_http_declaration(tmp_path):
    res = CliRunner().invoke(main, ["init", str(tmp_path / "acme"), "--template", "webservice"])
    assert res.exit_code == 0, res.output
    assert "legacy-api --tenant-dir" in res.output
    data = tomllib.loads((tmp_path / "acme" / "tenant.toml").read_text())
    assert data["http"] == [{"name": "legacy_api", "base_url": "http://127.0.0.1:8931/api/"}]
    assert data["configuration"]["API_URL"] == "http://127.0.0.1:8931/api/"
    assert len(data["configuration"]["API_KEY"]) >= 32 and data["configuration"]["API_KEY"] != "change-me"
    other = CliRunner().invoke(main, ["init", str(tmp_path / "other"), "--template", "webservice"])
    assert tomllib.loads((tmp_path / "other" / "tenant.toml").read_text())["configuration"]["API_KEY"] \
        != data["configuration"]["API_KEY"]  # a fresh key per tenant
    tenant = load_tenant(tmp_path / "acme")
    assert tenant.egress == (("127.0.0.1", 8931),) and 8931 in tenant.limits.allowed_ports
    assert not (tmp_path / "acme" / "schema.sql").exists()
    assert sorted(p.name for p in (tmp_path / "acme" / "scripts").iterdir()) == sorted(
        f"{s}.py" for s in ("login", "get_user", "create", "verify", "change_password", "delete", "change_email"))


def test_doctor_lists_each_tenants_declared_endpoints(tmp_path):
    CliRunner().invoke(main, ["init", str(tmp_path / "tenants" / "acme"), "--template", "webservice"])
    res = CliRunner().invoke(main, ["doctor", "--tenants", str(tmp_path / "tenants"), "--json"])
    tenants = json.loads(res.output)["tenants"]
    assert tenants == [{"tenant": "acme", "egress": [["127.0.0.1", 8931]], "allowed_ports": [8931], "error": None,
                        "http": [{"name": "legacy_api", "base_url": "http://127.0.0.1:8931/api/",
                                  "addresses": ["127.0.0.1"], "port": 8931}]}]
    text = CliRunner().invoke(main, ["doctor", "--tenants", str(tmp_path / "tenants")]).output
    assert "acme: 127.0.0.1:8931" in text and "http legacy_api = http://127.0.0.1:8931/api/ -> 127.0.0.1" in text


def test_legacy_api_command_then_connection_login_in_both_modes(tmp_path):
    """The documented session: init, legacy-api --tenant-dir, connection login (legacy, then migration)."""
    for mode, flags in (("legacy", []), ("migration", ["--import-users"])):
        root = tmp_path / mode
        assert CliRunner().invoke(main, ["init", str(root), "--template", "webservice", *flags]).exit_code == 0
        # port 0: the documented 8931 may be taken on a shared machine; point the tenant at the bound port
        api = subprocess.Popen([sys.executable, "-m", "scriptvisor.engine.cli", "legacy-api", "--tenant-dir",
                                str(root), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = api.stdout.readline().strip()
            assert line.startswith("legacy API on http://127.0.0.1:"), (line, api.stderr.read() if api.poll() else "")
            base = line.removeprefix("legacy API on ")
            toml = (root / "tenant.toml").read_text().replace("http://127.0.0.1:8931/api/", base)
            (root / "tenant.toml").write_text(toml)
            res = CliRunner().invoke(main, ["connection", "login", "--tenant-dir", str(root), "--json",
                                            "alice@example.com", "wonderland"])
            assert res.exit_code == 0, res.output
            out = json.loads(res.output)
            assert out["ok"] and out["result"]["user_id"] == "1" and out["scripts_called"] == ["login"]
            if mode == "migration":
                assert out["migrated"] is True
                again = json.loads(CliRunner().invoke(main, ["connection", "login", "--tenant-dir", str(root),
                                                             "--json", "alice@example.com", "wonderland"]).output)
                assert again["ok"] and again["scripts_called"] == [] and again["from_platform_store"] is True
        finally:
            api.terminate()
            api.wait(timeout=10)
