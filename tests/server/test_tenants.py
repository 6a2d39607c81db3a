"""Tenant folder loading: validation errors name the file and key; reloads follow the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scriptvisor.engine.config import TenantLimits
from scriptvisor.engine.server import tenants as server_tenants
from scriptvisor.engine.server.tenants import TenantRegistry
from scriptvisor.engine.tenants import TenantConfigError, load_tenant

GOOD = """
import_users = true
allowed_ports = [5432, 3306]
[configuration]
DB_FILE = "legacy.sqlite3"
DB_PASSWORD = { env = "T_DB_PASSWORD" }
RETRIES = 3
[limits]
timeout = 2.5
max_concurrency = 2
max_queue = 0
[[tokens]]
hash = "sha256:%s"
""" % ("a" * 64)


def make_tenant(root: Path, name: str, toml: str, scripts: dict[str, str] | None = None) -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True)
    (folder / "tenant.toml").write_text(toml)
    for fname, text in (scripts or {}).items():
        (folder / "scripts" / fname).write_text(text)
    return folder


def test_good_tenant_loads_every_section(tmp_path: Path) -> None:
    folder = make_tenant(tmp_path, "acme", GOOD, {"login.py": "def login(e, p, callback): callback(None, {})\n"})
    t = load_tenant(folder, environ={"T_DB_PASSWORD": "s3cret"})
    assert t.name == "acme"
    assert t.import_users is True
    assert dict(t.configuration) == {"DB_FILE": "legacy.sqlite3", "DB_PASSWORD": "s3cret", "RETRIES": 3}
    assert t.limits == TenantLimits(timeout=2.5, max_concurrency=2, max_queue=0, allowed_ports=(3306, 5432))
    assert t.token_hashes == ("sha256:" + "a" * 64,)
    assert t.data_dir.is_dir()
    assert t.script_path("login") == t.scripts_dir / "login.py"
    assert t.script_path("missing") is None
    assert t.script_path("../tenant") is None


def test_configuration_cannot_be_changed_through_the_tenant(tmp_path: Path) -> None:
    t = load_tenant(make_tenant(tmp_path, "acme", GOOD), environ={"T_DB_PASSWORD": "x"})
    with pytest.raises(TypeError):
        t.configuration["DB_FILE"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("import_users = 1\n", "import_users", "true or false"),
        ("improt_users = true\n", "improt_users", "unknown key"),
        ("[limits]\ntimeuot = 3\n", "limits.timeuot", "unknown limit"),
        ("[limits]\ntimeout = -1\n", "limits.timeout", "positive number"),
        ("[limits]\nmax_concurrency = 0\n", "limits.max_concurrency", "positive integer"),
        ("[limits]\nmemory_mb = 1.5\n", "limits.memory_mb", "positive integer"),
        ("allowed_ports = [70000]\n", "allowed_ports[0]", "1..65535"),
        ("allowed_ports = [1]\n[limits]\nallowed_ports = [2]\n", "limits.allowed_ports", "not both"),
        ("[configuration]\nPW = { env = \"NOPE_NOT_SET\" }\n", "configuration.PW", "NOPE_NOT_SET is not set"),
        ("[configuration]\nWHEN = 1979-05-27\n", "configuration.WHEN", "unsupported value type"),
        ("tokens = [\"plain-token\"]\n", "tokens[0]", "token hash"),
        ("[[tokens]]\nhash = \"sha256:abc\"\n", "tokens[0].hash", "token hash"),
        ("import_users = \n", None, "invalid TOML"),
    ],
)
def test_invalid_tenant_toml_names_file_and_key(tmp_path: Path, toml: str, key: str | None, words: str) -> None:
    folder = make_tenant(tmp_path, "acme", toml)
    with pytest.raises(TenantConfigError) as info:
        load_tenant(folder, environ={})
    err = info.value
    assert err.file == str(folder / "tenant.toml")
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(str(folder / "tenant.toml"))


def test_env_reference_may_have_a_default(tmp_path: Path) -> None:
    folder = make_tenant(tmp_path, "acme", '[configuration]\nHOST = { env = "T_HOST", default = "127.0.0.1" }\n')
    assert load_tenant(folder, environ={}).configuration["HOST"] == "127.0.0.1"
    assert load_tenant(folder, environ={"T_HOST": "db"}).configuration["HOST"] == "db"


def test_missing_scripts_folder_and_bad_folder_name(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "tenant.toml").write_text("")
    with pytest.raises(TenantConfigError, match="missing scripts folder"):
        load_tenant(tmp_path / "acme")
    make_tenant(tmp_path, "Bad.Name", "")
    with pytest.raises(TenantConfigError, match="tenant folder name"):
        load_tenant(tmp_path / "Bad.Name")


def test_a_broken_tenant_does_not_stop_the_others(tmp_path: Path) -> None:
    make_tenant(tmp_path, "good", "")
    make_tenant(tmp_path, "broken", "[limits]\nnope = 1\n")
    loaded, failed = [], []
    reg = TenantRegistry(tmp_path, on_load=lambda t: loaded.append(t.name),
                         on_error=lambda n, e: failed.append(n))
    reg.scan()
    assert sorted(reg.tenants) == ["good"]
    assert list(reg.errors) == ["broken"]
    assert "limits.nope" in reg.errors["broken"]
    assert loaded == ["good"] and failed == ["broken"]
    assert reg.get("broken") is None and reg.is_broken("broken")
    assert failed == ["broken"]  # an unchanged broken file is not re-parsed on every lookup
    assert reg.get("nobody") is None and not reg.is_broken("nobody")


def _touch_changed(path: Path, text: str) -> None:
    st = path.stat()
    path.write_text(text)
    # make the change visible even on filesystems with coarse mtimes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_registry_reloads_a_changed_file_and_recovers_a_fixed_one(tmp_path: Path) -> None:
    folder = make_tenant(tmp_path, "acme", "[configuration]\nV = 1\n")
    reg = TenantRegistry(tmp_path)
    reg.scan()
    first = reg.get("acme")
    assert first is not None and first.configuration["V"] == 1
    assert reg.get("acme") is first  # unchanged file: same object, no reparse
    _touch_changed(folder / "tenant.toml", "[configuration]\nV = 2\n")
    assert reg.get("acme").configuration["V"] == 2
    _touch_changed(folder / "tenant.toml", "[configuration\n")
    assert reg.get("acme") is None and reg.is_broken("acme")
    _touch_changed(folder / "tenant.toml", "[configuration]\nV = 3\n")
    assert reg.get("acme").configuration["V"] == 3
    assert reg.errors == {}


def test_a_new_tenant_folder_is_found_without_restart(tmp_path: Path) -> None:
    reg = TenantRegistry(tmp_path)
    reg.scan()
    assert reg.get("late") is None
    make_tenant(tmp_path, "late", "")
    assert reg.get("late") is not None


def test_a_removed_tenant_folder_is_forgotten_and_reported(tmp_path: Path) -> None:
    import shutil

    make_tenant(tmp_path, "gone", "")
    make_tenant(tmp_path, "broken", "[limits]\nnope = 1\n")
    removed: list[str] = []
    reg = TenantRegistry(tmp_path, on_remove=removed.append)
    reg.scan()
    assert reg.get("gone") is not None and reg.is_broken("broken")
    shutil.rmtree(tmp_path / "gone")
    shutil.rmtree(tmp_path / "broken")
    assert reg.get("gone") is None and reg.get("broken") is None
    assert removed == ["gone", "broken"]  # once each: the engine retires their workers
    assert "gone" not in reg.tenants and reg.errors == {} and not reg.is_broken("broken")
    assert reg.get("gone") is None and removed == ["gone", "broken"]
    make_tenant(tmp_path, "gone", "")
    assert reg.get("gone") is not None  # a folder made again is a tenant again
    (tmp_path / "gone" / "tenant.toml").unlink()  # folder still there: a broken tenant, not a removed one
    assert reg.get("gone") is None and reg.is_broken("gone") and removed == ["gone", "broken"]


def test_the_server_module_still_offers_the_core_loader_under_its_old_names():
    """Code written against ``engine.server.tenants`` keeps working: the same objects, not copies."""
    from scriptvisor.engine import tenants as core

    for name in ("SCRIPT_NAME", "TENANT_NAME", "Tenant", "TenantConfigError", "load_tenant"):
        assert getattr(server_tenants, name) is getattr(core, name)
