"""What every measured system must answer, and the measurements shared by pools.

A ``System`` lives inside one driver process (``bench.driver``) and measures
itself: every figure is timed with ``time.perf_counter`` around the system's
own public calls, so the numbers include what a caller of that system pays
and nothing the harness adds.

Subclasses for pools implement four primitives -- ``start``, ``close``,
``_submit`` and ``_wait`` -- and ``worker_pids``; the figures are then the
same code for every pool, so a difference between pools is the pool's.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any, Callable

from scriptvisor.bench import tasks

__all__ = ["BLOB_BYTES", "Killer", "System", "WatchdogExpired", "ms_since"]

#: Result size for the chaos run's "large result" calls: big enough that the
#: write of the result takes a measurable moment a kill can land in.
BLOB_BYTES = 64 * 1024


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class WatchdogExpired(Exception):
    """A call produced no outcome (result or error) within timeout + grace."""


class Killer:
    """One thread that SIGKILLs a chosen worker a chosen delay after ``arm``.

    A separate thread, so the kill lands while the measuring thread is inside
    the system's call (dispatch, execution, result write) rather than between
    calls.  ``time.sleep`` is used to place the kill at a moment, never to
    wait for an event.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._job: tuple[Callable[[], int | None], float] | None = None
        self._done = threading.Event()
        self._delivered = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-killer", daemon=True)
        self._thread.start()

    def arm(self, target: Callable[[], int | None], delay: float) -> None:
        with self._cond:
            self._done.clear()
            self._delivered = False
            self._job = (target, time.perf_counter() + delay)
            self._cond.notify()

    def result(self, timeout: float = 5.0) -> bool:
        """True when the armed kill reached a live process."""
        self._done.wait(timeout)
        return self._delivered

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                target, fire_at = self._job  # type: ignore[misc]
                self._job = None
            pause = fire_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            delivered = False
            pid = target()
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    delivered = True
                except (ProcessLookupError, PermissionError):
                    pass
            self._delivered = delivered
            self._done.set()


