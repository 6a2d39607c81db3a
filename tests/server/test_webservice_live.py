"""A webservice tenant on a real server: [[http]] declarations reach the workers, in both modes and on reload."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scriptvisor.engine.server import auth  # noqa: E402
from scriptvisor.engine.tenantdir import init_tenant  # noqa: E402
from server_harness import start_server  # noqa: E402
from tests.web.conftest import point_at  # noqa: E402
from tests.web.legacy_server import start_legacy_server  # noqa: E402

from test_live import _touch_changed  # noqa: E402


def test_webservice_tenants_log_in_through_the_server_and_follow_reloads(tmp_path: Path) -> None:
    api = start_legacy_server()
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    for name, migrate in (("shopweb", False), ("migweb", True)):
        init_tenant(tenants / name, "webservice", import_users=migrate)
        point_at(tenants / name, api)
    tokens = {t: auth.create_token(tenants, t) for t in ("shopweb", "migweb")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens)
    login = {"args": ["alice@example.com", "wonderland"]}
    try:
        with srv.client("shopweb") as c:
            r = c.post("/v1/tenants/shopweb/connection/login", json=login).json()
            assert r["ok"] and r["result"]["user_id"] == "1" and r["scripts_called"] == ["login"], r
        with srv.client("migweb") as c:
            first = c.post("/v1/tenants/migweb/connection/login", json=login).json()
            again = c.post("/v1/tenants/migweb/connection/login", json=login).json()
            assert first["ok"] and first["scripts_called"] == ["login"], first
            assert again["ok"] and again["scripts_called"] == [], again
        assert api.calls()["login alice@example.com"] == 2  # once per tenant, not per call
        # the operator removes the declaration: the next call is refused by the facade
        toml = (tenants / "shopweb" / "tenant.toml").read_text()
        _touch_changed(tenants / "shopweb" / "tenant.toml", re.sub(r"(?ms)^\[\[http\]\].*?(?=^\[configuration\])", "", toml))
        with srv.client("shopweb") as c:
            r = c.post("/v1/tenants/shopweb/connection/login", json=login).json()
            assert r["ok"] is False and r["error"]["name"] == "NotAllowed", r
            assert "declares no HTTP endpoints" in r["error"]["message"]
    finally:
        srv.stop()
        api.stop()
