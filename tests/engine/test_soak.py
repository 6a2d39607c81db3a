"""Issue 14: nothing keyed by a worker or a job outlives it; RSS stays flat over a soak.

Scaled to CI time: 10,000 calls of which 1,000 time out (each killing and
replacing a worker). Before the fix every dead worker stayed reachable from
its 3600 s age timer, ~4.9 KB each: ~4.4 MB over this run, a straight line.
The full 100,000 / 10,000 soak is a bench figure (``bench/soak.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(400)
def test_supervisor_rss_is_flat_over_a_soak_with_timeouts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scriptvisor.bench.soak", "--calls", "10000",
                           "--timeouts", "1000"], capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcomes"] == {"ok": 9000, "timeout": 1000}
    assert result["workers_exited"] >= 900  # the timeouts really killed workers
    assert result["growth_mb"] < 2.0, result
    assert result["max_growth_mb"] < 2.0, result
    assert result["deadlines_pending"] <= result["workers_alive"] + 2, result
