"""Issue 10: end-user input that no frame can carry never kills a worker.

A lone surrogate (``"\\udc80"``, valid JSON text, not valid UTF-8) in an email
from a login form, or an argument larger than an invoke frame may be, is
refused as a request error naming the argument *before* anything is sent to
a worker: the layer that stops it is the supervisor's argument check
(``sandbox.wire.encode_arguments``, called by ``Supervisor.submit``) and, for
connection operations, ``connections._Run`` before the user store is asked.
The warm worker and its ``global_`` survive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
from server_harness import make_tenant, start_server  # noqa: E402

from scriptvisor.engine.server import auth  # noqa: E402
from scriptvisor.engine.tenantdir import init_tenant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
COUNTER = ("def counter(value, callback):\n"
           "    global_['n'] = global_.get('n', 0) + 1\n"
           "    callback(None, [global_['n'], value])\n")
SURROGATE_BODY = b'{"args": ["alice\\udc80@example.com"]}'


def test_cant_kill_a_worker_with_a_lone_surrogate_through_the_cli(tmp_path: Path) -> None:
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    calls = tmp_path / "calls.jsonl"
    calls.write_text('["a"]\n["alice\\udc80@example.com"]\n["b"]\n')
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", "run", str(script),
                           "--batch", str(calls), "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr
    assert lines[0]["result"] == [1, "a"]
    assert lines[1]["error"]["code"] == "bad_request" and lines[1]["error"]["argument"] == "args[0]"
    assert lines[2]["result"] == [2, "b"], "global_ survived: the worker was never touched"


def test_cant_kill_a_worker_with_a_lone_surrogate_over_http(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "acme", "", {"counter.py": COUNTER})
    init_tenant(tenants / "shop", "sqlite", import_users=True, seed_rounds=4)
    tokens = {t: auth.create_token(tenants, t) for t in ("acme", "shop")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens)
    try:
        with srv.client("acme") as c:
            first = c.post("/v1/tenants/acme/scripts/counter", json={"args": ["a"]}).json()
            assert first["result"] == [1, "a"]
            r = c.post("/v1/tenants/acme/scripts/counter", content=SURROGATE_BODY,
                       headers={"Content-Type": "application/json"})
            assert r.status_code == 422, r.text
            assert "args[0]" in r.json()["error"]["message"]
            after = c.post("/v1/tenants/acme/scripts/counter", json={"args": ["b"]}).json()
            assert after["result"] == [2, "b"], "global_ survived"
        with srv.client("shop") as c:
            ok = c.post("/v1/tenants/shop/connection/login", json={"args": ["alice@example.com", "wonderland"]})
            assert ok.status_code == 200 and ok.json()["ok"] is True
            r = c.post("/v1/tenants/shop/connection/login",
                       content=b'{"args": ["alice\\udc80@example.com", "wonderland"]}',
                       headers={"Content-Type": "application/json"})
            assert r.status_code == 422, r.text  # was 503 UserStoreUnavailable
            assert "email" in r.json()["error"]["message"]
            again = c.post("/v1/tenants/shop/connection/login", json={"args": ["alice@example.com", "wonderland"]})
            assert again.status_code == 200 and again.json()["ok"] is True
    finally:
        assert srv.stop() == 0
    events = [x for x in srv.oplog() if x.get("event") == "invocation"]
    assert not any(x.get("outcome") in ("crash", "protocol_error") for x in events), events


@pytest.mark.parametrize("operation,args,field", [
    ("login", ["alice@example.com", "pw\udc80"], "password"),
    ("signup", [{"email": "x@example.com", "password": float("nan")}], "user"),
])
def test_cant_pass_uncarriable_values_to_a_connection_operation(operation, args, field) -> None:
    from scriptvisor.engine import connections
    from scriptvisor.engine.errors import BadRequest

    conn = object.__new__(connections.Connection)  # _Run checks arguments before touching it
    with pytest.raises(BadRequest) as info:
        connections._Run(conn, operation, args)
    assert info.value.details["argument"] == field
