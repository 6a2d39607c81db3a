"""scriptvisor through its public API: ``engine.Engine`` with spares, real scripts.

The workloads are action scripts compiled by the sandbox like any tenant's,
run in confined workers forked by the zygote.  Recycle uses the engine's
own ready signal: a ``worker_ready`` event (``Engine.add_listener``) for a
pid that did not exist before the kill, timestamped inside the listener, so
the figure is kill -> the replacement has said "ready" over its socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from typing import Any

from .base import BLOB_BYTES, System, WatchdogExpired, ms_since

__all__ = ["ScriptvisorSystem"]

NOOP = "def noop(callback):\n    callback(None, 1)\n"
SPIN = "def spin(callback):\n    while True:\n        pass\n"
BLOB = "def blob(size, callback):\n    callback(None, 'x' * size)\n"


class ScriptvisorSystem(System):
    name = "scriptvisor"
    requires = ("scriptvisor.engine",)
    notes = {
        "recycle_ms": "SIGKILL of the idle worker(s) -> worker_ready event of the replacement (engine listener)",
        "next_after_timeout_ms": "the next call runs on the pre-forked spare",
        "cold_start_ms": "Engine.invoke of a no-op for a tenant the node has never seen (a fresh worker "
                         "from the zygote: no standby yet); cold_*_ms are its parts from the worker's ready frame",
    }
    figures = System.figures + ("cold",)

    def __init__(self) -> None:
        super().__init__()
        self.eng: Any = None
        self.tenant = "bench1"
        self._ready: list[tuple[int, float]] = []
        self._timings: dict[int, dict[str, float]] = {}
        self._cold_seq = 0
        self._state_dir = tempfile.mkdtemp(prefix="scriptvisor-bench-")

    # -- lifecycle -------------------------------------------------------------
    def start(self, workers: int) -> None:
        from scriptvisor.engine import Engine, EngineConfig, TenantLimits

        self.workers = workers
        self.tenant = f"bench{workers}"
        self.eng = Engine(EngineConfig(state_dir=self._state_dir)).start()
        self.eng.configure_tenant(self.tenant, limits=TenantLimits(timeout=10.0, max_concurrency=workers, max_queue=100_000))
        self.eng.add_listener(self._on_event)
        self.warm_up()

    def close(self) -> None:
        if self.eng is not None:
            eng, self.eng = self.eng, None
            eng.close(graceful=False)
        # Its uid map goes with it: otherwise every run's 300 cold tenants stay
        # claimed in the host's uid registry (engine.uids) for good, and each
        # later run's new tenants allocate past all of them.
        shutil.rmtree(self._state_dir, ignore_errors=True)

    def _on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "worker_ready" and ev.get("pid"):
            self._ready.append((int(ev["pid"]), time.perf_counter()))
            self._timings[int(ev["pid"])] = dict(ev.get("timings") or {})

    def cold(self) -> dict[str, float]:
        """A tenant's first call on this node, through ``Engine.invoke``, with its parts.

        Each sample uses a tenant name never used before; afterwards its
        workers are retired (as the worker cap's eviction would), so cold
        tenants do not pile up in the engine over the run.
        """
        self._cold_seq += 1
        tenant = f"cold{self._cold_seq}"
        t0 = time.perf_counter()
        res = self.eng.invoke(tenant, path="/bench/noop.py", source=NOOP, function="noop")
        elapsed = ms_since(t0)
        if not res.ok:
            raise RuntimeError(f"cold noop failed: {res.error}")
        out = {"cold_start_ms": elapsed}
        parts = self._timings.get(int(res.worker.get("pid") or 0), {})
        for key, value in parts.items():
            if key.endswith("_ms"):
                out[f"cold_{key}"] = float(value)
        if res.worker.get("compile_ms") is not None:
            out["cold_compile_ms"] = float(res.worker["compile_ms"])
        self._forget(tenant)
        return out

    def _forget(self, tenant: str) -> None:
        sup = self.eng.supervisor
        self.eng.remove_tenant(tenant)
        self.eng.run_until(lambda: sup.pools.get(tenant) is None, 10.0)
        self._timings.clear()

    # -- calls -----------------------------------------------------------------
    def _job(self, source: str, fn: str, args: list[Any], timeout: float | None) -> Any:
        return self.eng.submit(self.tenant, path=f"/bench/{fn}.py", source=source, function=fn,
                               args=args, timeout=timeout)

    def _finish(self, job: Any, watchdog: float) -> Any:
        if not self.eng.run_until(lambda: job.done, watchdog):
            raise WatchdogExpired(f"no outcome within {watchdog:.1f} s")
        return job.result

    def _call(self, source: str, fn: str, args: list[Any] | None = None,
              timeout: float | None = None, watchdog: float = 30.0) -> Any:
        res = self._finish(self._job(source, fn, args or [], timeout), watchdog)
        if res.worker.get("pid"):
            self.last_pid = int(res.worker["pid"])
        return res

    def call_noop(self, watchdog: float = 30.0) -> int:
        res = self._call(NOOP, "noop", watchdog=watchdog)
        if not res.ok:
            raise RuntimeError(f"noop failed: {res.error}")
        return int(res.worker.get("pid") or 0)

    def warm_up(self) -> None:
        jobs = [self._job(NOOP, "noop", [], None) for _ in range(self.workers * 4)]
        if self.eng.wait_all(jobs, 60.0) is None:
            raise WatchdogExpired("warm-up calls did not finish")
        bad = [j.result.error for j in jobs if not j.result.ok]
        if bad:
            raise RuntimeError(f"warm-up failed: {bad[0]}")
        # Let the spares boot too, so the first measured sample is warm.
        self.eng.run_until(lambda: self._idle_count() >= self.workers + 0, 10.0)

    def _workers(self) -> list[dict[str, Any]]:
        t = self.eng.stats(memory=False)["tenants"].get(self.tenant) or {}
        return list(t.get("workers") or [])

    def _idle_count(self) -> int:
        return sum(1 for w in self._workers() if w.get("state") == "idle")

    def worker_pids(self) -> list[int]:
        return [int(w["pid"]) for w in self._workers() if w.get("pid")]

    # -- figures ---------------------------------------------------------------
    def warm(self) -> float:
        t0 = time.perf_counter()
        res = self._call(NOOP, "noop")
        elapsed = ms_since(t0)
        if not res.ok:
            raise RuntimeError(f"noop failed: {res.error}")
        return elapsed

    def recycle(self, watchdog: float = 10.0) -> float:
        """SIGKILL every (idle) worker of the tenant -> first worker_ready of a new pid.

        The pool keeps ``busy + queued + spares`` workers and leaves extra
        idle ones alone, so killing one of two idle workers needs no
        replacement; killing all of them needs exactly one (the spare).
        """
        self.call_noop()
        self.eng.run_until(lambda: all(w.get("state") == "idle" for w in self._workers()), 10.0)
        victims = self.worker_pids()
        if not victims:
            raise RuntimeError("no worker to kill")
        self._ready.clear()
        t0 = time.perf_counter()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        before = set(victims)
        fresh = lambda: any(pid not in before for pid, _ in self._ready)  # noqa: E731
        if not self.eng.run_until(fresh, watchdog):
            raise WatchdogExpired(f"no replacement worker_ready within {watchdog:.0f} s")
        t_ready = next(t for pid, t in self._ready if pid not in before)
        return (t_ready - t0) * 1000.0

    def timeout_pair(self, timeout: float) -> tuple[float, float]:
        self.call_noop()
        t0 = time.perf_counter()
        res = self._call(SPIN, "spin", timeout=timeout, watchdog=timeout + 30.0)
        t_err = time.perf_counter()
        if res.ok or (res.error or {}).get("code") != "timeout":
            raise RuntimeError(f"expected a timeout, got {res.error or res.result!r}")
        killed = res.worker.get("pid")
        after = self.call_noop()
        t_next = time.perf_counter()
        if after == killed:
            raise RuntimeError("next call after a timeout ran on the timed-out worker")
        deadline = t0 + timeout
        return (t_err - deadline) * 1000.0, (t_next - deadline) * 1000.0

    def throughput(self, batch: int) -> float:
        t0 = time.perf_counter()
        jobs = [self._job(NOOP, "noop", [], None) for _ in range(batch)]
        if self.eng.wait_all(jobs, 60.0) is None:
            raise WatchdogExpired("throughput batch did not finish")
        rate = batch / (time.perf_counter() - t0)
        bad = [j.result.error for j in jobs if not j.result.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} of {batch} calls failed: {bad[0]}")
        return rate

    # -- chaos (System.chaos and System.chaos_target drive this) ----------------
    def chaos_call(self, use_blob: bool, timeout: float, grace: float) -> str:
        if use_blob:
            res = self._call(BLOB, "blob", [BLOB_BYTES], timeout=timeout, watchdog=timeout + grace)
        else:
            res = self._call(NOOP, "noop", timeout=timeout, watchdog=timeout + grace)
        if res.ok:
            return "ok"
        code = (res.error or {}).get("code")
        if not code:
            raise RuntimeError(f"unstructured failure: {res.error!r}")
        # an "error:..." outcome is returned, not raised: System.chaos reports it as is
        return f"error:{code}"
