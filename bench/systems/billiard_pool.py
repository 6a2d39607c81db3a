"""billiard (Celery's multiprocessing fork) Pool with ``enable_timeouts=True``.

billiard's timeout handler thread checks deadlines once a second, and its
supervisor thread replaces dead workers every 0.8 s (after a 1 s start-up
burst at 0.1 s); a job whose worker died is failed with ``WorkerLostError``
only ``lost_worker_timeout`` seconds after the loss is noticed.  We set that
to its smallest useful value so the chaos watchdog measures hangs, not the
default 10 s wait.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import System, WatchdogExpired

__all__ = ["BilliardSystem"]

#: Seconds billiard waits before failing a job whose worker was lost.
LOST_WORKER_TIMEOUT = 0.5


class BilliardSystem(System):
    name = "billiard"
    requires = ("billiard",)
    notes = {
        "recycle_ms": "an idle worker SIGKILLed from outside wedges the pool (no call completes afterwards: "
        "billiard #104, a worker killed holding the shared inqueue lock); recorded as failed samples",
        "overshoot_ms": "timeouts are checked once a second (time.sleep(1.0) in TimeoutHandler)",
        "next_after_timeout_ms": "bounded by the 1 s timeout check and the 0.8 s worker maintenance",
    }

    def __init__(self) -> None:
        super().__init__()
        self.pool: Any = None
        # billiard hands the TimeLimitExceeded back wrapped in its
        # ExceptionWithTraceback, so any error of the spin call is its timeout
        # (a watchdog expiry is re-raised first by the base class).
        self.timeout_errors = (Exception,)

    def start(self, workers: int) -> None:
        from billiard.pool import Pool

        self.workers = workers
        self.pool = Pool(
            processes=workers, enable_timeouts=True, lost_worker_timeout=LOST_WORKER_TIMEOUT
        )
        self.warm_up()

    def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            for pid in self._pids(pool):
                _kill_quietly(pid)
            # terminate() joins billiard's handler threads, which a wedged
            # pool may never let go: retire it in the background.
            import threading

            threading.Thread(target=pool.terminate, name="bench-retire", daemon=True).start()

    def _submit(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        return self.pool.apply_async(fn, args, timeout=timeout)

    def _wait(self, handle: Any, watchdog: float) -> Any:
        from billiard.exceptions import TimeoutError as BilliardTimeout

        try:
            return handle.get(timeout=watchdog)
        except BilliardTimeout:
            if handle.ready():
                raise
            raise WatchdogExpired(f"no outcome within {watchdog:.1f} s") from None

    @staticmethod
    def _pids(pool: Any) -> list[int]:
        return [int(p.pid) for p in list(pool._pool) if p.pid]

    def worker_pids(self) -> list[int]:
        return self._pids(self.pool)


def _kill_quietly(pid: int) -> None:
    import os
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
