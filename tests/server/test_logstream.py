"""The /logs SSE stream: heartbeat, ids and Last-Event-ID resume, the drain's
result events (issues 12 and 14), and its bounds against a tenant that opens
many streams or never reads (issue 10: the layer is engine.server.logstream)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scriptvisor.engine.server import auth
from scriptvisor.engine.server.logstream import LogHub
from server_harness import ADMIN_TOKEN, Server, make_tenant, start_server

NOISY = {
    # ~60 KB of output per call: result frames near the 64 KiB frame cap
    "noisy.py": "def noisy(callback):\n    for i in range(60):\n        print('x' * 1000)\n    callback(None, 1)\n",
    "echo.py": "def echo(value, callback):\n    callback(None, value)\n",
    "slow.py": ("def slow(rounds, callback):\n    n = 0\n    for i in range(rounds):\n        n = n + i\n"
                "    callback(None, n)\n"),
}


class RawStream:
    """A log stream read line by line over a plain socket (HTTP/1.0, close-delimited)."""

    def __init__(self, server: Server, tenant: str, *, last_event_id: str | None = None,
                 token: str | None = None, rcvbuf: int | None = None, read: bool = True) -> None:
        host, port = server.url.rsplit("//", 1)[1].split(":")
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect((host, int(port)))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        tok = token if token is not None else server.tokens[tenant]
        self.sock.sendall(f"GET /v1/tenants/{tenant}/logs HTTP/1.0\r\nHost: x\r\n"
                          f"Authorization: Bearer {tok}\r\n{extra}\r\n".encode())
        self.file = self.sock.makefile("rb")
        if read:
            self.status = int(self.file.readline().split()[1])
            self.headers = {}
            while line := self.file.readline().strip():
                k, _, v = line.decode().partition(":")
                self.headers[k.lower()] = v.strip()

    def lines(self) -> Iterator[str]:
        for raw in self.file:
            yield raw.decode().rstrip("\n")

    def events(self) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
        """(id, event, data) per frame; comments are skipped."""
        ident = event = None
        for line in self.lines():
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield ident, event or "message", json.loads(line[6:])
                ident = event = None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("sse")
    for name in ("one", "two", "hog"):
        make_tenant(root, name, "[limits]\ntimeout = 10\n", scripts=NOISY)
    tokens = {name: auth.create_token(root, name) for name in ("one", "two", "hog")}
    srv = start_server(root, root.parent / "sse-oplog.jsonl", tokens,
                       sse_heartbeat=0.2, max_subscribers=2, subscriber_buffer=256 * 1024)
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def test_heartbeat_comment_keeps_an_idle_stream_alive(sse_server: Server) -> None:
    stream = RawStream(sse_server, "one")
    try:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.lines()
        assert next(lines) == ": subscribed"
        # nothing happens on tenant one: the next thing on the wire is a heartbeat
        assert [next(lines) for _ in range(2)] == ["", ": heartbeat"]
    finally:
        stream.close()


def test_events_have_ids_and_last_event_id_resumes_without_loss(sse_server: Server) -> None:
    first = RawStream(sse_server, "two")
    events = first.events()
    with sse_server.client("two") as c:
        for i in range(2):
            c.post("/v1/tenants/two/scripts/echo", json={"args": [i]})
    seen = [next(events) for _ in range(4)]
    first.close()
    assert [e[1] for e in seen] == ["start", "result", "start", "result"]
    ids = [e[0] for e in seen]
    epoch = ids[0].split("-")[0]
    assert [int(i.split("-")[1]) for i in ids] == list(range(int(ids[0].split("-")[1]), int(ids[0].split("-")[1]) + 4))
    # two calls while disconnected
    with sse_server.client("two") as c:
        missed = [c.post("/v1/tenants/two/scripts/echo", json={"args": [i]}).headers["X-Invocation-Id"]
                  for i in (2, 3)]
    again = RawStream(sse_server, "two", last_event_id=ids[1])  # resumes after the first result
    try:
        got = [next(again.events()) for _ in range(6)]
    finally:
        again.close()
    assert [g[0] for g in got] == ids[2:] + [f"{epoch}-{int(ids[3].split('-')[1]) + n}" for n in range(1, 5)]
    assert [g[2]["invocation_id"] for g in got[2:] if g[1] == "result"] == missed
    assert all(g[1] != "gap" for g in got)


def test_resume_from_another_server_process_says_gap(sse_server: Server) -> None:
    with sse_server.client("two") as c:
        c.post("/v1/tenants/two/scripts/echo", json={"args": ["x"]})
    stream = RawStream(sse_server, "two", last_event_id="0-12")
    try:
        ident, kind, data = next(stream.events())
    finally:
        stream.close()
    assert kind == "gap" and data["last_event_id"] == "0-12" and data["first_available"]


def test_replay_buffer_is_bounded_and_reports_what_fell_out() -> None:
    async def scenario() -> list[bytes]:
        hub = LogHub(replay_events=3, heartbeat=60)
        sub = hub.subscribe("t")
        for i in range(10):
            hub.publish("t", "start", {"invocation_id": str(i)})
        hub.unsubscribe(sub)
        resumed = hub.subscribe("t", f"{hub.epoch}-2")
        return list(resumed.frames)

    frames = asyncio.run(scenario())
    assert frames[0].startswith(b"event: gap")  # events 3..7 are gone
    assert [json.loads(f.split(b"data: ")[1])["invocation_id"] for f in frames[1:]] == ["7", "8", "9"]


def test_cant_open_unlimited_log_streams(sse_server: Server) -> None:
    """Layer: LogHub's per-tenant cap (max_subscribers=2 on this server) -> 429."""
    held = [RawStream(sse_server, "hog") for _ in range(2)]
    try:
        assert [s.status for s in held] == [200, 200]
        with sse_server.client("hog") as c:
            r = c.get("/v1/tenants/hog/logs")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "too_many_subscribers" and int(r.headers["Retry-After"]) >= 1
        other = RawStream(sse_server, "one")  # the cap is per tenant: another tenant still subscribes
        assert other.status == 200
        other.close()
    finally:
        for s in held:
            s.close()


