"""`scriptvisor run --tenant-dir DIR SCRIPT` (the local "Try" button) and the one
tenant-name rule shared by run, init, the engine and the server (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scriptvisor.engine.names import TENANT_NAME_RULE
from scriptvisor.engine.tenants import TenantConfigError, load_tenant

ROOT = Path(__file__).resolve().parent.parent
RUN_KEYS = {"ok", "result", "error", "logs", "duration_ms"}


def sv(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    rc, out, err = sv("init", "tenants/acme", "--template", "sqlite", cwd=tmp_path)
    assert rc == 0, err
    return tmp_path / "tenants" / "acme"


def test_run_tenant_dir_uses_the_tenants_data_and_configuration(acme: Path) -> None:
    cwd = acme.parent.parent
    rc, out, err = sv("run", "--tenant-dir", "tenants/acme", "login", "alice@example.com", "wonderland", "--json",
                      cwd=cwd)
    assert rc == 0, err
    [line] = out.splitlines()  # the same output contract as `run`
    res = json.loads(line)
    assert set(res) == RUN_KEYS and res["ok"] is True
    assert res["result"]["email"] == "alice@example.com"  # read from the tenant's data/legacy.db
    rc, out, _ = sv("run", "--tenant-dir", "tenants/acme", "login.py", "alice@example.com", "wrong", "--json",
                    cwd=cwd)
    assert rc == 1 and json.loads(out)["error"]["name"] == "WrongUsernameOrPasswordError"


def test_run_tenant_dir_applies_the_tenants_configuration_and_limits(acme: Path) -> None:
    cwd = acme.parent.parent
    (acme / "tenant.toml").write_text(
        '[configuration]\nDB_FILE = "legacy.db"\nGREETING = "from tenant.toml"\n[limits]\ntimeout = 0.5\n')
    (acme / "scripts" / "conf.py").write_text("def conf(callback):\n    callback(None, configuration.get('GREETING'))\n")
    (acme / "scripts" / "spin.py").write_text("def spin(callback):\n    while True:\n        pass\n")
    tenant = load_tenant(acme)
    rc, out, err = sv("run", "--tenant-dir", "tenants/acme", "conf", "--json", cwd=cwd)
    assert json.loads(out)["result"] == tenant.configuration.get("GREETING") == "from tenant.toml", err
    rc, out, _ = sv("run", "--tenant-dir", "tenants/acme", "conf", "--config", "GREETING=override", "--json", cwd=cwd)
    assert json.loads(out)["result"] == "override"  # --config overrides one key for a try-out
    rc, out, _ = sv("run", "--tenant-dir", "tenants/acme", "spin", "--json", cwd=cwd)
    assert rc == 1 and json.loads(out)["error"]["code"] == "timeout"
    assert tenant.limits.timeout == 0.5  # (the limit that stopped it came from tenant.toml)


def test_run_tenant_dir_mistakes_say_what_to_do(acme: Path) -> None:
    cwd = acme.parent.parent
    rc, _, err = sv("run", "--tenant-dir", "tenants/acme", "nope", cwd=cwd)
    assert rc == 2 and "has no script 'nope'" in err and "login" in err
    rc, _, err = sv("run", "--tenant-dir", "tenants/acme", "login", "--tenant", "other", cwd=cwd)
    assert rc == 2 and "drop --tenant" in err
    toml = acme / "tenant.toml"
    toml.write_text(toml.read_text().replace("timeout = 20.0", "timout = 3"))
    rc, _, err = sv("run", "--tenant-dir", "tenants/acme", "login", "a", "b", cwd=cwd)
    assert rc == 2 and "limits.timout" in err and "Traceback" not in err


def test_plain_run_of_a_tenant_script_points_to_tenant_dir(acme: Path) -> None:
    rc, out, err = sv("run", "tenants/acme/scripts/login.py", "alice@example.com", "wonderland",
                      cwd=acme.parent.parent)
    assert rc == 1 and "NotAllowed" in out
    assert "run --tenant-dir tenants/acme login" in err
    assert "scriptvisor run --tenant-dir DIR" in out  # the engine's own message points there too


def test_init_hint_is_a_command_that_works_as_printed(tmp_path: Path) -> None:
    exe = ROOT / ".venv" / "bin" / "scriptvisor"
    if not exe.exists():
        pytest.skip("no .venv/bin/scriptvisor (the Quickstart's install)")
    proc = subprocess.run([str(exe), "init", "tenants/acme", "--template", "sqlite"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PATH="/usr/bin:/bin"))
    hint = proc.stdout.splitlines()[-1].removeprefix("try: ")
    assert not hint.startswith("scriptvisor ")  # not on PATH after the Quickstart
    done = subprocess.run(hint + " --json", shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True, done.stderr


@pytest.mark.parametrize("template", ["postgres", "mysql"])
def test_init_hints_for_a_database_template_work_as_printed(tmp_path: Path, template: str) -> None:
    """init prints the database setup (``db setup``) before the try line, and each runs as printed."""
    import secrets

    name = f"revux{secrets.token_hex(4)}"  # the shared server: a database and role of our own
    rc, out, err = sv("init", f"tenants/{name}", "--template", template, "--secrets-dir", str(tmp_path / "secrets"),
                      cwd=tmp_path)
    assert rc == 0, err
    steps = dict(line.split(": ", 1) for line in out.splitlines()[1:])
    assert list(steps) == ["create the legacy database once", "try"], out
    assert " db setup --tenant-dir " in steps["create the legacy database once"]
    try:
        for command in (steps["create the legacy database once"], steps["try"] + " --json"):
            done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert json.loads(done.stdout)["result"]["email"] == "alice@example.com"
    finally:
        role = f"{name}_legacy"
        drop = ([["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {role} WITH (FORCE)"],
                 ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP ROLE IF EXISTS {role}"]]
                if template == "postgres" else
                [["mysql", "-h", "127.0.0.1", "-u", "root", "-e",
                  f"DROP DATABASE IF EXISTS {role}; DROP USER IF EXISTS '{role}'@'%'"]])
        for command in drop:
            subprocess.run(command, capture_output=True, timeout=60)


# -- one tenant-name rule ------------------------------------------------------------

@pytest.mark.parametrize("bad", ["Acme.1", "acme.1", "ACME", "-acme", "a" * 64, "../etc"])
def test_one_tenant_name_rule_for_run_init_engine_and_server(tmp_path: Path, bad: str) -> None:
    from scriptvisor.engine import Engine, EngineConfig

    rc, _, err = sv("run", str(ROOT / "examples" / "outcomes" / "ok.py"), "--tenant", bad, cwd=tmp_path)
    assert rc == 2 and TENANT_NAME_RULE in err.replace("\n", " ").replace("  ", " ") or TENANT_NAME_RULE in err
    if "/" not in bad:
        rc, _, err = sv("init", f"tenants/{bad}", "--template", "sqlite", cwd=tmp_path)
        assert rc == 2 and "lowercase letters" in err
        folder = tmp_path / "srv" / bad
        (folder / "scripts").mkdir(parents=True)
        (folder / "tenant.toml").write_text("")
        with pytest.raises(TenantConfigError, match="lowercase letters"):
            load_tenant(folder)
    with Engine(EngineConfig()) as eng, pytest.raises(ValueError, match="lowercase letters"):
        eng.configure_tenant(bad)
