"""``scriptvisor check``: compile scripts under the sandbox policy, out of process.

The compiler runs in a short-lived child interpreter with an address-space and
CPU cap, never in the caller: a compile bomb (``"-" * 100000 + "1"``, deeply
nested brackets) costs that child, and comes back as a problem report.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any, Iterable

CHILD_MEMORY = 1024 * 1024 * 1024  # bytes of address space for the compiling child
CHILD_CPU = 30                     # seconds


def _limit_child() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU, CHILD_CPU + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def check_sources(sources: list[tuple[str, str]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(path, problems)`` per source, in order; each problem has ``line``, ``column``, ``message``.

    One child per file: a file that crashes or exhausts the compiler is
    reported as its own problem and does not hide the others' results.
    """
    return [(path, _check_one(path, source)) for path, source in sources]


def _check_one(path: str, source: str) -> list[dict[str, Any]]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run(
            [sys.executable, "-s", "-m", "scriptvisor.engine.checker"],
            input=json.dumps([[path, source]]).encode(),
            capture_output=True, env=env, preexec_fn=_limit_child, timeout=CHILD_CPU * 2,
        )
    except subprocess.TimeoutExpired:
        return [{"line": 0, "column": 0, "message": f"compiling took longer than {CHILD_CPU * 2} s"}]
    try:
        [(_path, problems)] = json.loads(proc.stdout.decode("utf-8"))
        return problems
    except (ValueError, UnicodeDecodeError):
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        return [{"line": 0, "column": 0, "message": f"the compiler {how} (source too large or too complex)"}]


def _child_main() -> None:
    from scriptvisor.sandbox.policy import CompileFailure, compile_script

    out = []
    for path, source in json.loads(sys.stdin.buffer.read().decode("utf-8")):
        result = compile_script(source, os.path.basename(path))
        problems = []
        if isinstance(result, CompileFailure):
            problems = [{"line": ln, "column": col, "message": msg} for ln, col, msg in result.problems]
        out.append([path, problems])
        sys.stdout.flush()
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    _child_main()
