"""Smaller mistakes of issue 12, each answered with what is wrong and what to do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sv(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_check_reports_a_file_without_its_function(tmp_path: Path) -> None:
    script = tmp_path / "foo.py"
    script.write_text("def bar(callback):\n    callback(None, 1)\n")
    rc, out, _ = sv("check", str(script))
    assert rc == 1 and out.startswith(f"{script}:1:1: no function foo(...)") and "--fn" in out
    rc, out, _ = sv("check", str(script), "--fn", "bar")
    assert rc == 0 and out == ""


def test_dash_v_prints_the_version() -> None:
    rc, out, _ = sv("-V")
    assert rc == 0 and re.match(r"scriptvisor, version \d", out)


def test_top_level_help_shows_whole_descriptions() -> None:
    rc, out, _ = sv("--help")
    commands = out.split("Commands:", 1)[1]
    flat = " ".join(commands.split())
    assert rc == 0 and "..." not in commands.replace("get_user, ...)", "")
    assert "connection Run one custom database OPERATION (login, signup, get_user, ...) with ARGS." in flat or \
        re.search(r"connection Run one custom database OPERATION \(login, signup, get_user,[^.]*\) with ARGS", flat)


def test_connection_help_lists_each_operations_arguments() -> None:
    rc, out, _ = sv("connection", "--help")
    assert rc == 0
    for line in ("login EMAIL PASSWORD", "change_email EMAIL NEW_EMAIL VERIFIED", "delete_user USER_ID",
                 "signup USER"):
        assert re.search(r"\b" + r"\s+".join(map(re.escape, line.split())) + r"\b", out), line


def test_serve_pointed_at_one_tenant_folder_says_which_folder_to_give(tmp_path: Path) -> None:
    rc, _, _ = sv("init", "tenants/acme", "--template", "sqlite", cwd=tmp_path)
    assert rc == 0
    rc, _, err = sv("serve", "--tenants", "tenants/acme", "--port", "0", cwd=tmp_path)
    assert rc == 2 and "one tenant's folder" in err and f"--tenants {tmp_path / 'tenants'}" in err


def test_connection_rounds_duration_and_delete_user_is_a_boolean(tmp_path: Path) -> None:
    assert sv("init", "acme", "--template", "sqlite", cwd=tmp_path)[0] == 0
    rc, out, err = sv("connection", "login", "--tenant-dir", "acme", "--json", "alice@example.com", "wonderland",
                      cwd=tmp_path)
    res = json.loads(out)
    assert rc == 0 and res["duration_ms"] == round(res["duration_ms"], 3)  # as `run --json` rounds
    user_id = res["result"]["user_id"]
    rc, out, _ = sv("connection", "delete_user", "--tenant-dir", "acme", "--json", user_id, cwd=tmp_path)
    assert rc == 0 and json.loads(out)["result"] is True  # a boolean, as in migration mode, not null
