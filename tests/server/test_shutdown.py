"""Graceful shutdown: calls in flight finish, nothing is lost, no process is left behind."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from scriptvisor.engine.server import auth
from server_harness import SSEReader, make_tenant, start_server

#: Loop rounds of slow.py: enough work that a call is still running when the
#: signal arrives right after its start event (the test does not depend on how long).
ROUNDS = 10_000_000


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_in_flight_calls_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "alpha", "[limits]\ntimeout = 30\nmax_concurrency = 3\n")
    tokens = {"alpha": auth.create_token(tenants, "alpha")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens)
    server_proc = psutil.Process(srv.proc.pid)
    sse = SSEReader(srv, "alpha")
    results: list[httpx.Response] = []

    def call() -> None:
        with srv.client("alpha") as c:
            results.append(c.post("/v1/tenants/alpha/scripts/slow", json={"args": [ROUNDS]}))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in threads:
        sse.next("start")
    family = server_proc.children(recursive=True)
    assert family, "the engine's zygote and workers run as children of the server"

    srv.proc.send_signal(sig)
    for t in threads:
        t.join(60)
    assert sse.ended()  # the drain closed the log stream
    sse.close()
    assert srv.proc.wait(60) == 0

    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["ok"] and r.json()["result"] == sum(range(ROUNDS)) for r in results)
    leftovers = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/healthz", timeout=5)
    events = [x["event"] for x in srv.oplog()]
    assert events.count("invocation") == 3
    # the three calls were still in flight when the drain began, and finished before the stop
    assert events.index("draining") < events.index("invocation")
    assert events[-1] == "stopped"
