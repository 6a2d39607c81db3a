"""Fixtures for the webservice tests: one reference legacy API and one engine per session."""

from __future__ import annotations

import re

import pytest

from .legacy_server import start_legacy_server



@pytest.fixture(scope="session")
def legacy_api():
    server = start_legacy_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """One real engine (zygote, confined workers) for all webservice tests."""
    from scriptvisor.engine import Engine, EngineConfig, TenantLimits

    eng = Engine(EngineConfig(limits=TenantLimits(timeout=10.0), spares_per_tenant=0,
                              state_dir=str(tmp_path_factory.mktemp("state")))).start()
    yield eng
    eng.close()


_numbers = iter(range(1, 1_000_000))


def point_at(root, server, *, base_url: str | None = None, api_url: str | None = None,
             extra: str = "", timeout: float | None = None) -> None:
    """Rewrite an ``init --template webservice`` tenant.toml to use ``server`` (port, key)."""
    toml = (root / "tenant.toml").read_text()
    toml = toml.replace("http://127.0.0.1:8931/api/", "@@BASE@@")
    toml = toml.replace('base_url = "@@BASE@@"', f'base_url = "{base_url or server.base_url}"')
    toml = toml.replace('API_URL = "@@BASE@@"', f'API_URL = "{api_url or server.base_url}"')
    toml = re.sub(r'(?m)^API_KEY = "[^"]*"', f'API_KEY = "{server.api_key}"', toml)
    toml = toml.replace("[configuration]", f"{extra}\n[configuration]", 1) if extra else toml
    if timeout is not None:
        toml = re.sub(r"(?m)^timeout = .*$", f"timeout = {timeout}", toml)
    (root / "tenant.toml").write_text(toml)


@pytest.fixture
def make_tenant(engine, legacy_api, tmp_path):
    """``make_tenant(import_users) -> Connection`` of a tenant made by ``init --template webservice``."""
    from scriptvisor.engine.connections import connection_of
    from scriptvisor.engine.tenants import load_tenant
    from scriptvisor.engine.tenantdir import init_tenant
    from scriptvisor.engine.hashing import FAST_HASHER
    from scriptvisor.engine.userstore import UserStore

    made = []
    legacy_api.reset()

    def make(import_users: bool, **point):
        name = f"web{next(_numbers)}"
        root = init_tenant(tmp_path / name, "webservice", import_users)
        point_at(root, legacy_api, **point)
        tenant = load_tenant(root)
        store = UserStore(name, path=str(tenant.state_dir / "platform.db"), hasher=FAST_HASHER)
        conn = connection_of(tenant, store=store)
        engine.configure_tenant(name, limits=tenant.limits, data_dir=str(tenant.data_dir),
                                http=tenant.http_policy())
        conn.api = legacy_api
        conn.loaded = tenant
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.store.close()
