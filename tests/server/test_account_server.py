"""Account flows at the HTTP server: end-user responses without account hints, /readyz and the user store."""

from __future__ import annotations

from pathlib import Path

import pytest

from scriptvisor.engine.server import auth
from server_harness import check_openapi, start_server
from tests.db.conftest import pg_database  # noqa: F401  (fixture: a fresh PostgreSQL database)


def test_cant_enumerate_accounts_from_end_user_responses(tmp_path: Path) -> None:
    """Layer: the server's --end-user-responses option (engine.connections.end_user_view).

    An unknown user and a known user with a wrong password get the same
    response body; the operator's log stream still has user_known.
    """
    from scriptvisor.engine.tenantdir import init_tenant

    tenants = tmp_path / "tenants"
    tenants.mkdir()
    init_tenant(tenants / "shop", "sqlite", import_users=True, seed_rounds=4)
    tokens = {"shop": auth.create_token(tenants, "shop")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens, end_user_responses=True)
    try:
        with srv.client("shop") as c:
            assert c.post("/v1/tenants/shop/connection/login",
                          json={"args": ["alice@example.com", "wonderland"]}).json()["ok"] is True
            bodies = []
            for who in ("alice@example.com", "bob@example.com", "nobody@example.com"):  # migrated, not, unknown
                r = c.post("/v1/tenants/shop/connection/login", json={"args": [who, "wrong-password"]})
                assert r.status_code == 200
                check_openapi("post", "/v1/tenants/{tenant}/connection/{operation}", r)
                body = r.json()
                body.pop("duration_ms")
                bodies.append(body)
            assert bodies[0] == bodies[1] == bodies[2]  # nothing tells the three apart (the timing: bench/)
            assert set(bodies[0]) == {"ok", "result", "error", "logs", "operation"} and bodies[0]["logs"] == []
            assert set(bodies[0]["error"]) == {"code", "name", "message"} and bodies[0]["error"]["code"] == "script_error"
            r = c.post("/v1/tenants/shop/connection/signup",
                       json={"args": [{"email": "e@example.com", "password": "pw", "app_metadata": {"a": 1}}]})
            assert r.status_code == 422 and "app_metadata" in r.json()["error"]["message"]
    finally:
        assert srv.stop() == 0


def test_readyz_reports_an_unreachable_user_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared PostgreSQL store that does not answer: /readyz 503 with user_store.ok false (error for the admin)."""
    from server_harness import ADMIN_TOKEN

    monkeypatch.setenv("SCRIPTVISOR_USER_STORE_DSN", "host=127.0.0.1 port=1 dbname=none user=none")
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    srv = start_server(tenants, tmp_path / "oplog.jsonl", {})
    try:
        with srv.client() as c:
            r = c.get("/readyz")
            check_openapi("get", "/readyz", r)
            assert r.status_code == 503 and r.json()["ready"] is False
            assert r.json()["user_store"] == {"ok": False, "kind": "postgres"}
            r = c.get("/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert "cannot reach the user store" in r.json()["user_store"]["error"]
    finally:
        assert srv.stop() == 0


@pytest.mark.db
def test_readyz_reports_a_reachable_user_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_database) -> None:
    monkeypatch.setenv("SCRIPTVISOR_USER_STORE_DSN", " ".join(f"{k}={v}" for k, v in pg_database.items()))
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    srv = start_server(tenants, tmp_path / "oplog.jsonl", {})
    try:
        with srv.client() as c:
            r = c.get("/readyz")
            check_openapi("get", "/readyz", r)
            assert r.status_code == 200 and r.json()["user_store"] == {"ok": True, "kind": "postgres"}
    finally:
        assert srv.stop() == 0
