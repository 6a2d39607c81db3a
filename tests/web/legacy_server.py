"""Start the reference legacy API (``engine.legacy_api``) on loopback for a test session.

A subprocess (the test process never serves it from a thread: the engine's
zygote must not be forked from a threaded process); it binds port 0 and
prints the bound address on its first line, which we read (no polling).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from dataclasses import dataclass


@dataclass
class LegacyServer:
    proc: subprocess.Popen
    base_url: str       # http://127.0.0.1:PORT/api/
    port: int
    api_key: str

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """One request to the API from the test (behind the scripts' backs)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def reset(self) -> None:
        assert self.call("POST", "_reset")[0] == 200

    def calls(self) -> dict[str, int]:
        return self.call("GET", "_calls")[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_legacy_server(host: str = "127.0.0.1") -> LegacyServer:
    key = secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from scriptvisor.engine.legacy_api import serve; "
         "serve(sys.argv[1], host=sys.argv[2], port=0, rounds=4, test_routes=True)", key, host],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()  # "legacy API on http://127.0.0.1:PORT/api/"
    if not line.startswith("legacy API on "):
        proc.kill()
        raise RuntimeError(f"legacy API did not start: {line!r} {proc.stderr.read()[-2000:]}")
    base = line.removeprefix("legacy API on ")
    port = int(base.rsplit(":", 1)[1].split("/")[0])
    return LegacyServer(proc, base, port, key)