class System:
    """Base class. ``name`` is the key in results.json."""

    name = "?"
    #: Modules the system needs; missing ones make the system skip, with reason.
    requires: tuple[str, ...] = ()
    #: Kills in the chaos run land uniformly within this many seconds after
    #: the call is submitted: about two no-op round trips, so kills hit idle,
    #: dispatch, execution and result-write moments alike.
    chaos_window = 0.002
    #: Errors the system raises when a task exceeds its timeout.
    timeout_errors: tuple[type[BaseException], ...] = (TimeoutError,)
    #: Facts about how the system's own mechanics bound a figure.
    notes: dict[str, str] = {}
    #: Figure groups this system takes part in (the harness skips the others).
    figures: tuple[str, ...] = ("warm", "recycle", "timeout", "throughput", "chaos", "idle", "cpu")

    def __init__(self) -> None:
        self.workers = 1
        self.last_pid: int | None = None

    # -- primitives --------------------------------------------------------
    def start(self, workers: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _submit(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        raise NotImplementedError

    def _wait(self, handle: Any, watchdog: float) -> Any:
        """The call's value; its error raised; ``WatchdogExpired`` if neither came."""
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    def supervisor_pids(self) -> list[int]:
        return [os.getpid()]

    def recover(self) -> None:
        """Replace a wedged system (after a hang) so the run can go on."""
        self.close()
        self.start(self.workers)

    # -- helpers -----------------------------------------------------------
    def call_noop(self, watchdog: float = 30.0) -> int:
        pid = self._wait(self._submit(tasks.noop), watchdog)
        self.last_pid = int(pid)
        return self.last_pid

    def warm_up(self) -> None:
        """Make sure every worker has started and run a call."""
        handles = [self._submit(tasks.noop) for _ in range(self.workers * 4)]
        for h in handles:
            self.last_pid = int(self._wait(h, 60.0))

    # -- figures -----------------------------------------------------------
    def warm(self) -> float:
        """Submit -> result of a no-op on a warm worker, ms."""
        t0 = time.perf_counter()
        pid = self._wait(self._submit(tasks.noop), 30.0)
        elapsed = ms_since(t0)
        self.last_pid = int(pid)
        return elapsed

    def recycle(self, watchdog: float = 10.0) -> float:
        """SIGKILL of an idle worker -> a no-op completed on its replacement, ms.

        Pools have no "ready" signal a caller can observe; the first call
        answered by a new pid is the earliest moment a caller can rely on the
        replacement, so that is the figure (it includes one warm round trip).
        """
        victim = self.call_noop()
        os.kill(victim, signal.SIGKILL)
        t0 = time.perf_counter()
        deadline = t0 + watchdog
        while time.perf_counter() < deadline:
            try:
                if self.call_noop(watchdog=max(0.1, deadline - time.perf_counter())) != victim:
                    return ms_since(t0)
            except WatchdogExpired:
                raise
            except Exception:
                continue  # the pool reported the dead worker (or broke): ask again
        raise WatchdogExpired(f"no replacement worker within {watchdog:.0f} s")

    def timeout_pair(self, timeout: float) -> tuple[float, float]:
        """(overshoot, next-after-timeout), ms after the deadline (submit + timeout)."""
        before = self.call_noop()
        t0 = time.perf_counter()
        handle = self._submit(tasks.spin, timeout=timeout)
        try:
            self._wait(handle, timeout + 30.0)
        except WatchdogExpired:
            raise
        except self.timeout_errors:
            pass
        else:
            raise RuntimeError("spin returned")
        t_err = time.perf_counter()
        after = self.call_noop()
        t_next = time.perf_counter()
        if after == before:
            raise RuntimeError("next call after a timeout ran on the timed-out worker")
        deadline = t0 + timeout
        return (t_err - deadline) * 1000.0, (t_next - deadline) * 1000.0

    def throughput(self, batch: int) -> float:
        """No-op calls per second, ``batch`` submitted at once."""
        t0 = time.perf_counter()
        handles = [self._submit(tasks.noop) for _ in range(batch)]
        for h in handles:
            self._wait(h, 60.0)
        return batch / (time.perf_counter() - t0)

    def cpu_per_call(self, n: int) -> dict[str, float]:
        """CPU (user + system) of the supervisor side and of the workers per no-op call, us.

        Sampled around ``n`` sequential warm no-op calls from each process's
        ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU, every thread;
        ``cpu_times`` counts 10 ms ticks): the supervisor side is
        ``supervisor_pids()`` (the process hosting the pool, its threads
        included), the worker side every worker pid before and after.
        """
        def cpu(pids: list[int]) -> float:
            total = 0
            for pid in pids:
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for tid in tids:
                    try:
                        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                            total += int(f.read().split()[0])
                    except (OSError, ValueError, IndexError):
                        pass
            return total / 1e9

        self.call_noop()
        workers = self.worker_pids()
        sup0, w0 = cpu(self.supervisor_pids()), cpu(workers)
        for _ in range(n):
            self.call_noop()
        sup1, w1 = cpu(self.supervisor_pids()), cpu(workers)
        return {"sup_cpu_us_per_call": (sup1 - sup0) / n * 1e6, "worker_cpu_us_per_call": (w1 - w0) / n * 1e6}

    def cold(self) -> dict[str, float]:
        """A tenant's first call on a node: only systems with tenants measure it."""
        raise NotImplementedError

    def chaos_target(self, rng: random.Random) -> Callable[[], int | None]:
        pids = self.worker_pids()
        if self.last_pid in pids and rng.random() < 0.7:
            victim: int | None = self.last_pid  # most likely to serve the next call
        else:
            victim = rng.choice(pids) if pids else None
        return lambda: victim

    def chaos_call(self, use_blob: bool, timeout: float, grace: float) -> str:
        fn, args = (tasks.blob, (BLOB_BYTES,)) if use_blob else (tasks.noop, ())
        handle = self._submit(fn, args, timeout=timeout)
        value = self._wait(handle, timeout + grace)
        self.last_pid = int(value[0] if use_blob else value)
        return "ok"

    def chaos(self, killer: Killer, rng: random.Random, timeout: float, grace: float) -> dict[str, Any]:
        """One chaos step: arm a kill at a random moment, make one call under a watchdog."""
        killer.arm(self.chaos_target(rng), rng.uniform(0.0, self.chaos_window))
        use_blob = rng.random() < 0.5
        try:
            outcome = self.chaos_call(use_blob, timeout, grace)
        except WatchdogExpired:
            outcome = "hang"
        except Exception as exc:  # a structured error is a fine outcome
            outcome = f"error:{type(exc).__name__}"
        delivered = killer.result(timeout=self.chaos_window + 5.0)
        if outcome == "hang":
            self.recover()
        return {"outcome": outcome, "killed": delivered}
