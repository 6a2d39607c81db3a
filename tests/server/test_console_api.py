"""The console's API routes on a real server: check, save, versions, rollback, admin views.

Every response is validated against openapi.json (``check_openapi``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from scriptvisor.engine.server import auth
from scriptvisor.engine.server.scriptstore import digest
from server_harness import ADMIN_TOKEN, Server, check_openapi, make_tenant, start_server

SCRIPTS = "/v1/tenants/{tenant}/scripts"
SCRIPT = "/v1/tenants/{tenant}/scripts/{script}"
ROLLBACK = "/v1/tenants/{tenant}/scripts/{script}/rollback"
CHECK = "/v1/tenants/{tenant}/check"
RECENT = "/v1/tenants/{tenant}/invocations"

GREET = "def greet(name, callback):\n    print('hello', name)\n    callback(None, 'v1 ' + name)\n"
GREET2 = "def greet(name, callback):\n    callback(None, 'v2 ' + name)\n"


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-tenants")
    make_tenant(root, "editor", "[editing]\nenabled = true\nversions = 3\n", {"greet.py": GREET})
    make_tenant(root, "readonly", "", {"greet.py": GREET})
    make_tenant(root, "broken", "[editing]\nenabled = 1\n", {"greet.py": GREET})
    tokens = {name: auth.create_token(root, name) for name in ("editor", "readonly")}
    srv = start_server(root, root.parent / "console-oplog.jsonl", tokens)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.proc.stderr.read()


def _script_file(srv: Server, tenant: str, script: str) -> Path:
    return srv.tenants_dir / tenant / "scripts" / f"{script}.py"


def test_whoami_names_the_tenant_of_a_token_or_admin(console_server: Server) -> None:
    with console_server.client("editor") as c:
        r = c.get("/v1/whoami")
    check_openapi("get", "/v1/whoami", r)
    assert r.json() == {"role": "tenant", "tenant": "editor"}
    with console_server.client(token=ADMIN_TOKEN) as c:
        assert c.get("/v1/whoami").json() == {"role": "admin", "tenant": None}
    with console_server.client(token="svt_nobody") as c:
        r = c.get("/v1/whoami")
    assert r.status_code == 401
    check_openapi("get", "/v1/whoami", r)


def _touch(toml: Path) -> None:
    stamp = toml.stat()
    os.utime(toml, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))  # coarse clocks


def test_whoami_knows_a_token_created_while_the_server_runs(console_server: Server) -> None:
    """The console signs in with /v1/whoami: a new token (or tenant folder) works at once."""
    srv = console_server
    new = auth.create_token(srv.tenants_dir, "readonly", name="later")
    _touch(srv.tenants_dir / "readonly" / "tenant.toml")
    make_tenant(srv.tenants_dir, "latecomer", "", {"greet.py": GREET})
    late = auth.create_token(srv.tenants_dir, "latecomer")
    for token, tenant in ((new, "readonly"), (late, "latecomer")):
        with srv.client(token=token) as c:
            r = c.get("/v1/whoami")  # the first request since the file changed
        check_openapi("get", "/v1/whoami", r)
        assert (r.status_code, r.json()) == (200, {"role": "tenant", "tenant": tenant}), r.text


def test_cant_sign_in_to_the_console_with_a_revoked_token(console_server: Server) -> None:
    """Layer: whoami re-reads tenant.toml (registry.get), like every tenant route."""
    srv = console_server
    token = auth.create_token(srv.tenants_dir, "readonly", name="doomed")
    _touch(srv.tenants_dir / "readonly" / "tenant.toml")
    with srv.client(token=token) as c:
        assert c.get("/v1/tenants/readonly/scripts").status_code == 200  # loaded with the token
    doomed = [row for row in auth.list_tokens(srv.tenants_dir, "readonly") if row["name"] == "doomed"]
    auth.revoke_token(srv.tenants_dir, "readonly", doomed[0]["id"])
    _touch(srv.tenants_dir / "readonly" / "tenant.toml")
    with srv.client(token=token) as c:
        r = c.get("/v1/whoami")  # the first request since the revoke
    check_openapi("get", "/v1/whoami", r)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized"), r.text


def test_whoami_lets_a_broken_tenants_token_in_to_see_why(console_server: Server) -> None:
    """The tenant routes answer a broken tenant's own token 500 with the key; sign-in lets it see that."""
    srv = console_server
    token = auth.create_token(srv.tenants_dir, "broken", name="owner")  # the file parses, it does not validate
    _touch(srv.tenants_dir / "broken" / "tenant.toml")
    with srv.client(token=token) as c:
        who = c.get("/v1/whoami")
        scripts = c.get("/v1/tenants/broken/scripts")
    check_openapi("get", "/v1/whoami", who)
    assert (who.status_code, who.json()) == (200, {"role": "tenant", "tenant": "broken"}), who.text
    check_openapi("get", SCRIPTS, scripts)
    assert scripts.status_code == 500 and scripts.json()["error"]["key"] == "editing.enabled"


