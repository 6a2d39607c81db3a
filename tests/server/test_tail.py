"""`scriptvisor tail TENANT`: follows the live stream, resumes with Last-Event-ID."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scriptvisor.engine.tail import follow
from server_harness import ROOT, Server


def test_tail_prints_a_tenants_invocations_as_they_happen(server: Server) -> None:
    env = dict(os.environ, SCRIPTVISOR_TOKEN=server.tokens["alpha"], SCRIPTVISOR_URL=server.url)
    proc = subprocess.Popen([sys.executable, "-m", "scriptvisor.engine.cli", "tail", "alpha", "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "following alpha" in proc.stderr.readline()  # subscribed: events from now on reach it
        with server.client("alpha") as c:
            inv = c.post("/v1/tenants/alpha/scripts/logs", json={"args": ["tail"]}).headers["X-Invocation-Id"]
        start = json.loads(proc.stdout.readline())
        result = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(30)
    assert start["event"] == "start" and start["data"]["invocation_id"] == inv and start["id"]
    assert result["event"] == "result" and result["data"]["logs"] == ["hello tail"]


def test_tail_with_a_bad_token_says_what_to_do(server: Server) -> None:
    out = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", "tail", "alpha", "--url", server.url,
                          "--token", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "401" in out.stderr and "token create" in out.stderr


class _Stop(Exception):
    pass


def test_tail_reconnects_with_last_event_id() -> None:
    """A fake server ends the stream after one event; tail reconnects and asks for what follows."""
    seen_headers: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen_headers.append(self.headers.get("Last-Event-ID"))
            n = len(seen_headers)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            body = f": subscribed\n\n: heartbeat\n\nid: e-{n}\nevent: start\ndata: {{\"invocation_id\": \"i{n}\", \"script\": \"s\"}}\n\n"
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    out, err = io.StringIO(), io.StringIO()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise _Stop

    try:
        with pytest.raises(_Stop):
            follow(f"http://127.0.0.1:{httpd.server_address[1]}", "t", "tok", out=out, err=err, as_json=True,
                   sleep=sleep)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen_headers == [None, "e-1"]  # the second connection resumes after the first's last id
    assert [json.loads(x)["data"]["invocation_id"] for x in out.getvalue().splitlines()] == ["i1", "i2"]
    assert "reconnecting" in err.getvalue()


def test_cant_send_terminal_escapes_to_the_operator_through_tail() -> None:
    """Layer: tail's formatter. A script's log lines and error message reach the
    operator's terminal with control characters escaped, never raw (no title or
    clipboard OSC, no erased lines, no forged ``result`` lines)."""
    from scriptvisor.engine.tail import format_event

    evil = "before\x1b]0;owned\x07\x1b[2K\rFAKE result login ok\x1b[31m\x9b2J\x00"
    text = format_event("result", {"script": "esc", "invocation_id": "ab" * 8, "ok": False,
                                   "error": {"code": "script_error", "message": evil}, "logs": [evil],
                                   "duration_ms": 1.0})
    assert not any(ord(ch) < 0x20 and ch != "\n" or 0x7f <= ord(ch) <= 0x9f for ch in text), repr(text)
    assert text.count("\n") == 1  # the result line and one log line: nothing forged
    assert "before\\x1b]0;owned\\x07\\x1b[2K\\x0dFAKE result login ok\\x1b[31m\\x9b2J\\x00" in text.splitlines()[1]
