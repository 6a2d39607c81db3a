"""``scriptvisor bench recycle``: the whole benchmark, one function.

    python -m scriptvisor.bench.recycle --quick --out /tmp/bench

writes ``results.json`` (summaries), ``samples.json`` (raw samples for
re-plotting), ``results.md`` (tables, ratios, target verdicts), CDF PNGs
when matplotlib is installed, and one log per driver under ``drivers/``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from typing import Any

from .harness import Plan, run_plan
from .machine import machine_info
from .plot import plot_cdfs
from .report import build_results, render_markdown
from .systems import ALL_SYSTEMS, missing_requirement

__all__ = ["GROUPS", "main", "make_plan"]

#: Figure groups; one sample of "timeout" yields overshoot and next-after-timeout.
GROUPS = ("warm", "recycle", "timeout", "cold", "cpu", "throughput", "chaos", "idle", "cli")
ALIASES = {
    "overshoot": "timeout", "next_after_timeout": "timeout", "warm_overhead": "warm",
    "idle_cpu": "idle", "uss": "idle", "hangs": "chaos", "cold_start": "cold", "cpu_per_call": "cpu",
    "cli_batch": "cli",
}

#: Sample counts. Full: n >= 1000 for latencies (docs/performance.md), 10,000
#: chaos kills. Quick: enough to exercise every path in well under a minute.
FULL_COUNTS = {"warm": 2000, "recycle": 1000, "timeout": 1000, "cold": 300, "cpu": 5, "throughput": 50,
               "chaos": 10_000}
QUICK_COUNTS = {"warm": 100, "recycle": 10, "timeout": 5, "cold": 5, "cpu": 1, "throughput": 3, "chaos": 200}


def make_plan(quick: bool, groups: list[str] | None, n: int | None,
              chaos_n: int | None = None, budget: float | None = None) -> Plan:
    counts = dict(QUICK_COUNTS if quick else FULL_COUNTS)
    if n is not None:
        for key in ("warm", "recycle", "timeout"):
            counts[key] = n
    if chaos_n is not None:
        counts["chaos"] = chaos_n
    chosen = []
    for g in groups or GROUPS:
        g = ALIASES.get(g, g)
        if g not in GROUPS:
            raise ValueError(f"unknown figure {g!r}; choose from {', '.join(GROUPS)}")
        if g not in chosen:
            chosen.append(g)
    return Plan(
        quick=quick,
        groups=chosen,
        counts=counts,
        budget_s=budget if budget is not None else (1.0 if quick else 60.0),
        chaos_budget_s=budget if budget is not None else (1.5 if quick else 60.0),
        chaos_budget_scriptvisor_s=20.0 if quick else 1800.0,
        throughput_batch=50 if quick else 200,
        idle_s=2.0 if quick else 10.0,
        request_timeout_s=15.0 if quick else 120.0,
        recycle_watchdog_s=2.0 if quick else 10.0,
        chaos_timeout_s=0.5 if quick else 1.0,
        chaos_grace_s=1.0 if quick else 2.0,
        cpu_calls=200 if quick else 2000,
        cli_calls=200 if quick else 2000,
        cli_rounds=1 if quick else 3,
    )


def main(quick: bool = False, out_dir: str = "bench-results", figures: list[str] | None = None,
         systems: list[str] | None = None, n: int | None = None, *,
         chaos_n: int | None = None, budget: float | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed do not fail it), 2 on bad input."""
    try:
        plan = make_plan(quick, figures, n, chaos_n, budget)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wanted = list(systems or ALL_SYSTEMS)
    unknown = [s for s in wanted if s not in ALL_SYSTEMS]
    if unknown:
        print(f"error: unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(out_dir, "drivers"), exist_ok=True)
    skipped: dict[str, str] = {}
    runnable = []
    for name in wanted:
        why = missing_requirement(name)
        if why:
            skipped[name] = why
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            runnable.append(name)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    print(f"bench: {'quick' if quick else 'full'} run of {', '.join(runnable)}; figures {', '.join(plan.groups)}",
          file=sys.stderr)
    collected = run_plan(runnable, plan, os.path.join(out_dir, "drivers"),
                         say=lambda s: print(s, file=sys.stderr))
    run: dict[str, Any] = {
        "quick": quick, "started": started, "duration_s": round(time.monotonic() - t0, 1),
        "systems": wanted, "figures": plan.groups, "counts": plan.counts,
        "budget_s": plan.budget_s, "overshoot_timeout_s": plan.overshoot_timeout_s,
        "chaos_timeout_s": plan.chaos_timeout_s, "chaos_grace_s": plan.chaos_grace_s,
        "throughput_batch": plan.throughput_batch, "idle_s": plan.idle_s,
        "phase_s": collected.phases,
    }
    results = build_results(machine_info(), run, collected, skipped)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "samples.json"), "w", encoding="utf-8") as f:
        json.dump(collected.samples, f)
    plots, plot_note = plot_cdfs(collected.samples, out_dir)
    if plot_note:
        print(plot_note, file=sys.stderr)
    md = render_markdown(results, [os.path.basename(p) for p in plots], plot_note)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(f"bench: wrote {out_dir}/results.json and results.md in {run['duration_s']:.0f} s", file=sys.stderr)
    return 0


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scriptvisor.bench.recycle", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, well under a minute")
    p.add_argument("--out", default="bench-results", help="output directory")
    p.add_argument("--figure", action="append", dest="figures", help=f"one of {', '.join(GROUPS)} (repeatable)")
    p.add_argument("--system", action="append", dest="systems", help=f"one of {', '.join(ALL_SYSTEMS)} (repeatable)")
    p.add_argument("--n", type=int, help="samples per latency figure")
    p.add_argument("--chaos-n", type=int, help="chaos kills per system")
    p.add_argument("--budget", type=float, help="seconds any one system may spend per figure")
    a = p.parse_args(argv)
    return main(a.quick, a.out, a.figures, a.systems, a.n, chaos_n=a.chaos_n, budget=a.budget)


if __name__ == "__main__":
    sys.exit(_cli())