def test_scripts_are_listed_with_source_operations_and_editing_flag(console_server: Server) -> None:
    with console_server.client("readonly") as c:
        r = c.get("/v1/tenants/readonly/scripts")
    check_openapi("get", SCRIPTS, r)
    body = r.json()
    assert body["editing"] is False
    assert body["scripts"] == [{"name": "greet", "source": GREET, "sha256": digest(GREET)}]
    assert body["operations"]["login"] == ["email", "password"]


def test_check_reports_each_problem_at_its_line(console_server: Server) -> None:
    with console_server.client("editor") as c:
        bad = c.post("/v1/tenants/editor/check", json={
            "script": "greet", "source": "def greet(name, callback):\n    x = 1\n    import os\n"})
        missing = c.post("/v1/tenants/editor/check", json={"script": "greet", "source": "def other(callback):\n    pass\n"})
        good = c.post("/v1/tenants/editor/check", json={"script": "greet", "source": GREET})
        wrong = c.post("/v1/tenants/editor/check", json={"code": GREET})
    for r in (bad, missing, good, wrong):
        check_openapi("post", CHECK, r)
    assert bad.json()["ok"] is False
    [problem] = bad.json()["problems"]
    assert problem["line"] == 3 and 'import of "os" is not allowed' in problem["message"]
    assert "no function greet" in missing.json()["problems"][0]["message"]
    assert good.json() == {"ok": True, "problems": []}
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_body"


def test_save_checks_first_writes_atomically_keeps_versions_and_rolls_back(console_server: Server) -> None:
    srv = console_server
    path = _script_file(srv, "editor", "greet")
    with srv.client("editor") as c:
        # a source that fails check is refused and nothing is written
        r = c.put("/v1/tenants/editor/scripts/greet", json={"source": "def greet(name, callback):\n    import os\n"})
        check_openapi("put", SCRIPT, r)
        assert r.status_code == 422 and r.json()["error"]["code"] == "check_failed"
        assert r.json()["error"]["problems"][0]["line"] == 2
        assert path.read_text() == GREET

        r = c.put("/v1/tenants/editor/scripts/greet", json={"source": GREET2, "base_sha256": digest(GREET)})
        check_openapi("put", SCRIPT, r)
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == digest(GREET2) and r.json()["kept_version"] == 1
        assert path.read_text() == GREET2
        assert sorted(p.name for p in path.parent.iterdir()) == ["greet.py"]  # no temporary file left
        assert c.post("/v1/tenants/editor/scripts/greet", json={"args": ["ann"]}).json()["result"] == "v2 ann"

        # an edit started from the old content no longer applies: 409, file unchanged
        r = c.put("/v1/tenants/editor/scripts/greet", json={"source": GREET, "base_sha256": digest(GREET)})
        check_openapi("put", SCRIPT, r)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert path.read_text() == GREET2

        r = c.get("/v1/tenants/editor/scripts/greet")
        check_openapi("get", SCRIPT, r)
        assert [v["version"] for v in r.json()["versions"]] == [1]
        assert r.json()["versions"][0]["sha256"] == digest(GREET)

        r = c.post("/v1/tenants/editor/scripts/greet/rollback", json={"version": 1})
        check_openapi("post", ROLLBACK, r)
        assert r.status_code == 200 and r.json()["sha256"] == digest(GREET) and r.json()["kept_version"] == 2
        assert path.read_text() == GREET
        assert c.post("/v1/tenants/editor/scripts/greet", json={"args": ["ann"]}).json()["result"] == "v1 ann"

        r = c.post("/v1/tenants/editor/scripts/greet/rollback", json={"version": 99})
        check_openapi("post", ROLLBACK, r)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_version"

        # versions = 3 in tenant.toml: only the three newest are kept
        for i in range(4):
            src = f"def greet(name, callback):\n    callback(None, {i})\n"
            assert c.put("/v1/tenants/editor/scripts/greet", json={"source": src}).status_code == 200
        versions = c.get("/v1/tenants/editor/scripts/greet").json()["versions"]
    assert [v["version"] for v in versions] == [6, 5, 4]
    assert sorted(os.listdir(srv.tenants_dir / "editor" / "versions" / "greet")) == ["4.py", "5.py", "6.py"]


