"""The operator's "recycle this tenant's workers" (Supervisor.recycle_tenant), on a real engine."""

from __future__ import annotations

from scriptvisor.engine import Engine

from .conftest import NOOP, make_config

SLOW = "def slow(n, callback):\n    t = 0\n    for i in range(n):\n        t = t + i\n    callback(None, t)\n"


def _states(eng: Engine, tenant: str) -> dict[int, str]:
    info = eng.stats(memory=False)["tenants"].get(tenant) or {}
    return {w["pid"]: w["state"] for w in info.get("workers", []) if w["pid"] is not None}


def test_recycle_tenant_retires_idle_workers_now_and_busy_ones_after_their_call(tmp_path):
    with Engine(make_config(state_dir=str(tmp_path), spares_per_tenant=1)) as eng:
        exits: list[dict] = []
        eng.add_listener(lambda ev: exits.append(ev) if ev["event"] == "worker_exit" else None)
        assert eng.invoke("acme", source=NOOP, path="noop.py").ok
        assert eng.run_until(lambda: list(_states(eng, "acme").values()).count("idle") == 2, 10)
        job = eng.submit("acme", source=SLOW, path="slow.py", args=[2_000_000])
        assert eng.run_until(lambda: "busy" in _states(eng, "acme").values(), 10)
        before = _states(eng, "acme")
        [busy_pid] = [pid for pid, state in before.items() if state == "busy"]
        [idle_pid] = [pid for pid, state in before.items() if state == "idle"]

        assert eng.recycle_tenant("acme") == {"retired": 1, "after_call": 1}
        res = eng.wait(job)
        assert res.ok and res.result == sum(range(2_000_000))  # the running call was not cut
        assert res.worker["pid"] == busy_pid
        gone = lambda: {e["pid"] for e in exits if e["reason"] == "operator"} >= {busy_pid, idle_pid}  # noqa: E731
        assert eng.run_until(gone, 10)
        # replacements serve the next call
        after = eng.invoke("acme", source=NOOP, path="noop.py")
        assert after.ok and after.worker["pid"] not in before
        assert eng.recycle_tenant("nobody") == {"retired": 0, "after_call": 0}
