"""Soak: many calls with many timeouts, and the supervisor process's RSS over them.

    python -m scriptvisor.bench.soak [--calls 100000] [--timeouts 10000] [--out FILE.json]

Runs an ``Engine`` (default config, confinement on) in this process, the way
the HTTP server hosts it, and sends ``--calls`` invocations to one tenant in
rounds of 100, ``--timeouts`` of them a spinning script with a 10 ms wall
clock (each one kills and replaces a worker, the path that leaked an age
timer per dead worker, ~4.9 KB each), the rest no-ops, four at a time.
It samples this process's RSS after the first tenth (warm: caches, pools and
allocator arenas filled) and after every further tenth, and prints one JSON
object: ``rss_mb`` samples, ``growth_mb`` (last - warm), the outcome counts
and the wall time.  A leak shows as a straight line; a flat RSS is the pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

NOOP = "def noop(callback):\n    callback(None, 1)\n"
SPIN = "def spin(callback):\n    while True:\n        pass\n"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def soak(calls: int, timeouts: int, *, concurrency: int = 4, state_dir: str | None = None) -> dict[str, Any]:
    from scriptvisor.engine import Engine, EngineConfig, TenantLimits

    state = state_dir or tempfile.mkdtemp(prefix="sv-soak-")
    cfg = EngineConfig(state_dir=state, limits=TenantLimits(timeout=5.0, max_concurrency=concurrency,
                                                            max_queue=256))
    outcomes: Counter[str] = Counter()
    samples: list[float] = []
    tenth = max(1, calls // 10)
    started = time.perf_counter()
    with Engine(cfg) as eng:
        k = 0
        while k < calls:
            group = []
            for _ in range(min(concurrency, calls - k)):
                # timeouts spread evenly: at most one per group of `concurrency`
                if (k + 1) * timeouts // calls > k * timeouts // calls:
                    group.append(eng.submit("soak", source=SPIN, path="spin.py", timeout=0.01))
                else:
                    group.append(eng.submit("soak", source=NOOP, path="noop.py"))
                k += 1
                if k % tenth == 0:
                    gc.collect()
                    samples.append(round(_rss_mb(), 2))
            for j in group:
                outcomes[eng.wait(j).code or "ok"] += 1
        stats = eng.stats(memory=False)
    wall = time.perf_counter() - started
    warm = samples[0] if samples else 0.0
    return {
        "calls": sum(outcomes.values()), "timeouts_sent": timeouts, "outcomes": dict(outcomes),
        "rss_mb": samples, "warm_rss_mb": warm, "growth_mb": round(samples[-1] - warm, 2) if samples else 0.0,
        "max_growth_mb": round(max(samples) - warm, 2) if samples else 0.0,
        "deadlines_pending": stats.get("deadlines"), "workers_alive": stats.get("workers_alive"),
        "workers_exited": stats["counters"].get("worker_exit", 0),
        "wall_s": round(wall, 1), "loadavg": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--timeouts", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result = soak(args.calls, args.timeouts)
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
