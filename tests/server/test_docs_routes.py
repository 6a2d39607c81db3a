"""/openapi.json is the very document the tests validate against; /docs renders it offline."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.services import unavailable
from server_harness import OPENAPI, Server, check_openapi


def test_openapi_json_is_the_document_the_tests_use(server: Server) -> None:
    with server.client() as c:  # no token: a description of the API is public
        r = c.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == OPENAPI
    check_openapi("get", "/openapi.json", r)
    # every route the server answers is described
    assert {"/v1/admin/tenants", "/docs", "/openapi.json", "/metrics"} <= set(OPENAPI["paths"])


def test_docs_page_loads_nothing_from_outside(server: Server) -> None:
    with server.client() as c:
        r = c.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    check_openapi("get", "/docs", r)
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    # no src/href to another host: nothing a CDN could serve
    assert re.findall(r'(?:src|href)="(?:https?:)?//', r.text) == []
    assert '<script src="console/docs.js"></script>' in r.text
    with server.client() as c:
        js = c.get("/console/docs.js")
    assert js.status_code == 200 and 'fetch("openapi.json")' in js.text


def test_cant_run_inline_script_on_the_docs_page(server: Server) -> None:
    """Layer: the /docs response's CSP, the console's own (script and style from static files only)."""
    from scriptvisor.engine.server.console import CSP

    with server.client() as c:
        r = c.get("/docs")
    assert r.headers["Content-Security-Policy"] == CSP and "unsafe-inline" not in CSP
    assert re.findall(r"<script>|<style>|\son[a-z]+=", r.text) == []


def test_docs_page_renders_every_route_in_a_browser(server: Server) -> None:
    if shutil.which("chromium") is None:
        unavailable("chromium is not installed (scripts/test.sh installs it)")
    out = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", server.url + "/docs"],
        capture_output=True, text=True, timeout=50)
    dom = out.stdout
    assert f'data-rendered="{len(OPENAPI["paths"])}"' in dom, out.stderr[-2000:]
    for path in OPENAPI["paths"]:
        assert f"<code>{path}</code>" in dom
    assert 'id="schema-AdminTenants"' in dom
