"""results.json and results.md from what the harness collected."""

from __future__ import annotations

from typing import Any

from .stats import summarize
from .targets import judge

__all__ = ["FIGURES", "build_results", "render_markdown"]

#: figure key -> the harness group whose failures explain a missing figure
GROUP_OF = {
    "recycle_ms": "recycle", "overshoot_ms": "timeout", "next_after_timeout_ms": "timeout",
    "warm_overhead_ms": "warm", "throughput_1w_per_s": "throughput", "throughput_2w_per_s": "throughput",
    "idle_cpu_percent": "idle", "idle_worker_uss_mib": "idle", "cold_start_ms": "cold",
    "sup_cpu_us_per_call": "cpu", "worker_cpu_us_per_call": "cpu", "cli_batch_ms_per_call": "cli",
    "cli_batch_cpu_ms_per_call": "cli",
}

#: figure key -> (label, unit, higher is better)
FIGURES: dict[str, tuple[str, str, bool]] = {
    "recycle_ms": ("recycle (SIGKILL -> replacement ready)", "ms", False),
    "overshoot_ms": ("overshoot (deadline -> caller has timeout)", "ms", False),
    "next_after_timeout_ms": ("next-after-timeout (deadline -> next call done)", "ms", False),
    "warm_overhead_ms": ("warm overhead (no-op submit -> result)", "ms", False),
    "throughput_1w_per_s": ("throughput, 1 worker", "calls/s", True),
    "throughput_2w_per_s": ("throughput, 2 workers", "calls/s", True),
    "idle_cpu_percent": ("idle supervisor CPU", "%", False),
    "idle_worker_uss_mib": ("idle worker USS", "MiB", False),
    "cold_start_ms": ("cold start (a tenant's first call on the node)", "ms", False),
    "sup_cpu_us_per_call": ("supervisor CPU per no-op call", "us", False),
    "worker_cpu_us_per_call": ("worker CPU per no-op call", "us", False),
    "cli_batch_ms_per_call": ("CLI batch, whole process, per call", "ms/call", False),
    "cli_batch_cpu_ms_per_call": ("CLI batch CPU (process + children), per call", "ms/call", False),
}

#: Yardsticks, not peers (bench/systems/floor_fork.py): never the "best peer".
FLOORS = frozenset({"floor"})

SUBJECT = "scriptvisor"


def build_results(machine: dict[str, Any], run: dict[str, Any], collected: Any,
                  skipped: dict[str, str]) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for name, reason in skipped.items():
        systems[name] = {"skipped": reason}
    names = set(collected.samples) | set(collected.chaos) | set(collected.failed) | set(collected.notes)
    for name in names:
        entry: dict[str, Any] = systems.setdefault(name, {})
        for figure, values in collected.samples.get(name, {}).items():
            entry[figure] = summarize(values)
        if name in collected.chaos:
            entry["chaos_hangs"] = collected.chaos[name]
        if collected.notes.get(name):
            entry["notes"] = collected.notes[name]
        if collected.errors.get(name):
            entry["errors"] = collected.errors[name]
        if name in collected.failed:
            entry["failed"] = collected.failed[name]
    return {"machine": machine, "run": run, "systems": systems, "targets": judge(systems, SUBJECT)}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _best_peer(systems: dict[str, Any], figure: str, higher: bool) -> tuple[str, float] | None:
    cands = [
        (name, s[figure]["p50"])
        for name, s in systems.items()
        if name != SUBJECT and name not in FLOORS
        and isinstance(s.get(figure), dict) and s[figure].get("p50") not in (None, 0)
    ]
    if not cands:
        return None
    return (max if higher else min)(cands, key=lambda c: c[1])


def _ratio(value: float | None, best: tuple[str, float] | None, higher: bool) -> str:
    if value is None or best is None or best[1] == 0:
        return "-"
    r = value / best[1]
    # Always "how many times better than the best peer" reads ambiguously for
    # latencies; print the plain quotient and say which way is better.
    return f"{r:.2f}x"