def test_a_new_script_can_be_created_and_invalid_names_are_refused(console_server: Server) -> None:
    with console_server.client("editor") as c:
        src = "def fresh(callback):\n    callback(None, 'new')\n"
        r = c.put("/v1/tenants/editor/scripts/fresh", json={"source": src})
        assert r.status_code == 200 and r.json()["kept_version"] is None
        assert c.post("/v1/tenants/editor/scripts/fresh", json={}).json()["result"] == "new"
        r = c.put("/v1/tenants/editor/scripts/..%2Fescape", json={"source": src})
        assert r.status_code == 404
        r = c.put("/v1/tenants/editor/scripts/fresh", content=b"{", headers={"Content-Type": "application/json"})
        check_openapi("put", SCRIPT, r)
        assert r.status_code == 400
    assert not (console_server.tenants_dir / "editor" / "escape.py").exists()


def test_cant_save_scripts_unless_the_operator_enabled_editing(console_server: Server) -> None:
    path = _script_file(console_server, "readonly", "greet")
    with console_server.client("readonly") as c:
        r = c.put("/v1/tenants/readonly/scripts/greet", json={"source": GREET2})
        check_openapi("put", SCRIPT, r)
        rb = c.post("/v1/tenants/readonly/scripts/greet/rollback", json={"version": 1})
    # stopped by the route's tenant.toml check ([editing] enabled defaults to false)
    assert r.status_code == 403 and r.json()["error"]["code"] == "editing_disabled"
    assert rb.status_code == 403 and rb.json()["error"]["code"] == "editing_disabled"
    assert path.read_text() == GREET


def test_cant_reach_another_tenants_routes_with_a_tenant_token(console_server: Server) -> None:
    srv = console_server
    routes = [
        ("get", SCRIPTS, "/v1/tenants/editor/scripts", None),
        ("get", SCRIPT, "/v1/tenants/editor/scripts/greet", None),
        ("put", SCRIPT, "/v1/tenants/editor/scripts/greet", {"source": GREET2}),
        ("post", ROLLBACK, "/v1/tenants/editor/scripts/greet/rollback", {"version": 1}),
        ("post", CHECK, "/v1/tenants/editor/check", {"source": GREET}),
        ("get", RECENT, "/v1/tenants/editor/invocations", None),
    ]
    before = _script_file(srv, "editor", "greet").read_text()
    with srv.client("readonly") as c:
        for method, template, url, body in routes:
            r = c.request(method.upper(), url, json=body)
            check_openapi(method, template, r)
            # stopped by the token check (auth.decide), before any body is read
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), (method, url)
        for method, template, url in [("get", "/v1/admin/tenants", "/v1/admin/tenants"),
                                      ("get", "/v1/admin/activity", "/v1/admin/activity"),
                                      ("post", "/v1/admin/tenants/{tenant}/recycle", "/v1/admin/tenants/editor/recycle")]:
            r = c.request(method.upper(), url)
            check_openapi(method, template, r)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), url
    with srv.client(token="svt_not_a_token") as c:
        r = c.get("/v1/admin/tenants")
        assert r.status_code == 401
    assert _script_file(srv, "editor", "greet").read_text() == before


