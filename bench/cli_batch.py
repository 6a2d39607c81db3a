"""Whole-process cost of a batch of no-op calls: ``scriptvisor run --batch`` vs a pebble pool.

What a user of the command line pays, start-up included: a fresh process
runs ``calls`` no-op calls one after another and prints one JSON line per
result.  scriptvisor: ``scriptvisor run NOOP.py --batch FILE --json`` (the
engine, its zygote, a confined worker and its spare).  pebble: a fresh
``python`` with a ``pebble.ProcessPool(max_workers=1)`` doing the same calls
in order.  The two alternate for ``rounds`` rounds; each figure is the
per-call wall time (``cli_batch_ms_per_call``) and the CPU of the process
and all its children (``cli_batch_cpu_ms_per_call``, from RUSAGE_CHILDREN).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["measure"]

NOOP = "def noop(callback):\n    callback(None, 1)\n"

_PEBBLE = r'''
import json, sys
from pebble import ProcessPool
from scriptvisor.bench import tasks
n = int(sys.argv[1])
with ProcessPool(max_workers=1) as pool:
    out = sys.stdout
    for _ in range(n):
        value = pool.schedule(tasks.noop).result()
        out.write(json.dumps({"ok": True, "result": value, "error": None, "logs": []}) + "\n")
'''


def _run(argv: list[str], calls: int) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or proc.stdout.count(b"\n") != calls:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall / calls * 1000.0, cpu / calls * 1000.0


def measure(names: list[str], out: Any, *, calls: int, rounds: int, say: Any = print) -> None:
    """Add the per-call figures of scriptvisor and pebble_fork (when in ``names``) to ``out``."""
    tmp = tempfile.mkdtemp(prefix="sv-cli-bench-")
    script = os.path.join(tmp, "noop.py")
    batch = os.path.join(tmp, "calls.jsonl")
    with open(script, "w") as f:
        f.write(NOOP)
    with open(batch, "w") as f:
        f.write("[]\n" * calls)
    commands: dict[str, list[str]] = {}
    if "scriptvisor" in names:
        commands["scriptvisor"] = [sys.executable, "-m", "scriptvisor.engine.cli", "run", script,
                                   "--batch", batch, "--json"]
    if "pebble_fork" in names:
        try:
            import pebble  # noqa: F401
        except ImportError:
            pass
        else:
            commands["pebble_fork"] = [sys.executable, "-c", _PEBBLE, str(calls)]
    for r in range(rounds):
        for name, argv in commands.items():
            try:
                wall, cpu = _run(argv, calls)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                out.error(name, "cli", str(exc))
                continue
            out.add(name, "cli_batch_ms_per_call", wall)
            out.add(name, "cli_batch_cpu_ms_per_call", cpu)
        say(f"  cli batch round {r + 1}/{rounds} done")
