"""Behaviour over time on a real server: SSE stream, hot reload, metrics, fairness, connections."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from scriptvisor.engine.server import auth
from server_harness import ADMIN_TOKEN, ROOT, Server, SSEReader, check_openapi, make_tenant, start_server


def _touch_changed(path: Path, text: str) -> None:
    st = path.stat()
    path.write_text(text)
    # a new mtime even on filesystems with coarse timestamps
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def metric(server: Server, name: str, **labels: str) -> float:
    with server.client(token=ADMIN_TOKEN) as c:  # per-tenant series are for the admin token only
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    total = 0.0
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_sse_streams_this_tenants_logs_and_outcomes_only(server: Server) -> None:
    sse = SSEReader(server, "alpha")
    try:
        with server.client("beta") as c:
            assert c.post("/v1/tenants/beta/scripts/logs", json={"args": ["beta-secret"]}).status_code == 200
        with server.client("alpha") as c:
            r = c.post("/v1/tenants/alpha/scripts/logs", json={"args": ["world"]})
        inv = r.headers["X-Invocation-Id"]
        kind, start = sse.next()
        assert kind == "start" and start == {"invocation_id": inv, "script": "logs"}
        kind, done = sse.next()
        assert kind == "result" and done["invocation_id"] == inv
        assert done["ok"] is True and done["status"] == 200 and done["logs"] == ["hello world"]
        with server.client("alpha") as c:
            c.post("/v1/tenants/alpha/scripts/fails", json={})
        _, failed = sse.next("result")
        assert failed["ok"] is False and failed["error"]["code"] == "script_error"
        assert sse.events.empty()  # beta's invocation never reached alpha's stream
    finally:
        sse.close()


def test_hot_reload_of_scripts_config_and_tokens(server: Server) -> None:
    alpha = server.tenants_dir / "alpha"
    script = alpha / "scripts" / "hot.py"
    script.write_text("def hot(callback):\n    callback(None, 1)\n")
    with server.client("alpha") as c:
        assert c.post("/v1/tenants/alpha/scripts/hot", json={}).json()["result"] == 1
        script.write_text("def hot(callback):\n    callback(None, 2)\n")
        assert c.post("/v1/tenants/alpha/scripts/hot", json={}).json()["result"] == 2
        script.unlink()
        assert c.post("/v1/tenants/alpha/scripts/hot", json={}).status_code == 404

        toml = alpha / "tenant.toml"
        original = toml.read_text()
        _touch_changed(toml, original.replace('V = "one"', 'V = "two"'))
        assert c.post("/v1/tenants/alpha/scripts/conf", json={"args": ["V"]}).json()["result"] == "two"

    new_token = auth.create_token(server.tenants_dir, "alpha")
    with server.client(token=new_token) as c:
        assert c.post("/v1/tenants/alpha/scripts/noop", json={}).status_code == 200
        assert c.post("/v1/tenants/beta/scripts/noop", json={}).status_code == 403


def test_script_edit_does_not_disturb_a_call_in_flight(server: Server) -> None:
    """Hot reload: the running call finishes with the code it started with; the next one gets the edit."""
    import threading

    script = server.tenants_dir / "alpha" / "scripts" / "slow.py"
    script.write_text(
        "import time\n"
        "def slow(callback):\n"
        "    end = time.monotonic() + 0.5\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    callback(None, 'old')\n")
    sse = SSEReader(server, "alpha")
    results: list = []
    try:
        def call() -> None:
            with server.client("alpha") as c:
                results.append(c.post("/v1/tenants/alpha/scripts/slow", json={}).json())

        worker = threading.Thread(target=call)
        worker.start()
        kind, start = sse.next("start")  # the call is in flight now
        assert start["script"] == "slow"
        script.write_text("def slow(callback):\n    callback(None, 'new')\n")
        worker.join(30)
        assert results and results[0]["ok"] and results[0]["result"] == "old"
        with server.client("alpha") as c:
            assert c.post("/v1/tenants/alpha/scripts/slow", json={}).json()["result"] == "new"
    finally:
        sse.close()


def test_new_tenant_folder_is_served_without_restart(server: Server) -> None:
    make_tenant(server.tenants_dir, "late")
    token = auth.create_token(server.tenants_dir, "late")
    with server.client(token=token) as c:
        assert c.post("/v1/tenants/late/scripts/echo", json={"args": [7]}).json()["result"] == 7


def test_metrics_values_change(server: Server) -> None:
    ok_before = metric(server, "scriptvisor_invocations_total", tenant="beta", kind="script", outcome="ok")
    err_before = metric(server, "scriptvisor_invocations_total", tenant="beta", outcome="script_error")
    rej_before = metric(server, "scriptvisor_rejected_requests_total", tenant="beta", status="403")
    hist_before = metric(server, "scriptvisor_invocation_duration_seconds_count", tenant="beta")
    recycled_before = metric(server, "scriptvisor_worker_recycles_total", reason="timeout")
    with server.client("beta") as c:
        c.post("/v1/tenants/beta/scripts/noop", json={})
        c.post("/v1/tenants/beta/scripts/noop", json={})
        c.post("/v1/tenants/beta/scripts/fails", json={})
        c.post("/v1/tenants/beta/scripts/spin", json={"timeout": 0.3})
    with server.client("alpha") as c:
        c.post("/v1/tenants/beta/scripts/noop", json={})  # 403
    assert metric(server, "scriptvisor_invocations_total", tenant="beta", kind="script", outcome="ok") == ok_before + 2
    assert metric(server, "scriptvisor_invocations_total", tenant="beta", outcome="script_error") == err_before + 1
    assert metric(server, "scriptvisor_rejected_requests_total", tenant="beta", status="403") == rej_before + 1
    assert metric(server, "scriptvisor_invocation_duration_seconds_count", tenant="beta") == hist_before + 4
    assert metric(server, "scriptvisor_worker_recycles_total", reason="timeout") == recycled_before + 1
    assert metric(server, "scriptvisor_workers") >= 1
    assert metric(server, "scriptvisor_workers", state="idle") >= 1
    assert metric(server, "scriptvisor_queue_depth", tenant="beta") == 0
    assert metric(server, "scriptvisor_requests_in_flight", tenant="beta") == 0
    # psutil figures of beta's live workers: real processes use memory
    rss = metric(server, "scriptvisor_worker_rss_bytes", tenant="beta")
    uss = metric(server, "scriptvisor_worker_uss_bytes", tenant="beta")
    assert rss > uss > 0


def test_flooding_tenant_does_not_starve_another(server: Server) -> None:
    """flood sends 12 spinning calls at once (max_concurrency 2, queue 2); while they
    are all still in flight, beta's calls are served normally."""

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response], bool]:
        headers_f = {"Authorization": f"Bearer {server.tokens['flood']}"}
        headers_b = {"Authorization": f"Bearer {server.tokens['beta']}"}
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
            sse = await asyncio.to_thread(SSEReader, server, "flood")
            flood = [asyncio.create_task(c.post("/v1/tenants/flood/scripts/spin", json={}, headers=headers_f))
                     for _ in range(12)]
            for _ in flood:
                await asyncio.to_thread(sse.next, "start")
            fair = [await c.post("/v1/tenants/beta/scripts/echo", json={"args": [i]}, headers=headers_b)
                    for i in range(5)]
            flood_running = not all(t.done() for t in flood)
            done = await asyncio.gather(*flood)
            await asyncio.to_thread(sse.close)
            return done, fair, flood_running

    flood, fair, flood_running = asyncio.run(scenario())
    assert [r.json()["result"] for r in fair] == [0, 1, 2, 3, 4]
    assert flood_running  # beta was served while flood's calls were still spinning
    codes = sorted({(r.status_code, r.json()["error"]["code"]) for r in flood})
    assert codes == [(200, "timeout"), (429, "overloaded")]