def test_recent_invocations_and_activity_count_outcomes(console_server: Server) -> None:
    with console_server.client("readonly") as c:
        assert c.post("/v1/tenants/readonly/scripts/greet", json={"args": ["x"]}).json()["ok"] is True
        assert c.post("/v1/tenants/readonly/scripts/greet", json={"args": []}).json()["ok"] is False
        r = c.get("/v1/tenants/readonly/invocations")
    check_openapi("get", RECENT, r)
    recent = r.json()["invocations"]
    assert [(i["name"], i["outcome"], i["status"]) for i in recent[:2]] == [
        ("greet", "script_error", 200), ("greet", "ok", 200)]
    assert r.json()["last_error"]["code"] == "script_error"
    with console_server.client(token=ADMIN_TOKEN) as c:
        r = c.get("/v1/admin/activity")
    check_openapi("get", "/v1/admin/activity", r)
    buckets = r.json()["buckets"]
    assert len(buckets) == 90
    totals: dict[str, int] = {}
    for b in buckets:
        for k, v in b["outcomes"].items():
            totals[k] = totals.get(k, 0) + v
    assert totals.get("ok", 0) >= 1 and totals.get("script_error", 0) >= 1
    assert any(b["latency_ms"]["p50"] for b in buckets)


def test_admin_tenants_show_state_workers_and_recycle_replaces_them(console_server: Server) -> None:
    with console_server.client("readonly") as c:
        assert c.post("/v1/tenants/readonly/scripts/greet", json={"args": ["w"]}).status_code == 200
    with console_server.client(token=ADMIN_TOKEN) as c:
        r = c.get("/v1/admin/tenants")
        check_openapi("get", "/v1/admin/tenants", r)
        tenants = {t["name"]: t for t in r.json()["tenants"]}
        assert tenants["broken"]["state"] == "invalid" and tenants["broken"]["config_error"]["key"] == "editing.enabled"
        assert tenants["editor"]["editing"] is True and tenants["readonly"]["editing"] is False
        before = {w["pid"] for w in tenants["readonly"]["processes"]}
        assert before and all(w["rss"] and w["uss"] and w["age_s"] >= 0 for w in tenants["readonly"]["processes"])
        assert len(before) == tenants["readonly"]["workers"]["alive"]
        r = c.post("/v1/admin/tenants/readonly/recycle")
        check_openapi("post", "/v1/admin/tenants/{tenant}/recycle", r)
        assert r.status_code == 200 and r.json()["retired"] == len(before)
        assert c.post("/v1/admin/tenants/nosuch/recycle").status_code == 404
    with console_server.client("readonly") as c:
        assert c.post("/v1/tenants/readonly/scripts/greet", json={"args": ["w"]}).json()["ok"] is True
    with console_server.client(token=ADMIN_TOKEN) as c:
        workers = {t["name"]: t for t in c.get("/v1/admin/tenants").json()["tenants"]}["readonly"]["processes"]
    # retired workers may still be listed while they exit; the live ones are all new
    after = {w["pid"] for w in workers if w["state"] != "exiting"}
    assert after and not (after & before)
    assert any(e.get("event") == "tenant_recycle" and e.get("tenant") == "readonly" for e in console_server.oplog())


def test_console_is_served_from_the_package_with_a_strict_csp(console_server: Server) -> None:
    with console_server.client() as c:
        page = c.get("/console")
        js = c.get("/console/app.js")
        other = c.get("/console/openapi.json")
        dotted = c.get("/console/..%2Fapp.py")
    check_openapi("get", "/console", page)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert "<script src=\"/console/app.js\"" in page.text and "<script>" not in page.text
    assert js.status_code == 200
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js.text, sink
    assert other.status_code == 404 and dotted.status_code == 404
