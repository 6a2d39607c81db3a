"""A new ``python -I -S`` interpreter per call: the simplest isolation there is.

There is no warm worker: every call pays interpreter start-up, so "recycle"
and "warm overhead" are the same cost (start -> first output), and there is
no idle worker to measure.  ``-I`` isolates from the environment and user
site, ``-S`` skips ``site`` import: the fastest start CPython offers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .base import BLOB_BYTES, Killer, System, WatchdogExpired, ms_since

__all__ = ["FreshInterpreterSystem"]

NOOP = "import os,sys; sys.stdout.write(str(os.getpid()))"
SPIN = "while True: pass"
BLOB = f"import os,sys; sys.stdout.write(str(os.getpid()) + ' ' + 'x' * {BLOB_BYTES})"


class FreshInterpreterSystem(System):
    name = "python_per_call"
    chaos_window = 0.025  # start-up is ~15-20 ms: spread kills over all of it
    timeout_errors = (subprocess.TimeoutExpired,)
    figures = ("warm", "recycle", "timeout", "throughput", "chaos", "idle")  # no worker to sample CPU of
    notes = {
        "recycle_ms": "no persistent worker: interpreter start -> first output (same as warm overhead)",
        "idle_worker_uss_mib": "no idle worker exists between calls",
    }

    def __init__(self) -> None:
        super().__init__()
        self.current: subprocess.Popen[bytes] | None = None

    def start(self, workers: int) -> None:
        self.workers = workers

    def close(self) -> None:
        pass

    def _spawn(self, code: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.current = proc
        return proc

    def _run(self, code: str, timeout: float) -> str:
        proc = self._spawn(code)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"interpreter exited with {proc.returncode}")
        return out.decode()

    def _submit(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        raise NotImplementedError("calls are synchronous: see _run")

    def worker_pids(self) -> list[int]:
        return []

    def call_noop(self, watchdog: float = 30.0) -> int:
        self.last_pid = int(self._run(NOOP, watchdog))
        return self.last_pid

    def warm(self) -> float:
        t0 = time.perf_counter()
        self.call_noop()
        return ms_since(t0)

    def recycle(self, watchdog: float = 10.0) -> float:
        return self.warm()

    def timeout_pair(self, timeout: float) -> tuple[float, float]:
        t0 = time.perf_counter()
        proc = self._spawn(SPIN)
        try:
            proc.communicate(timeout=timeout)
            raise RuntimeError("spin returned")
        except subprocess.TimeoutExpired:
            t_err = time.perf_counter()
        proc.kill()
        proc.wait()
        self.call_noop()
        t_next = time.perf_counter()
        deadline = t0 + timeout
        return (t_err - deadline) * 1000.0, (t_next - deadline) * 1000.0

    def throughput(self, batch: int) -> float:
        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            t0 = time.perf_counter()
            list(ex.map(lambda _: self._run(NOOP, 30.0), range(batch)))
            return batch / (time.perf_counter() - t0)

    def chaos_target(self, rng: Any) -> Callable[[], int | None]:
        # The only process to kill is the one serving the call in flight.
        return lambda: self.current.pid if self.current is not None and self.current.poll() is None else None

    def chaos(self, killer: Killer, rng: Any, timeout: float, grace: float) -> dict[str, Any]:
        self.current = None
        killer.arm(self.chaos_target(rng), rng.uniform(0.0, self.chaos_window))
        try:
            self._run(BLOB if rng.random() < 0.5 else NOOP, timeout + grace)
            outcome = "ok"
        except subprocess.TimeoutExpired:
            outcome = "hang"
        except Exception as exc:
            outcome = f"error:{type(exc).__name__}"
        return {"outcome": outcome, "killed": killer.result(timeout=self.chaos_window + 5.0)}
