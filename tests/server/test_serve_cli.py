"""`scriptvisor serve` as an operator runs it: options from SCRIPTVISOR_* variables,
--log-level, and one JSON line per event for everything the process logs."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import httpx

from scriptvisor.engine.cli import serve as serve_command
from scriptvisor.engine.server import auth
from scriptvisor.engine.server.oplog import CURRENT_INVOCATION, OperatorLog, install_logging
from server_harness import ROOT, make_tenant


def test_every_serve_option_has_a_scriptvisor_env_var() -> None:
    options = [p for p in serve_command.params if isinstance(p, click.Option) and not p.hidden
               and p.name != "help"]
    assert len(options) >= 9
    missing = [p.name for p in options if not (isinstance(p.envvar, str) and p.envvar.startswith("SCRIPTVISOR_"))]
    assert missing == []
    # and --help says so
    help_text = serve_command.get_help(click.Context(serve_command))
    assert all(p.envvar in help_text.replace("\n", " ").replace("  ", " ") or p.envvar in help_text
               for p in options)


def _serve(tmp_path: Path, level: str) -> tuple[list[dict], str]:
    tenants = tmp_path / "tenants"
    make_tenant(tenants, "acme", "")
    token = auth.create_token(tenants, "acme")
    log = tmp_path / f"server-{level}.jsonl"
    env = dict(os.environ, SCRIPTVISOR_TENANTS=str(tenants), SCRIPTVISOR_PORT="0",
               SCRIPTVISOR_HOST="127.0.0.1", SCRIPTVISOR_LOG_FILE=str(log), SCRIPTVISOR_LOG_LEVEL=level)
    proc = subprocess.Popen([sys.executable, "-m", "scriptvisor.engine.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on " in line, line + proc.stderr.read()
        url = line.split("listening on ", 1)[1].strip()
        r = httpx.post(url + "/v1/tenants/acme/scripts/echo", json={"args": [1]},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200
        inv = r.headers["X-Invocation-Id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == ""  # nothing printed to stderr outside the JSON log file
    text = log.read_text()
    return [json.loads(x) for x in text.splitlines()], inv  # every line is JSON, or this raises


def test_serve_from_env_writes_only_json_lines_uvicorns_included(tmp_path: Path) -> None:
    lines, inv = _serve(tmp_path, "info")
    events = [x["event"] for x in lines]
    assert events[0] == "tenant_loaded" and "listening" in events and events[-1] == "stopped"
    uvicorn_lines = [x for x in lines if x["event"] == "log" and x["logger"].startswith("uvicorn")]
    assert uvicorn_lines, "uvicorn's own lines come through as JSON"
    assert all(set(x) >= {"ts", "level", "event"} for x in lines)
    [call] = [x for x in lines if x["event"] == "invocation"]
    assert call["invocation_id"] == inv and call["level"] == "info"


def test_log_level_warning_leaves_out_info_lines(tmp_path: Path) -> None:
    lines, _ = _serve(tmp_path, "warning")
    assert [x for x in lines if x["level"] in ("debug", "info")] == []


def test_log_records_in_an_invocation_carry_its_id() -> None:
    out = io.StringIO()
    undo = install_logging(OperatorLog(stream=out, level="debug"))
    try:
        token = CURRENT_INVOCATION.set("abc123")
        try:
            logging.getLogger("scriptvisor.engine.test").warning("inside %s", "a call")
        finally:
            CURRENT_INVOCATION.reset(token)
        logging.getLogger("uvicorn.error").info("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("failed")
    finally:
        undo()
    inside, outside, failed = (json.loads(x) for x in out.getvalue().splitlines())
    assert inside == {**inside, "event": "log", "level": "warning", "message": "inside a call",
                      "invocation_id": "abc123"}
    assert "invocation_id" not in outside and outside["logger"] == "uvicorn.error"
    assert failed["level"] == "error" and "ValueError: boom" in failed["exc"]  # the traceback in one line
