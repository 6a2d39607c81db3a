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


def check_sources(sources: list[tuple[str, str]]) -> Iterable[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(path, problems)``; each problem has ``line``, ``column``, ``message``."""
    if not sources:
        return []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": root, "LANG": "C.UTF-8"}
    proc = subprocess.run(
        [sys.executable, "-s", "-m", "engine.checker"],
        input=json.dumps([[p, s] for p, s in sources]).encode(),
        capture_output=True, env=env, preexec_fn=_limit_child, timeout=CHILD_CPU * 2,
    )
    try:
        reports = json.loads(proc.stdout.decode("utf-8"))
        return [(path, problems) for path, problems in reports]
    except ValueError:
        why = f"the compiler process failed (status {proc.returncode})"
        return [(path, [{"line": 0, "column": 0, "message": why}]) for path, _ in sources]


def _child_main() -> None:
    from sandbox.policy import CompileFailure, compile_script

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
