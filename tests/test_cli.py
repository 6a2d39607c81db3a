"""The ``scriptvisor`` CLI contract of issue 2 (run, --batch, check) and doctor/token.

Each test runs the real command line in a subprocess (real engine, zygote
and workers) on the scripts of ``examples/outcomes/``, the same commands
``examples/outcomes/README.md`` lists.  Exit status: 0 ok, 1 failed, 2 usage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "outcomes"
RUN_KEYS = {"ok", "result", "error", "logs", "duration_ms"}


def sv(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.engine.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def run_json(*args: str) -> tuple[int, dict]:
    rc, out, err = sv("run", *args, "--json")
    lines = out.splitlines()
    assert len(lines) == 1, (out, err)  # exactly one JSON object
    res = json.loads(lines[0])
    assert set(res) == RUN_KEYS, res  # exactly the contract's keys
    assert isinstance(res["ok"], bool) and isinstance(res["logs"], list)
    assert isinstance(res["duration_ms"], float | int)
    assert "Traceback" not in err
    return rc, res


def test_ok_prints_one_object_and_exits_0() -> None:
    rc, res = run_json(str(OUT / "ok.py"), "world")
    assert rc == 0
    assert res["ok"] is True and res["error"] is None
    assert res["result"] == {"greeting": "hello world"}
    assert res["logs"] == ["greeting world"]


def test_args_are_json_when_they_parse_else_strings(tmp_path: Path) -> None:
    script = tmp_path / "types.py"
    script.write_text("def types(a, b, c, d, callback):\n    callback(None, [a, b, c, d])\n")
    rc, res = run_json(str(script), "12", '{"k": [1]}', "null", "not json")
    assert rc == 0 and res["result"] == [12, {"k": [1]}, None, "not json"]


def test_fn_defaults_to_the_stem_and_can_be_chosen(tmp_path: Path) -> None:
    script = tmp_path / "login.py"
    script.write_text("def login(callback):\n    callback(None, 'stem')\n"
                      "def other(callback):\n    callback(None, 'other')\n")
    assert run_json(str(script))[1]["result"] == "stem"
    assert run_json(str(script), "--fn", "other")[1]["result"] == "other"


def test_config_values_reach_the_script(tmp_path: Path) -> None:
    script = tmp_path / "conf.py"
    script.write_text("def conf(callback):\n    callback(None, [configuration['A'], configuration['B']])\n")
    rc, res = run_json(str(script), "--config", "A=5", "--config", "B=text")
    assert rc == 0 and res["result"] == [5, "text"]


@pytest.mark.parametrize(
    ("args", "code", "name"),
    [
        (["script_error.py", "a@b.c"], "script_error", "WrongUsernameOrPasswordError"),
        (["uncaught.py"], "script_error", "ZeroDivisionError"),
        (["stall.py"], "stall", "Stall"),
        (["double_callback.py"], "double_callback", "DoubleCallback"),
        (["timeout.py", "--timeout", "0.05"], "timeout", "Timeout"),
        (["compile_error.py"], "compile_error", "CompileError"),
        (["ok.py", "x", "--fn", "nope"], "not_found", "NotFound"),
        (["invalid_result.py"], "invalid_result", "InvalidResult"),
    ],
)
def test_each_failed_outcome_exits_1_with_its_code(args: list[str], code: str, name: str) -> None:
    rc, res = run_json(str(OUT / args[0]), *args[1:])
    assert rc == 1, res
    assert res["ok"] is False and res["result"] is None
    assert res["error"]["code"] == code and res["error"]["name"] == name
    assert isinstance(res["error"]["message"], str) and res["error"]["message"]


def test_uncaught_traceback_shows_only_the_tenant_file() -> None:
    _, res = run_json(str(OUT / "uncaught.py"))
    frames = res["error"]["traceback"]
    assert [f["function"] for f in frames] == ["uncaught", "helper"]
    assert {Path(f["file"]).name for f in frames} == {"uncaught.py"}


def test_double_callback_keeps_the_first_value() -> None:
    _, res = run_json(str(OUT / "double_callback.py"))
    assert res["error"]["calls"] == 2
    assert res["error"]["first"] == {"ok": True, "result": "first", "error": None}


def test_compile_error_has_line_and_column() -> None:
    _, res = run_json(str(OUT / "compile_error.py"))
    assert res["error"]["line"] == 2 and isinstance(res["error"]["column"], int)


def test_readable_summary_without_json() -> None:
    rc, out, err = sv("run", str(OUT / "script_error.py"), "a@b.c")
    assert rc == 1
    assert out.startswith("failed: script_error") and "WrongUsernameOrPasswordError" in out


@pytest.mark.parametrize(
    "args",
    [
        ["run", "examples/outcomes/missing.py"],
        ["run", "examples/outcomes/missing.py", "--json"],
        ["run", "examples/outcomes/ok.py", "--no-such-option"],
        ["run", "examples/outcomes/ok.py", "--timeout", "soon"],
        ["run", "examples/outcomes/ok.py", "--config", "novalue"],
        ["run", "examples/outcomes/ok.py", "x", "--batch", "examples/outcomes/counter_calls.jsonl"],
        ["run", "examples/outcomes/counter.py", "--batch", "examples/outcomes/missing.jsonl"],
        ["run", "examples/outcomes/ok.py", "x", "--tenant", "../etc"],
    ],
)
def test_bad_usage_exits_2_without_a_traceback(args: list[str]) -> None:
    rc, out, err = sv(*args)
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.strip()


def test_batch_runs_in_order_on_one_worker_and_resets_after_a_timeout() -> None:
    rc, out, err = sv("run", str(OUT / "counter.py"), "--batch", str(OUT / "counter_calls.jsonl"),
                      "--timeout", "0.5", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 1, err  # one line timed out
    assert [r["ok"] for r in lines] == [True, True, False, True]
    assert lines[0]["result"] == 1 and lines[1]["result"] == 2, "global_ persists across lines"
    assert lines[2]["error"]["code"] == "timeout"
    assert lines[3]["result"] == 1, "global_ is reset after a timeout"


def test_batch_lines_each_get_their_whole_timeout_from_their_own_start(tmp_path: Path) -> None:
    # All lines are queued at once (so short scripts can be pipelined); each
    # line's --timeout still runs from its own start, not from the batch's.
    script = tmp_path / "slow.py"
    script.write_text("import time\n\ndef slow(n, callback):\n    t = time.monotonic()\n"
                      "    while time.monotonic() - t < 0.3:\n        pass\n    callback(None, n)\n")
    calls = tmp_path / "calls.jsonl"
    calls.write_text("".join(f"[{n}]\n" for n in range(4)))
    rc, out, err = sv("run", str(script), "--batch", str(calls), "--timeout", "0.8", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0, (out, err)
    assert [r["result"] for r in lines] == [0, 1, 2, 3]
    assert all(r["duration_ms"] < 800 for r in lines), "duration is the line's own, not the batch's"


def test_batch_bad_lines_get_a_structured_error_and_the_rest_still_run(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text('[false]\nnot json\n{"a": 1}\n\n[false]\n')
    rc, out, err = sv("run", str(OUT / "counter.py"), "--batch", str(calls), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 1, err
    assert len(lines) == 4  # the blank line is skipped
    assert lines[0]["ok"] is True and lines[0]["result"] == 1
    assert lines[1]["error"]["code"] == "bad_request" and lines[1]["error"]["line"] == 2
    assert lines[2]["error"]["code"] == "bad_request" and lines[2]["error"]["line"] == 3
    assert lines[3]["ok"] is True  # its count is the business of the global_ test above
    assert all(set(r) == RUN_KEYS for r in lines)


def test_check_prints_file_line_col_and_exits_1_on_problems() -> None:
    bad = str(OUT / "compile_error.py")
    rc, out, err = sv("check", str(OUT / "ok.py"), bad)
    assert rc == 1
    lines = out.splitlines()
    assert lines and all(re.match(re.escape(bad) + r":\d+:\d+: \S", line) for line in lines), out
    rc, out, err = sv("check", str(OUT / "ok.py"), str(OUT / "stall.py"))
    assert rc == 0 and out == ""


def test_check_reports_a_missing_file_as_a_problem() -> None:
    rc, out, err = sv("check", "examples/outcomes/missing.py")
    assert rc == 1 and out.startswith("examples/outcomes/missing.py:0:0: ")
    assert "Traceback" not in err


def test_doctor_lists_every_layer_as_json() -> None:
    rc, out, err = sv("doctor", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["layers"] and all({"name", "active", "detail"} <= set(r) for r in report["layers"])
    assert report["all_active"] == all(r["active"] for r in report["layers"])
    rc, out, _ = sv("doctor")
    assert rc == 0 and all(r["name"] in out for r in report["layers"])


def test_token_create_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    (tmp_path / "acme" / "scripts").mkdir(parents=True)
    (tmp_path / "acme" / "tenant.toml").write_text("import_users = false\n")
    rc, out, err = sv("token", "create", "acme", "--tenants", str(tmp_path))
    assert rc == 0, err
    token = out.strip()
    assert token and "\n" not in token
    stored = (tmp_path / "acme" / "tenant.toml").read_text()
    assert token not in stored and "hash = " in stored
    rc, out, err = sv("token", "create", "nobody", "--tenants", str(tmp_path))
    assert rc == 2 and "Traceback" not in err


def test_check_reports_a_compile_bomb_and_still_checks_the_other_files(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.py"
    bomb.write_text("x = " + "-" * 100000 + "1\n")
    rc, out, err = sv("check", str(bomb), str(OUT / "ok.py"), str(OUT / "compile_error.py"))
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{bomb}:")            # argument order
    assert any(line.startswith(str(OUT / "compile_error.py")) for line in lines)
    assert not any("ok.py" in line for line in lines)  # the good file has no problem
    assert "Traceback" not in err
