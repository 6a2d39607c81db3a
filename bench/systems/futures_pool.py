"""concurrent.futures.ProcessPoolExecutor: no task timeout, no single-worker kill.

The executor cannot stop one task: a worker that dies breaks the whole pool
(``BrokenProcessPool``) and the only recovery is to kill every worker and
build a new executor.  ``future.result(timeout)`` gives the *caller* a
timeout at the deadline, but the task keeps running, so next-after-timeout
includes that rebuild.  This is what "use the standard library" costs.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from scriptvisor.bench import tasks

from .base import System, WatchdogExpired

__all__ = ["FuturesSystem"]


class FuturesSystem(System):
    name = "futures"
    notes = {
        "recycle_ms": "a dead worker breaks the pool: detect BrokenProcessPool, kill all, rebuild, call",
        "overshoot_ms": "caller-side result(timeout): precise, but the task keeps running",
        "next_after_timeout_ms": "kill every worker and rebuild the executor before the next call",
    }

    def __init__(self) -> None:
        super().__init__()
        self.pool: ProcessPoolExecutor | None = None

    def start(self, workers: int) -> None:
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers)
        self.warm_up()

    def _rebuild(self) -> None:
        """The executor's only recovery: kill what is left, then a new pool."""
        old, self.pool = self.pool, ProcessPoolExecutor(max_workers=self.workers)
        if old is not None:
            for pid in list(getattr(old, "_processes", None) or {}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # Never join here: a pool broken mid-write can block its own
            # shutdown (its feeder thread stuck on a dead pipe); the caller
            # would not wait for it either.
            old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self.pool is not None:
            for pid in self.worker_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def _submit(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        try:
            return self.pool.submit(fn, *args)  # type: ignore[union-attr]
        except BrokenProcessPool:
            self._rebuild()
            raise

    def _wait(self, handle: Any, watchdog: float) -> Any:
        try:
            return handle.result(timeout=watchdog)
        except FutureTimeout:
            raise WatchdogExpired(f"no outcome within {watchdog:.1f} s") from None
        except BrokenProcessPool:
            self._rebuild()
            raise

    def worker_pids(self) -> list[int]:
        return [int(p) for p in list(getattr(self.pool, "_processes", None) or {})]

    def timeout_pair(self, timeout: float) -> tuple[float, float]:
        self.call_noop()
        t0 = time.perf_counter()
        handle = self._submit(tasks.spin)
        try:
            handle.result(timeout=timeout)
        except FutureTimeout:
            pass
        t_err = time.perf_counter()
        self._rebuild()
        self.call_noop()
        t_next = time.perf_counter()
        deadline = t0 + timeout
        return (t_err - deadline) * 1000.0, (t_next - deadline) * 1000.0

    def chaos_call(self, use_blob: bool, timeout: float, grace: float) -> str:
        # No task timeout exists: the caller-side wait is the only bound.
        return super().chaos_call(use_blob, timeout, grace)