def test_connection_operations_in_legacy_mode(tmp_path: Path) -> None:
    from scriptvisor.engine.tenantdir import init_tenant

    tenants = tmp_path / "tenants"
    tenants.mkdir()
    init_tenant(tenants / "shop", "sqlite", import_users=False, seed_rounds=4)
    make_tenant(tenants, "other")
    tokens = {t: auth.create_token(tenants, t) for t in ("shop", "other")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens)
    try:
        path = "/v1/tenants/{tenant}/connection/{operation}"
        with srv.client("shop") as c:
            r = c.post("/v1/tenants/shop/connection/login", json={"args": ["alice@example.com", "wonderland"]})
            assert r.status_code == 200
            check_openapi("post", path, r)
            body = r.json()
            assert body["ok"] is True and body["result"]["email"] == "alice@example.com"
            assert body["scripts_called"] == ["login"]
            r = c.post("/v1/tenants/shop/connection/signup",
                       json={"args": [{"email": "carol@example.com", "password": "pw-carol"}]})
            assert r.json()["ok"] is True and r.json()["scripts_called"] == ["get_user", "create", "login"]
            r = c.post("/v1/tenants/shop/connection/signup",
                       json={"args": [{"email": "carol@example.com", "password": "pw-carol"}]})
            assert r.status_code == 200 and r.json()["ok"] is False
            assert r.json()["scripts_called"] == ["get_user"]
            r = c.post("/v1/tenants/shop/connection/login", json={"args": ["alice@example.com", "nope"]})
            assert r.status_code == 200 and r.json()["ok"] is False
            # arguments the operation refuses are a request problem, not a result
            for bad in ({"args": ["only-one"]}, {"args": [{"not": "text"}, "pw"]},
                        {"args": ["not a user object"]}):
                op = "signup" if bad["args"] == ["not a user object"] else "login"
                r = c.post(f"/v1/tenants/shop/connection/{op}", json=bad)
                assert r.status_code == 422, (bad, r.text)
                check_openapi("post", path, r)
                assert r.json()["error"]["code"] == "invalid_body"
        with srv.client("other") as c:
            r = c.post("/v1/tenants/shop/connection/login", json={"args": ["alice@example.com", "wonderland"]})
            assert r.status_code == 403
    finally:
        assert srv.stop() == 0
    lines = [x for x in srv.oplog() if x.get("event") == "invocation" and x.get("operation")]
    assert [x["operation"] for x in lines] == ["login", "signup", "signup", "login"]


def test_bundled_example_serves_alice(tmp_path: Path) -> None:
    """The README's first command: the example tenant, its demo token, alice's login."""
    from scriptvisor.engine.server.run import EXAMPLE_TOKEN, ensure_example_scripts

    tenants = tmp_path / "tenants"
    shutil.copytree(ensure_example_scripts(), tenants, ignore=shutil.ignore_patterns("data", "state"))
    from scriptvisor.engine.tenantdir import seed_sqlite

    (tenants / "example" / "data").mkdir()
    seed_sqlite(tenants / "example" / "data" / "legacy.db", rounds=4)
    srv = start_server(tenants, tmp_path / "oplog.jsonl", {"example": EXAMPLE_TOKEN})
    try:
        with srv.client("example") as c:
            r = c.post("/v1/tenants/example/scripts/login", json={"args": ["alice@example.com", "wonderland"]})
        assert r.status_code == 200 and r.json()["ok"] is True
        assert r.json()["result"]["email"] == "alice@example.com"
    finally:
        assert srv.stop() == 0
    assert ROOT.joinpath("examples", "tenants", "example", "tenant.toml").is_file()
