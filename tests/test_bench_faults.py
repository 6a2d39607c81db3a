"""The fault benchmark runs end to end and reports its pass lines (zero lost,
zero hung) for a short run of two faults: worker kills, and a restart of its
private PostgreSQL cluster (never the machine's).  Counts only: timings and
recovery figures belong to the benchmark's report, never to a test."""

from __future__ import annotations

import json

import pytest

from scriptvisor.bench.faults import main, table, Row


def test_fault_bench_short_run_loses_and_hangs_nothing(tmp_path, capsys) -> None:
    rc = main(["--faults", "worker_kill,store_restart", "--phase", "2", "--clients", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {r["fault"]: r for r in data["rows"]}
    assert set(rows) == {"worker_kill", "store_restart"}
    for r in rows.values():
        assert r["sent"] > 0 and r["sent"] == r["answered"] + r["lost"] + r["hung"] + r["refused"]
        assert (r["lost"], r["hung"]) == (0, 0), r
    assert "private PostgreSQL restarted" in rows["store_restart"]["note"]
    assert rc == 0
    assert "| worker_kill |" in out and "| store_restart |" in out


def test_unknown_fault_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--faults", "meteor"])
    assert exc.value.code == 2
    assert "unknown faults ['meteor']" in capsys.readouterr().err


def test_table_marks_a_lost_call_as_a_failed_pass_line() -> None:
    row = Row("sigterm", "", sent=3, answered=2, ok=2, lost=1, hung=0, refused=0, codes={"lost": 1}, recover_s=None)
    assert not row.passed
    assert "| sigterm | 3 | 2 | 2 | 1 | 0 | 0 | none | never | NO |" in table([row])
