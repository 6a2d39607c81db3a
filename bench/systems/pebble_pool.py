"""pebble ProcessPool with a per-task timeout, fork or forkserver context.

pebble's pool manager thread wakes every ``CONSTS.sleep_unit`` (0.1 s) to
look for timed-out tasks and dead workers, so overshoot, next-after-timeout
and recycle are bounded below by that period; a timed-out worker gets
SIGTERM, then up to ``term_timeout`` (3 s) before SIGKILL.

pebble 5.2 also treats a worker that dies while no task is running (an idle
worker killed from outside) as a broken pool: ``find_expired_task`` raises
``BrokenProcessPool("All workers expired")`` and every later ``schedule``
raises ``RuntimeError``.  As with concurrent.futures, the only recovery is a
new pool, which is what recycle measures for pebble.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from .base import System, WatchdogExpired

__all__ = ["PebbleSystem"]


class PebbleSystem(System):
    requires = ("pebble",)
    notes = {
        "recycle_ms": "an idle worker killed from outside breaks the pool (BrokenProcessPool 'All workers "
        "expired'): detect, build a new pool, call",
        "overshoot_ms": "timeouts are checked every 0.1 s; the worker then gets SIGTERM (SIGKILL after 3 s)",
        "next_after_timeout_ms": "the replacement is forked on the next 0.1 s manager tick",
    }

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context
        self.name = f"pebble_{context}"
        self.pool: Any = None

    def start(self, workers: int) -> None:
        import pebble

        self.workers = workers
        ctx = multiprocessing.get_context(self.context)
        self.pool = pebble.ProcessPool(max_workers=workers, context=ctx)
        self.warm_up()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool.join(timeout=10)
            self.pool = None

    def _rebuild(self) -> None:
        """pebble's only recovery from a broken pool: a new one.

        The old pool's stop+join (up to one 0.1 s manager tick) runs in the
        background: a caller in a hurry would not wait for it either.
        """
        import pebble

        old = self.pool
        self.pool = pebble.ProcessPool(max_workers=self.workers, context=multiprocessing.get_context(self.context))

        def retire() -> None:
            old.stop()
            old.join(timeout=10)

        threading.Thread(target=retire, name="bench-retire", daemon=True).start()

    def _submit(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        try:
            return self.pool.schedule(fn, args=args, timeout=timeout)
        except RuntimeError:  # "Unexpected error within the Pool": it broke earlier
            self._rebuild()
            raise

    def _wait(self, handle: Any, watchdog: float) -> Any:
        try:
            return handle.result(timeout=watchdog)
        except BrokenProcessPool:
            self._rebuild()
            raise
        except FutureTimeout:
            # pebble's own task timeout is also a TimeoutError: tell them
            # apart by whether the future has an outcome at all.
            if handle.done():
                raise
            handle.cancel()
            raise WatchdogExpired(f"no outcome within {watchdog:.1f} s") from None

    def worker_pids(self) -> list[int]:
        for _ in range(5):  # the manager thread may resize the dict meanwhile
            try:
                return [int(p) for p in list(self.pool._pool_manager.worker_manager.workers)]
            except RuntimeError:
                time.sleep(0)
        return []
