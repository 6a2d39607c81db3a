"""Compile bombs end as a structured compile_error, never as a crash.

A C stack overflow in the parser would kill the process that compiles, so
these run the Runner in a child interpreter (never a fork of pytest): if the
child dies by a signal, the test fails with that signal instead of taking the
test session down.  In production the compile happens inside the tenant's
worker for the same reason (security.md, layer 7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from scriptvisor.sandbox.context import WorkerContext
from scriptvisor.sandbox.runner import Runner
source = eval(sys.argv[2])
out = Runner(WorkerContext(tenant="t")).invoke(path="/t/script.py", source=source, source_hash="",
                                               function="", args=[], configuration={}, timeout=5)
print(json.dumps(out))
"""


def run_child(source_expr: str) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, ROOT, source_expr],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, f"child died: rc={proc.returncode} stderr={proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("source_expr", [
    '"-" * 100000 + "1"',                       # unary minus chain: deep AST
    '"x = " + "(" * 100000 + ")" * 100000',     # nested parentheses
    '"x = " + "[" * 5000 + "]" * 5000',          # nested lists
    '"x = 1" + " + 1" * 200000',                 # very long flat expression
    '"x = \'" + "a" * 2000000 + "\'"',            # source over the size limit
])
def test_cant_crash_compiler_with_bomb(source_expr):
    out = run_child(source_expr)
    assert out["ok"] is False
    assert out["error"]["code"] == "compile_error", out["error"]
    assert out["error"]["name"] == "CompileError"


@pytest.mark.slow
def test_cant_crash_compiler_with_nested_calls():
    """199 nested calls (the parser's limit is 200): deep in the policy visitor.

    Either the visitor gives up (compile_error) or the code compiles and runs
    into the undefined name; both are structured, neither kills the process.
    """
    out = run_child('"def script(callback):\\n    x = " + "f(" * 199 + ")" * 199')
    assert out["ok"] is False
    assert (out["error"]["code"], out["error"]["name"]) in {
        ("compile_error", "CompileError"), ("script_error", "NameError")}, out["error"]
