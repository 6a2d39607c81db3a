"""Drain as docs/scaling.md documents it (issue 14): on SIGTERM the listener and
idle keep-alive connections close at once (a load balancer gets a clean
connection refusal, which it retries on another node), while the calls already
running finish with their results; then the server exits 0."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from scriptvisor.engine.server import auth
from server_harness import SSEReader, make_tenant

ROUNDS = 10_000_000  # slow.py loop rounds: still running when the signal arrives
WAIT = 60


def _lines(stream, out: "queue.Queue[str | None]") -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_event(lines: "queue.Queue[str | None]", event: str) -> dict:
    """The operator log (stderr, JSON lines) event ``event``, when it is written."""
    while True:
        line = lines.get(timeout=WAIT)
        assert line is not None, f"server log ended before {event!r}"
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            return entry


@pytest.mark.slow
def test_drain_refuses_new_connections_and_finishes_running_calls(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "alpha", "[limits]\ntimeout = 30\nmax_concurrency = 2\n")
    token = auth.create_token(tenants, "alpha")
    proc = subprocess.Popen(  # no --log-file: the operator log goes to stderr, read as it is written
        [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(tenants), "--port", "0"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, log), daemon=True).start()
    try:
        url = proc.stdout.readline().split("listening on ", 1)[1].strip()
        host, port = url.rsplit("//", 1)[1].split(":")
        # an idle keep-alive connection opened before the drain
        idle = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() and idle.sock is not None

        sse = SSEReader(SimpleNamespace(url=url, tokens={"alpha": token}), "alpha")
        results: list[httpx.Response] = []

        def call() -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=WAIT) as c:
                results.append(c.post("/v1/tenants/alpha/scripts/slow", json={"args": [ROUNDS]}))

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in threads:  # both calls are running in the server
            sse.next("start")
        sse.close()
        proc.send_signal(signal.SIGTERM)
        draining = _wait_event(log, "draining")
        assert draining["in_flight"] == 2

        # new connections are refused at once: nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=WAIT).close()
        # the idle keep-alive connection was closed by the server
        assert idle.sock.recv(1) == b""
        idle.close()

        for t in threads:
            t.join(WAIT)
        assert [r.status_code for r in results] == [200, 200]
        assert all(r.json()["ok"] and r.json()["result"] == sum(range(ROUNDS)) for r in results)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
