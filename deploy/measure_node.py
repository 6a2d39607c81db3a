#!/usr/bin/env python3
"""Measure a node's memory: server process, zygote, idle and used workers (USS/RSS).

Why: docs/scaling.md sizes a node by "memory per worker"; this script is how
that number is obtained, so an operator can re-measure on their own machine
and scripts.  It starts a real node (``python -m scriptvisor.engine.cli serve``, port 0,
the bundled example tenant unless ``--tenants`` is given), makes ``--calls``
SQLite login calls through HTTP, then reads every process of the node's tree
with psutil.  USS (unique set size) is what a process costs on its own: pages
shared with the zygote (copy-on-write after fork) are not counted, which is
why USS, not RSS, is the number to multiply by the worker count.

    .venv/bin/python deploy/measure_node.py [--tenants DIR --tenant NAME --token T] [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _role(proc: psutil.Process, server: int, zygote: int | None) -> str:
    if proc.pid == server:
        return "server (supervisor + HTTP)"
    if proc.pid == zygote:
        return "zygote"
    return "worker"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", help="tenants folder (default: the bundled example)")
    ap.add_argument("--tenant", default="example")
    ap.add_argument("--token", default="example-token-change-me")
    ap.add_argument("--script", default="login")
    ap.add_argument("--args", default='["alice@example.com", "wonderland"]', help="JSON array")
    ap.add_argument("--calls", type=int, default=20)
    opts = ap.parse_args()

    cmd = [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--port", "0"]
    if opts.tenants:
        cmd += ["--tenants", opts.tenants]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        if "listening on " not in line:
            print(f"node did not start: {line}", file=sys.stderr)
            return 1
        url = line.split("listening on ", 1)[1].strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {opts.token}"}, timeout=60) as c:
            for _ in range(opts.calls):
                r = c.post(f"/v1/tenants/{opts.tenant}/scripts/{opts.script}", json={"args": json.loads(opts.args)})
                if r.status_code != 200 or not r.json().get("ok"):
                    print(f"call failed: {r.status_code} {r.text}", file=sys.stderr)
                    return 1
                used = r.json()["worker"]["pid"]
        root = psutil.Process(proc.pid)
        children = root.children(recursive=True)
        zygote = next((p.pid for p in root.children() if p.pid != used), None)
        print(f"{'process':34} {'pid':>7} {'ppid':>7} {'USS MiB':>8} {'RSS MiB':>8}")
        for p in [root, *children]:
            mem = p.memory_full_info()
            role = _role(p, root.pid, zygote)
            if role == "worker":
                role += " (used)" if p.pid == used else " (idle spare)"
            print(f"{role:34} {p.pid:>7} {p.ppid():>7} {mem.uss / MIB:8.1f} {mem.rss / MIB:8.1f}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