def render_markdown(results: dict[str, Any], plots: list[str], plot_note: str | None) -> str:
    systems = results["systems"]
    order = [n for n in results["run"]["systems"] if n in systems]
    measured = [n for n in order if "skipped" not in systems[n]]
    m = results["machine"]
    lines = [
        "# scriptvisor benchmark results",
        "",
        f"Mode: **{'quick' if results['run']['quick'] else 'full'}** · {results['run']['started']} · "
        f"{results['run']['duration_s']:.0f} s · {m.get('cpu')} ({m.get('cores')} cores) · "
        f"Python {m.get('python')} · kernel {m.get('kernel')}",
        "",
        "All systems measured interleaved in one run (one sample per system per round).",
        "Ratio = p50 / best peer's p50 (latency: lower is better; throughput: higher is better).",
        "",
        "## Summary (p50, and p99 for latencies)",
        "",
        "| figure | " + " | ".join(measured) + " | scriptvisor vs best peer | vs floor |",
        "|---|" + "---|" * len(measured) + "---|---|",
    ]
    for figure, (label, unit, higher) in FIGURES.items():
        cells = []
        for name in measured:
            f = systems[name].get(figure)
            err = (systems[name].get("errors") or {}).get(GROUP_OF[figure])
            if (not isinstance(f, dict) or not f.get("n")) and err:
                cells.append(f"failed ({err['count']}, {err.get('hung', 0)} hung)")
            elif not isinstance(f, dict) or not f.get("n"):
                cells.append("n/a")
            elif unit == "ms":
                cells.append(f"{_fmt(f['p50'])} / {_fmt(f['p99'])}")
            else:
                cells.append(_fmt(f["p50"]))
        best = _best_peer(systems, figure, higher)
        mine = systems.get(SUBJECT, {}).get(figure)
        ratio = _ratio(mine.get("p50") if isinstance(mine, dict) else None, best, higher)
        if best and ratio != "-":
            ratio += f" ({best[0]})"
        floor = systems.get("floor", {}).get(figure)
        vs_floor = "-"
        if isinstance(floor, dict) and floor.get("p50") and isinstance(mine, dict) and mine.get("p50") is not None:
            vs_floor = f"{mine['p50'] / floor['p50']:.2f}x"
        lines.append(f"| {label} [{unit}] | " + " | ".join(cells) + f" | {ratio} | {vs_floor} |")
    hang_cells = []
    for name in measured:
        ch = systems[name].get("chaos_hangs")
        hang_cells.append(f"{ch['count']} / {ch['n']}" if isinstance(ch, dict) else "n/a")
    lines.append("| chaos hangs / kills | " + " | ".join(hang_cells) + " | | |")
    parts = sorted(k for k in systems.get(SUBJECT, {}) if k.startswith("cold_") and k != "cold_start_ms")
    if parts:
        lines += ["", "Cold start, scriptvisor, its parts (p50 ms): " + ", ".join(
            f"{k[5:-3]} {_fmt(systems[SUBJECT][k]['p50'])}" for k in parts
            if isinstance(systems[SUBJECT][k], dict))]

    lines += ["", "## Each figure", ""]
    for figure, (label, unit, higher) in FIGURES.items():
        best = _best_peer(systems, figure, higher)
        rows = [n for n in measured if isinstance(systems[n].get(figure), dict) and systems[n][figure].get("n")]
        if not rows:
            continue
        lines += [f"### {label} [{unit}]", "",
                  "| system | p50 | p90 | p99 | p99.9 | max | n | ratio to best peer |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in rows:
            f = systems[name][figure]
            lines.append(
                f"| {name} | {_fmt(f['p50'])} | {_fmt(f['p90'])} | {_fmt(f['p99'])} | {_fmt(f['p99.9'])} | "
                f"{_fmt(f['max'])} | {f['n']} | {_ratio(f['p50'], best, higher)} |"
            )
        lines.append("")

    lines += ["## Chaos (random SIGKILLs of workers; hang = no outcome within timeout + grace)", "",
              "| system | hangs | kills | calls | outcomes |", "|---|---|---|---|---|"]
    for name in measured:
        ch = systems[name].get("chaos_hangs")
        if isinstance(ch, dict):
            outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(ch.get("outcomes", {}).items()))
            lines.append(f"| {name} | {ch['count']} | {ch['n']} | {ch.get('calls', '-')} | {outcomes} |")

    lines += ["", "## Targets (docs/performance.md), scriptvisor", "",
              "| target | measured | bound | verdict |", "|---|---|---|---|"]
    for t in results["targets"]:
        verdict = t["verdict"] + (f" ({t['why']})" if t.get("why") else "")
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {_fmt(t['bound'])} | {verdict} |")

    notes = []
    for name in order:
        s = systems[name]
        if "skipped" in s:
            notes.append(f"- **{name}** skipped: {s['skipped']}")
            continue
        if s.get("failed"):
            notes.append(f"- **{name}** failed: {s['failed']}")
        for key, text in (s.get("notes") or {}).items():
            notes.append(f"- {name} / {key}: {text}")
        for group, err in (s.get("errors") or {}).items():
            notes.append(f"- {name} / {group}: {err['count']} failed samples ({err.get('hung', 0)} hung), "
                         f"last: `{err['last']}`")
    lines += ["", "## Notes", ""] + (notes or ["- none"])
    lines += ["", "## Plots", ""]
    if plots:
        lines += [f"- ![{p}]({p})" for p in plots]
    else:
        lines.append(f"- {plot_note or 'no latency samples to plot'}")
    return "\n".join(lines) + "\n"
