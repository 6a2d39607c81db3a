"""Run plain Python inside a worker confined by ``sandbox.confine`` (no engine).

Each call starts a fresh interpreter (never a fork of the threaded pytest
process) that plays the zygote: ``prepare(policy)``, ``fork()``, and in the
child ``apply(policy)`` followed by the attack code, which sets ``result``.
The outcome comes back as JSON on stdout:

    {"exit": int|None, "signal": int|None, "result": ..., "error": {"type", "errno", "message"}|None,
     "scratch_dir": str, "layers": {...}}

This is the "assume the language layer is broken" entry point for OS-layer
tests; it is test-only and unreachable from scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = r'''
import json, os, signal, sys, traceback
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])
from scriptvisor.sandbox import confine
if spec.get("drop_to"):
    # Play an unprivileged supervisor: everything the driver needs is imported
    # before the drop (the interpreter may live where that user cannot read).
    import errno, socket, resource, ctypes, threading, pyseccomp
    confine._read_only_paths()  # imports engine/* while the stdlib is still readable
    uid = spec["drop_to"]
    os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
from scriptvisor.sandbox.wire import WorkerPolicy
policy = WorkerPolicy.from_wire(spec["policy"])
layers = {k: list(v) for k, v in confine.available().items()}
confine.prepare(policy)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    out = {"result": None, "error": None}
    try:
        confine.apply(policy)
        ns = {}
        exec(spec["code"], ns)
        out["result"] = ns.get("result")
    except BaseException as exc:
        out["error"] = {"type": type(exc).__name__, "errno": getattr(exc, "errno", None),
                        "message": str(exc)[:500]}
    data = json.dumps(out, default=repr).encode()
    while data:
        data = data[os.write(w, data):]
    os._exit(0)
os.close(w)
chunks = []
while True:
    b = os.read(r, 65536)
    if not b:
        break
    chunks.append(b)
_, status = os.waitpid(pid, 0)
rep = json.loads(b"".join(chunks) or b'{"result": null, "error": null}')
rep["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
rep["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
rep["scratch_dir"] = policy.scratch_dir
rep["layers"] = layers
if spec.get("cleanup", True):
    confine.cleanup_scratch(policy)
print(json.dumps(rep))
'''


def policy(tmp: Path, **over: Any) -> dict[str, Any]:
    """A worker policy for tenant ``t1`` with scratch/data under ``tmp``."""
    limits = {"memory_mb": 512, "cpu_seconds": 60, "open_files": 64,
              "processes": 16, "file_size_mb": 16, "scratch_mb": 32}
    limits.update(over.pop("limits", {}))
    tenant = over.get("tenant", "t1")
    p = {"tenant": tenant, "worker_id": 1, "uid": None, "gid": None,
         "scratch_dir": str(tmp / "scratch" / tenant / "1"), "data_dir": None,
         "allowed_ports": [], "limits": limits, "confine": True, "debug_exec": True}
    p.update(over)
    return p


def run(code: str, pol: dict[str, Any], *, drop_to: int | None = None,
        env: dict[str, str] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    spec = {"root": str(ROOT), "policy": pol, "code": code, "drop_to": drop_to}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ), cwd="/")
    if proc.returncode != 0:
        raise AssertionError(f"driver failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_RAW_APPLY = r'''
import json, sys
sys.path.insert(0, sys.argv[2])
from scriptvisor.sandbox import confine
try:
    from scriptvisor.sandbox.wire import WorkerPolicy
    confine.apply(WorkerPolicy.from_wire(json.loads(sys.argv[1])))
    print(json.dumps(None))
except confine.ConfinementFailed as exc:
    print(json.dumps({"layer": exc.layer, "reason": exc.reason}))
'''


def run_raw_apply(pol: dict[str, Any]) -> Any:
    """``apply(pol)`` in a fresh interpreter without ``prepare``; the ConfinementFailed it raised."""
    proc = subprocess.run([sys.executable, "-c", _RAW_APPLY, json.dumps(pol), str(ROOT)],
                          capture_output=True, text=True, timeout=30, cwd="/")
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
