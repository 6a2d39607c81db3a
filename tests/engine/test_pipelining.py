"""Pipelining through real processes: calls queued inside a worker, workers SIGKILLed at random.

The scheduling rules are unit-tested against fakes (``test_scheduling.py``);
here the claim is checked end to end: with calls queued behind the running
one and workers killed at random moments, no call ever runs twice, every
call gets an outcome, and the ones that provably never started run once
elsewhere.  Each call records its run in the tenant's SQLite database, so a
second run of the same call would show as a second row.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading

from scriptvisor.engine import Engine, TenantLimits

from .conftest import make_config

RECORD = (
    "import sqlite\n"
    "\n"
    "def record(n, callback):\n"
    "    db = global_.get('db')\n"
    "    if db is None:\n"
    "        db = sqlite.connect('runs.db')\n"
    "        db.query('PRAGMA journal_mode=WAL')\n"
    "        db.execute('PRAGMA synchronous=OFF')\n"
    "        db.execute('CREATE TABLE IF NOT EXISTS runs (n INTEGER)')\n"
    "        global_['db'] = db\n"
    "    db.execute('INSERT INTO runs VALUES (?)', [n])\n"
    "    callback(None, n)\n"
)


def _kill_soon(pids: list[int], delay: float) -> threading.Thread:
    def kill() -> None:
        threading.Event().wait(delay)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


def test_calls_queued_in_killed_workers_never_run_twice(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(1313)
    outcomes: dict[str, int] = {}
    ran_ok: list[int] = []
    requeued: list[dict] = []
    with Engine(make_config(state_dir=str(tmp_path / "state"), spares_per_tenant=1)) as eng:
        eng.configure_tenant("pipe", limits=TenantLimits(timeout=5.0, max_concurrency=1, max_queue=10_000),
                             data_dir=str(data))
        eng.add_listener(lambda ev: requeued.append(ev) if ev["event"] == "job_requeued" else None)
        n = 0
        warm = [eng.submit("pipe", path="record.py", source=RECORD, function="record", args=[-1 - i])
                for i in range(20)]
        assert all(r.ok for r in eng.wait_all(warm, 60)), "warm-up failed"
        pipelined = 0
        for _round in range(40):
            jobs = []
            for _ in range(30):
                jobs.append(eng.submit("pipe", path="record.py", source=RECORD, function="record", args=[n]))
                n += 1
            pipelined = max(pipelined, eng.stats(memory=False)["tenants"]["pipe"]["pipelined"])
            busy = [w["pid"] for w in eng.stats(memory=False)["tenants"]["pipe"]["workers"]
                    if w["state"] == "busy" and w["pid"]]
            killer = _kill_soon(busy, rng.uniform(0.0, 0.004))
            results = eng.wait_all(jobs, 60)
            killer.join()
            assert results is not None, "a call got no outcome"
            for job, res in zip(jobs, results):
                key = "ok" if res.ok else res.error["code"]
                if res.ok:
                    ran_ok.append(res.result)
                outcomes[key] = outcomes.get(key, 0) + 1
                assert res.ok or res.error["code"] in ("crash", "timeout"), res.error
    runs = sqlite3.connect(data / "runs.db")
    counts = dict(runs.execute("SELECT n, COUNT(*) FROM runs WHERE n >= 0 GROUP BY n"))
    twice = {k: v for k, v in counts.items() if v > 1}
    assert not twice, f"calls that ran more than once: {twice}"
    assert all(counts.get(k) == 1 for k in ran_ok), "a call reported ok left no record"
    assert pipelined >= 1, "nothing was ever queued inside a worker: the test checks nothing"
    assert outcomes.get("crash", 0) >= 1 and requeued, (outcomes, len(requeued))
    assert outcomes.get("ok", 0) >= 600, outcomes