def _metric(server: Server, name: str, **labels: str) -> float:
    with server.client(token=ADMIN_TOKEN) as c:
        text = c.get("/metrics").text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_cant_grow_server_memory_with_a_subscriber_that_never_reads(sse_server: Server) -> None:
    """Layer: LogHub's per-subscriber byte budget (256 KiB here).  A stream whose
    client never reads is dropped once its unsent frames exceed the budget; the
    server frees them and the client's connection ends."""
    dropped_before = _metric(sse_server, "scriptvisor_sse_dropped_subscribers_total", reason="slow")
    stalled = RawStream(sse_server, "hog", rcvbuf=4096, read=False)  # sends the request, never reads
    try:
        with sse_server.client(token=ADMIN_TOKEN) as admin:
            def subscribers() -> int:
                rows = admin.get("/v1/admin/tenants").json()["tenants"]
                return next(t["subscribers"] for t in rows if t["name"] == "hog")

            assert subscribers() == 1
            calls = 0
            with sse_server.client("hog") as c:
                # ~60 KB per result event; kernel buffers absorb a few MB before the budget counts
                while subscribers() and calls < 400:
                    assert c.post("/v1/tenants/hog/scripts/noisy", json={}).status_code == 200
                    calls += 1
            assert subscribers() == 0, f"still subscribed after {calls} calls of ~60 KB"
        assert _metric(sse_server, "scriptvisor_sse_dropped_subscribers_total", reason="slow") == dropped_before + 1
        dropped = [x for x in sse_server.oplog() if x["event"] == "log_stream_dropped"]
        assert dropped and dropped[-1] == {**dropped[-1], "tenant": "hog", "reason": "slow"}
        # the client's stream ends (it can reconnect with Last-Event-ID)
        stalled.sock.settimeout(60)
        while stalled.sock.recv(1 << 20):
            pass
    finally:
        stalled.close()


def test_draining_server_delivers_running_calls_result_events(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "alpha", "[limits]\ntimeout = 30\nmax_concurrency = 2\n", scripts=NOISY)
    tokens = {"alpha": auth.create_token(tenants, "alpha")}
    srv = start_server(tenants, tmp_path / "oplog.jsonl", tokens)
    stream = RawStream(srv, "alpha")
    events = stream.events()
    responses: list[httpx.Response] = []

    def call() -> None:
        with srv.client("alpha") as c:
            responses.append(c.post("/v1/tenants/alpha/scripts/slow", json={"args": [10_000_000]}))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    started = {next(events)[2]["invocation_id"] for _ in threads}  # both calls are running
    srv.proc.send_signal(signal.SIGTERM)
    rest = list(events)  # until the server ends the stream
    for t in threads:
        t.join(60)
    stream.close()
    assert srv.proc.wait(60) == 0
    results = {d["invocation_id"]: d for _, kind, d in rest if kind == "result"}
    assert set(results) == started  # both result events arrived before the stream ended
    assert all(d["ok"] for d in results.values())
    assert sorted(r.headers["X-Invocation-Id"] for r in responses) == sorted(started)
