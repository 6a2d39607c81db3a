"""Harness: a real operator server in a subprocess on a loopback port, and its tenants.

The server is started exactly as an operator would (``engine.server.run.serve``
with port 0, the kernel picks a free port); the port is read from its first
stdout line.  Tests talk to it with httpx only.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from scriptvisor.engine.server import auth

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((importlib.resources.files("scriptvisor.engine.server") / "openapi.json").read_text())
ADMIN_TOKEN = "admin-test-token"

SCRIPTS = {
    "noop.py": "def noop(callback):\n    callback(None, None)\n",
    "echo.py": "def echo(value, callback):\n    callback(None, value)\n",
    "conf.py": "def conf(key, callback):\n    callback(None, configuration.get(key))\n",
    "fails.py": "def fails(callback):\n    callback(Exception('boom'))\n",
    "logs.py": "def logs(word, callback):\n    print('hello', word)\n    callback(None, word)\n",
    # burns CPU until the tenant's wall clock kills it
    "spin.py": "def spin(callback):\n    n = 0\n    while True:\n        n = n + 1\n",
    # a bounded amount of work that takes long enough to be in flight during a signal
    "slow.py": (
        "def slow(rounds, callback):\n"
        "    n = 0\n"
        "    for i in range(rounds):\n"
        "        n = n + i\n"
        "    callback(None, n)\n"
    ),
}


def make_tenant(root: Path, name: str, toml: str = "", scripts: dict[str, str] | None = None) -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "tenant.toml").write_text(toml)
    for fname, text in (SCRIPTS if scripts is None else scripts).items():
        (folder / "scripts" / fname).write_text(text)
    return folder


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    tenants_dir: Path
    log_file: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, tenant: str | None = None, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {}
        tok = token if token is not None else (self.tokens.get(tenant) if tenant else None)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def oplog(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def start_server(tenants_dir: Path, log_file: Path, tokens: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, **serve_kwargs: Any) -> Server:
    """``env``: extra environment variables; ``serve_kwargs``: extra keyword
    arguments of ``serve()`` (plain literals)."""
    env = dict(os.environ, SCRIPTVISOR_ADMIN_TOKEN=ADMIN_TOKEN, **(env or {}))
    extra = "".join(f", {k}={v!r}" for k, v in serve_kwargs.items())
    code = (
        "import sys; from scriptvisor.engine.server.run import serve; "
        f"sys.exit(serve(sys.argv[1], '127.0.0.1', 0, log_file=sys.argv[2]{extra}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tenants_dir), str(log_file)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()  # blocks until the server has bound its port (or died)
    if "listening on " not in line:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"server did not start: {line}{out}\n{err}")
    url = line.split("listening on ", 1)[1].strip()
    return Server(proc, url, tenants_dir, log_file, dict(tokens or {}))


class SSEReader:
    """Reads one tenant's event stream in a thread; events arrive on a queue.

    A plain HTTP/1.0 socket client (close-delimited body, no chunking), so that
    ``close()`` can end a blocked read at once with ``shutdown()``.
    """

    def __init__(self, server: Server, tenant: str, token: str | None = None) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self.status: int | None = None
        tok = token if token is not None else server.tokens.get(tenant, "")
        host, port = server.url.rsplit("//", 1)[1].split(":")
        self._sock = socket.create_connection((host, int(port)), timeout=60)
        self._sock.sendall(
            f"GET /v1/tenants/{tenant}/logs HTTP/1.0\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tok}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self._file = self._sock.makefile("rb")
        self.status = int(self._file.readline().split()[1])
        while self._file.readline().strip():  # response headers
            pass
        if self.status == 200:
            first = self._file.readline()
            assert first.startswith(b": subscribed"), first  # subscribed before any event is sent
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event = None
        try:
            for raw in self._file:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.put((event or "message", json.loads(line[6:])))
        except (OSError, ValueError):
            pass
        finally:
            self.events.put(None)  # stream ended

    def next(self, kind: str | None = None) -> tuple[str, dict[str, Any]]:
        while True:
            item = self.events.get(timeout=60)
            assert item is not None, "event stream ended"
            if kind is None or item[0] == kind:
                return item

    def ended(self) -> bool:
        """Wait for the end of the stream (skipping events still queued before it)."""
        while self.events.get(timeout=60) is not None:
            pass
        return True

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(30)
        self._file.close()
        self._sock.close()


# -- OpenAPI conformance ------------------------------------------------------

_REGISTRY = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(OPENAPI))


def check_openapi(method: str, path_template: str, response: httpx.Response) -> None:
    """The response's status, headers and JSON body are as openapi.json documents them."""
    op = OPENAPI["paths"][path_template][method.lower()]
    spec = op["responses"].get(str(response.status_code))
    assert spec is not None, f"{response.status_code} not documented for {method} {path_template}"
    for header in spec.get("headers", {}):
        if header != "WWW-Authenticate":
            assert header in response.headers, f"missing documented header {header}"
    content = spec.get("content", {})
    if "application/json" in content:
        schema = _absolute(content["application/json"]["schema"])
        jsonschema.Draft202012Validator(schema, registry=_REGISTRY).validate(response.json())


def _absolute(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: ("urn:openapi" + v if k == "$ref" and v.startswith("#") else _absolute(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_absolute(v) for v in schema]
    return schema
