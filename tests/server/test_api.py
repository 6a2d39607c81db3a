"""The HTTP API of a real server: every endpoint and status code, auth across tenants."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from scriptvisor.engine.server import auth

from server_harness import ADMIN_TOKEN, Server, check_openapi

SCRIPT = "/v1/tenants/{tenant}/scripts/{script}"
CONN = "/v1/tenants/{tenant}/connection/{operation}"
LOGS = "/v1/tenants/{tenant}/logs"


def test_healthz(server: Server) -> None:
    with server.client() as c:
        r = c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    check_openapi("get", "/healthz", r)


def test_readyz_names_tenants_to_the_admin_only(server: Server) -> None:
    with server.client() as c:
        r = c.get("/readyz")
    assert r.status_code == 200
    check_openapi("get", "/readyz", r)
    body = r.json()
    assert body["ready"] is True and body["draining"] is False
    assert "tenants" not in body and "invalid_tenants" not in body
    assert "alpha" not in r.text and "broken" not in r.text
    with server.client(token=ADMIN_TOKEN) as c:
        r = c.get("/readyz")
    check_openapi("get", "/readyz", r)
    assert {"alpha", "beta", "flood", "small"} <= set(r.json()["tenants"])
    detail = r.json()["invalid_tenants"]["broken"]
    assert "broken/tenant.toml" in detail and "limits.not_a_limit" in detail


def test_invoke_returns_the_result_object_and_an_invocation_id(server: Server) -> None:
    with server.client("alpha") as c:
        r = c.post("/v1/tenants/alpha/scripts/echo", json={"args": [{"a": [1, 2]}]})
    assert r.status_code == 200
    check_openapi("post", SCRIPT, r)
    body = r.json()
    assert body["ok"] is True and body["result"] == {"a": [1, 2]} and body["error"] is None
    assert set(body) == {"ok", "result", "error", "logs", "duration_ms"}
    assert len(r.headers["X-Invocation-Id"]) == 32


def test_configuration_and_env_secrets_reach_the_script(server: Server) -> None:
    with server.client("alpha") as c:
        assert c.post("/v1/tenants/alpha/scripts/conf", json={"args": ["V"]}).json()["result"] == "one"
        assert c.post("/v1/tenants/alpha/scripts/conf", json={"args": ["SECRET"]}).json()["result"] == "dflt"


@pytest.mark.parametrize(
    ("script", "args", "code"),
    [("fails", [], "script_error"), ("echo", [], "script_error"), ("noop", [1, 2, 3], "script_error")],
)
def test_script_failures_are_200_with_ok_false(server: Server, script: str, args: list, code: str) -> None:
    with server.client("beta") as c:
        r = c.post(f"/v1/tenants/beta/scripts/{script}", json={"args": args})
    assert r.status_code == 200
    check_openapi("post", SCRIPT, r)
    assert r.json()["ok"] is False and r.json()["error"]["code"] == code


def test_timeout_is_a_200_result(server: Server) -> None:
    with server.client("alpha") as c:
        r = c.post("/v1/tenants/alpha/scripts/spin", json={"args": [], "timeout": 0.5})
    assert r.status_code == 200
    assert r.json()["error"]["code"] == "timeout"


def test_empty_body_means_no_args(server: Server) -> None:
    with server.client("beta") as c:
        r = c.post("/v1/tenants/beta/scripts/noop", headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["ok"] is True


# -- auth ---------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("post", "/v1/tenants/alpha/scripts/noop"),
    ("post", "/v1/tenants/alpha/connection/login"),
    ("get", "/v1/tenants/alpha/logs"),
])
def test_cant_call_without_a_token(server: Server, method: str, path: str) -> None:
    with server.client() as c:
        r = c.request(method, path, json={"args": []})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["nope", auth.hash_token("nope"), "x" * 1000])
def test_cant_call_with_an_unknown_token(server: Server, token: str) -> None:
    with server.client() as c:
        r = c.post("/v1/tenants/alpha/scripts/noop", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    check_openapi("post", SCRIPT, r)


@pytest.mark.parametrize(("method", "template", "path"), [
    ("post", SCRIPT, "/v1/tenants/beta/scripts/noop"),
    ("post", CONN, "/v1/tenants/beta/connection/login"),
    ("get", LOGS, "/v1/tenants/beta/logs"),
    ("post", SCRIPT, "/v1/tenants/nosuchtenant/scripts/noop"),
])
def test_cant_use_a_token_of_another_tenant(server: Server, method: str, template: str, path: str) -> None:
    with server.client("alpha") as c:
        r = c.request(method, path, json={"args": []})
    assert r.status_code == 403
    check_openapi(method, template, r)
    assert r.json()["error"]["code"] == "forbidden"


def test_cant_use_a_token_hash_from_tenant_toml(server: Server) -> None:
    stored = auth.hash_token(server.tokens["alpha"])
    with server.client(token=stored) as c:
        assert c.post("/v1/tenants/alpha/scripts/noop", json={}).status_code == 401


def test_admin_token_opens_every_tenant(server: Server) -> None:
    with server.client(token=ADMIN_TOKEN) as c:
        for tenant in ("alpha", "beta"):
            r = c.post(f"/v1/tenants/{tenant}/scripts/echo", json={"args": [tenant]})
            assert r.status_code == 200 and r.json()["result"] == tenant


# -- request problems ---------------------------------------------------------

def test_unknown_tenant_script_and_route_are_404(server: Server) -> None:
    with server.client(token=ADMIN_TOKEN) as c:
        r = c.post("/v1/tenants/nosuchtenant/scripts/noop", json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_tenant"
        check_openapi("post", SCRIPT, r)
    with server.client("alpha") as c:
        for script in ("missing", "..tenant", "tenant.toml"):
            r = c.post(f"/v1/tenants/alpha/scripts/{script}", json={})
            assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_script", script
        assert c.post("/v1/tenants/alpha/scripts/..%2Ftenant", json={}).status_code == 404
        r = c.post("/v1/tenants/alpha/connection/drop_tables", json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_operation"
        assert c.get("/v2/anything").status_code == 404
        assert c.delete("/v1/tenants/alpha/scripts/noop").status_code == 405


def test_broken_tenant_is_500_naming_the_key_for_the_admin(server: Server) -> None:
    with server.client(token=ADMIN_TOKEN) as c:
        r = c.post("/v1/tenants/broken/scripts/noop", json={})
    assert r.status_code == 500 and r.json()["error"]["code"] == "tenant_unavailable"
    check_openapi("post", SCRIPT, r)
    assert r.json()["error"]["key"] == "limits.not_a_limit"
    assert str(server.tenants_dir) not in r.text  # server paths stay in the operator log


def test_body_too_large_is_413(server: Server) -> None:
    with server.client("alpha") as c:
        r = c.post("/v1/tenants/alpha/scripts/echo", json={"args": ["x" * (1024 * 1024 + 1)]})
        assert r.status_code == 413
        check_openapi("post", SCRIPT, r)

        def chunks():  # no Content-Length: the limit holds for streamed bodies too
            for _ in range(1100):
                yield b" " * 1024
        r = c.post("/v1/tenants/alpha/scripts/echo", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(server: Server, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    with server.client("alpha") as c:
        r = c.post("/v1/tenants/alpha/scripts/echo", content=b'{"args": [1]}', headers=headers)
    assert r.status_code == 415
    check_openapi("post", SCRIPT, r)


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"args": [1', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"args": "x"}', 422, '"args" must be a JSON array'),
    (b'{"args": [], "argz": 1}', 422, "unknown body keys"),
    (b'{"args": [], "timeout": -1}', 422, "positive number"),
    (b'{"args": [], "timeout": 99}', 422, "tenant limit"),
])
def test_bad_bodies_get_a_clear_message(server: Server, body: bytes, status: int, words: str) -> None:
    with server.client("alpha") as c:
        r = c.post("/v1/tenants/alpha/scripts/echo", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    check_openapi("post", SCRIPT, r)
    assert words in r.json()["error"]["message"]


def test_full_queue_is_429_with_retry_after(server: Server) -> None:
    """small: max_concurrency 1, max_queue 1 (plus the engine's one spare worker).
    Five spinning calls at once are more than it can run and queue: the excess
    is refused with 429 + Retry-After, the admitted ones run to their timeout."""
    results: list[httpx.Response] = []

    def spin() -> None:
        with server.client("small") as c:
            results.append(c.post("/v1/tenants/small/scripts/spin", json={"args": []}))

    threads = [threading.Thread(target=spin) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refused = [r for r in results if r.status_code == 429]
    ran = [r for r in results if r.status_code == 200]
    assert len(refused) + len(ran) == 5
    assert refused and ran
    for r in refused:
        check_openapi("post", SCRIPT, r)
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "overloaded"
    assert {r.json()["error"]["code"] for r in ran} == {"timeout"}


def test_operator_log_has_one_line_per_invocation(server: Server) -> None:
    with server.client("beta") as c:
        r = c.post("/v1/tenants/beta/scripts/fails", json={})
        timed_out = c.post("/v1/tenants/beta/scripts/spin", json={"timeout": 0.3}).headers["X-Invocation-Id"]
    inv = r.headers["X-Invocation-Id"]
    lines = [x for x in server.oplog() if x.get("invocation_id") == inv]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "invocation" and line["tenant"] == "beta" and line["script"] == "fails"
    assert line["outcome"] == "script_error" and line["status"] == 200
    assert isinstance(line["worker_pid"], int) and line["duration_ms"] >= 0 and line["recycle"] is None
    [spun] = [x for x in server.oplog() if x.get("invocation_id") == timed_out]
    assert spun["outcome"] == "timeout" and spun["recycle"] == "timeout"
    assert "boom" not in json.dumps(line)  # script output stays out of the operator log


def test_status_codes_say_whose_failure_it_is() -> None:
    """503 only for the node's own trouble; the shared user store is 504, a broken
    tenant 500 (docs/scaling.md, "A broken tenant never takes a node out")."""
    from scriptvisor.engine.server.app import _status_for

    zygote_down = {"error": {"code": "engine_unavailable", "name": "EngineUnavailable"}}
    assert _status_for(zygote_down)[0] == 503
    for name in ("UserStoreUnavailable", "UserStoreTimeout"):
        status, headers = _status_for({"error": {"code": "engine_unavailable", "name": name}})
        assert (status, headers.get("Retry-After")) == (504, "1")
    assert _status_for({"error": {"code": "overloaded", "retry_after": 2.5}}) == (429, {"Retry-After": "3"})
    assert _status_for({"ok": True, "error": None})[0] == 200
