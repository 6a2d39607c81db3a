"""Saving scripts with two nodes, both ways docs/scaling.md documents ("Editing scripts on several nodes").

* one tenants folder shared by both nodes: a save through either is what both run next;
* a folder per node: ``scriptvisor script push`` saves on every node and reads it
  back, ``scriptvisor script compare`` names every script the nodes disagree on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scriptvisor.engine.server import auth
from scriptvisor.engine.server.scriptstore import digest
from server_harness import Server, make_tenant, start_server

pytestmark = pytest.mark.slow

V1 = "def hello(name, callback):\n    callback(None, 'v1 ' + name)\n"
V2 = "def hello(name, callback):\n    callback(None, 'v2 ' + name)\n"


def _both(tmp: Path, roots: tuple[Path, Path], tokens: dict[str, str]) -> tuple[Server, Server]:
    a = start_server(roots[0], tmp / "a.jsonl", tokens)
    try:
        b = start_server(roots[1], tmp / "b.jsonl", tokens)
    except BaseException:
        a.stop()
        raise
    return a, b


def _hello(srv: Server) -> str:
    with srv.client("acme") as c:
        return c.post("/v1/tenants/acme/scripts/hello", json={"args": ["x"]}).json()["result"]


def _cli(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SCRIPTVISOR_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_shared_tenants_folder_makes_a_save_on_one_node_live_on_both(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    make_tenant(root, "acme", "[editing]\nenabled = true\n", {"hello.py": V1})
    tokens = {"acme": auth.create_token(root, "acme")}
    a, b = _both(tmp_path, (root, root), tokens)
    try:
        assert _hello(a) == _hello(b) == "v1 x"
        with a.client("acme") as c:
            r = c.put("/v1/tenants/acme/scripts/hello", json={"source": V2, "base_sha256": digest(V1)})
        assert r.status_code == 200, r.text
        assert _hello(b) == "v2 x" and _hello(a) == "v2 x"
        # the kept version is in the shared folder too: either node can roll back
        with b.client("acme") as c:
            assert [v["version"] for v in c.get("/v1/tenants/acme/scripts/hello").json()["versions"]] == [1]
            assert c.post("/v1/tenants/acme/scripts/hello/rollback", json={"version": 1}).status_code == 200
            # an edit that started before the rollback is refused, not silently applied
            stale = c.put("/v1/tenants/acme/scripts/hello", json={"source": V2, "base_sha256": digest(V2)})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        assert _hello(a) == "v1 x"
        assert _cli("script", "compare", "acme", "--node", a.url, "--node", b.url,
                    token=tokens["acme"]).returncode == 0
    finally:
        a.stop()
        b.stop()


def test_push_saves_on_every_node_and_compare_names_a_node_that_drifted(tmp_path: Path) -> None:
    root_a, root_b = tmp_path / "node-a", tmp_path / "node-b"
    make_tenant(root_a, "acme", "[editing]\nenabled = true\n", {"hello.py": V1})
    tokens = {"acme": auth.create_token(root_a, "acme")}
    shutil.copytree(root_a, root_b)  # the same tenant folder (and token hash) deployed to both nodes
    a, b = _both(tmp_path, (root_a, root_b), tokens)
    token = tokens["acme"]
    try:
        new = tmp_path / "hello.py"
        new.write_text(V2)
        # the documented commands, as written in docs/scaling.md
        pushed = _cli("script", "push", "acme", "hello", str(new), "--node", a.url, "--node", b.url, token=token)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "identical on 2 node(s)" in pushed.stdout
        assert _hello(a) == _hello(b) == "v2 x"
        same = _cli("script", "compare", "acme", "--node", a.url, "--node", b.url, token=token)
        assert same.returncode == 0 and "1 script(s) identical on 2 node(s)" in same.stdout

        # a node changed behind the API's back: compare says which script and which node
        (root_b / "acme" / "scripts" / "hello.py").write_text(V1)
        drift = _cli("script", "compare", "acme", "--node", a.url, "--node", b.url, token=token)
        assert drift.returncode == 1
        assert f"acme/hello: nodes disagree: {a.url}={digest(V2)[:12]}, {b.url}={digest(V1)[:12]}" in drift.stdout

        # a node that refuses the save (editing off there) fails the push by name; the other saved
        toml = root_b / "acme" / "tenant.toml"
        text = toml.read_text().replace("enabled = true", "enabled = false")
        st = toml.stat()
        toml.write_text(text)
        os.utime(toml, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        refused = _cli("script", "push", "acme", "hello", str(new), "--node", a.url, "--node", b.url, token=token)
        assert refused.returncode == 1
        assert f"{b.url}: NOT saved: 403 editing_disabled" in refused.stdout
        assert "do NOT all serve the pushed source" in refused.stdout
        bad = tmp_path / "bad.py"
        bad.write_text("def hello(name, callback):\n    import os\n")
        failed = _cli("script", "push", "acme", "hello", str(bad), "--node", a.url, token=token)
        assert failed.returncode == 1 and "hello.py:2:" in failed.stdout and "check_failed" in failed.stdout
        assert _hello(a) == "v2 x"
    finally:
        a.stop()
        b.stop()
