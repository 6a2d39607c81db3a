"""Slow and idle clients against a node's HTTP server (issue 10, "slow clients").

A real ``scriptvisor serve`` in a subprocess, with small bounds so the attacks
end quickly: header deadline 1 s, body deadline 1 s, 4 connections.  Each test
names the layer that stops the attack:

* the header deadline and the connection cap: the HTTP edge protocol
  (``engine/server/edge.py``, ``BoundedH11Protocol``);
* the body deadline: the body reader of the routes (``app._read_json_body``).

Every wait below is for an event (the server answering or closing the socket);
the socket timeout only bounds how long the test waits for it to happen.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from scriptvisor.engine.server import auth

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 4
#: How long the test waits for the server to act (far above the bounds).
WAIT = 20.0
#: Pace of a trickling client: one byte per this many seconds, well under the deadlines.
TRICKLE = 0.2


class Node:
    def __init__(self, proc: subprocess.Popen[str], url: str, token: str) -> None:
        self.proc, self.url, self.token = proc, url, token
        self.host, port = url.rsplit("//", 1)[1].split(":")
        self.port = int(port)

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=WAIT)
        return sock


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("edge-tenants")
    (root / "acme" / "scripts").mkdir(parents=True)
    (root / "acme" / "tenant.toml").write_text("")
    (root / "acme" / "scripts" / "echo.py").write_text("def echo(v, callback):\n    callback(None, v)\n")
    token = auth.create_token(root, "acme")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(root), "--port", "0",
         "--log-file", str(root.parent / "edge-oplog.jsonl"),
         "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
         "--max-connections", str(MAX_CONNECTIONS)],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.communicate()}")
    try:
        yield Node(proc, line.split("listening on ", 1)[1].strip(), token)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _trickle_until_closed(sock: socket.socket, data: bytes) -> tuple[bytes, int]:
    """Send ``data`` one byte per TRICKLE seconds until the server closes; (reply, bytes sent)."""
    sent = 0
    while sent < len(data):
        readable, _, _ = select.select([sock], [], [], TRICKLE)  # the server acting ends the pacing
        if readable:
            return _read_all(sock), sent
        try:
            sock.send(data[sent:sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            return b"", sent
        sent += 1
    return _read_all(sock), sent


def _status_and_body(raw: bytes) -> tuple[int, dict, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), json.loads(body), head.decode("latin-1").lower()


def _healthy(node: Node) -> None:
    """The node still serves a normal call afterwards."""
    r = httpx.post(f"{node.url}/v1/tenants/acme/scripts/echo", json={"args": ["still here"]},
                   headers={"Authorization": f"Bearer {node.token}"}, timeout=WAIT)
    assert r.status_code == 200 and r.json()["result"] == "still here", r.text


def test_cant_hold_a_connection_with_half_sent_headers(node: Node) -> None:
    """Layer: HTTP edge, header deadline (edge.BoundedH11Protocol)."""
    with node.connect() as sock:
        sock.sendall(b"POST /v1/tenants/acme/scripts/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # nothing more comes: the server closes the connection without an answer
        assert _read_all(sock) == b""
    _healthy(node)


def test_cant_extend_the_header_deadline_by_trickling_bytes(node: Node) -> None:
    """Layer: HTTP edge, header deadline: a byte arriving does not restart it."""
    endless = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    with node.connect() as sock:
        reply, sent = _trickle_until_closed(sock, endless)
    assert reply == b""
    assert sent < len(endless)  # cut while still trickling, not after the client gave up
    _healthy(node)


def test_cant_hold_a_connection_with_a_half_sent_body(node: Node) -> None:
    """Layer: body deadline of the routes' body reader (app._read_json_body): 408, then closed."""
    body = json.dumps({"args": ["x" * 100]}).encode()
    head = (f"POST /v1/tenants/acme/scripts/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with node.connect() as sock:
        sock.sendall(head + body[:10])
        status, data, headers = _status_and_body(_read_all(sock))
    assert status == 408 and data["error"]["code"] == "request_timeout", data
    assert "connection: close" in headers
    _healthy(node)


def test_cant_extend_the_body_deadline_by_trickling_bytes(node: Node) -> None:
    """Layer: body deadline of the body reader; the rest of the trickle is cut by the edge."""
    body = json.dumps({"args": ["y" * 10_000]}).encode()
    head = (f"POST /v1/tenants/acme/scripts/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with node.connect() as sock:
        sock.sendall(head)
        reply, sent = _trickle_until_closed(sock, body)
    status, data, _ = _status_and_body(reply)
    assert status == 408 and data["error"]["code"] == "request_timeout", data
    assert sent < len(body)
    _healthy(node)


def test_cant_open_idle_connections_beyond_the_cap(node: Node) -> None:
    """Layer: HTTP edge, connection cap (503 too_many_connections), then the header
    deadline frees the idle ones and the node serves again."""
    idle = [node.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        with node.connect() as extra:
            status, data, headers = _status_and_body(_read_all(extra))
        assert status == 503 and data["error"]["code"] == "too_many_connections", data
        assert "retry-after: 1" in headers and "connection: close" in headers
        for sock in idle:  # the idle connections are closed by the server, not by the test
            assert _read_all(sock) == b""
    finally:
        for sock in idle:
            sock.close()
    _healthy(node)


def test_edge_limits_refuse_nonsense() -> None:
    from scriptvisor.engine.server.edge import EdgeLimits

    for bad in ({"header_timeout": 0}, {"body_timeout": -1}, {"keep_alive": float("nan")}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            EdgeLimits(**bad)
