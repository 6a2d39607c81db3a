"""The benchmark's quick mode runs end to end and the engine never hangs.

Structure and hang counts only: timings belong to the benchmark's report,
never to a test (docs/performance.md).
"""

from __future__ import annotations

import json

import pytest

from scriptvisor.bench.recycle import main
from scriptvisor.bench.stats import summarize
from scriptvisor.bench.systems import ALL_SYSTEMS, missing_requirement

LATENCY_KEYS = ("recycle_ms", "overshoot_ms", "next_after_timeout_ms", "warm_overhead_ms")
SUMMARY_KEYS = {"p50", "p90", "p99", "p99.9", "max", "n"}


def test_summarize_uses_measured_values() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "p99.9": 5.0, "max": 5.0, "n": 5}
    assert summarize([]) == {"p50": None, "p90": None, "p99": None, "p99.9": None, "max": None, "n": 0}


def test_unknown_system_is_refused(tmp_path, capsys) -> None:
    assert main(quick=True, out_dir=str(tmp_path), figures=None, systems=["nope"], n=None) == 2
    assert "unknown system" in capsys.readouterr().err


def test_unknown_figure_is_refused(tmp_path, capsys) -> None:
    assert main(quick=True, out_dir=str(tmp_path), figures=["nope"], systems=None, n=None) == 2
    assert "unknown figure" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_run_writes_every_figure_and_scriptvisor_never_hangs(tmp_path) -> None:
    assert main(quick=True, out_dir=str(tmp_path), figures=None, systems=None, n=None) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"cpu", "python", "kernel"} <= set(results["machine"])
    systems = results["systems"]
    assert set(systems) == set(ALL_SYSTEMS)
    for name, entry in systems.items():
        if missing_requirement(name):
            assert "skipped" in entry
    sv = systems["scriptvisor"]
    assert "failed" not in sv and "skipped" not in sv
    for key in LATENCY_KEYS + ("throughput_1w_per_s", "throughput_2w_per_s",
                               "idle_cpu_percent", "idle_worker_uss_mib"):
        assert set(sv[key]) == SUMMARY_KEYS, key
        assert sv[key]["n"] > 0, key
    chaos = sv["chaos_hangs"]
    assert chaos["count"] == 0
    assert chaos["n"] >= 200
    # Every chaos call ended with ok or a structured error code, never a hang.
    # A worker SIGKILLed from outside is a crash, never a protocol_error (the
    # worker broke no protocol; a call written to an already dead worker runs elsewhere).
    assert set(chaos["outcomes"]) <= {"ok"} | {f"error:{c}" for c in (
        "crash", "timeout", "engine_unavailable", "overloaded")}
    md = (tmp_path / "results.md").read_text()
    assert "## Targets" in md and "| scriptvisor |" in md
    assert (tmp_path / "samples.json").exists()
