"""Per-worker and per-invocation context that facades may consult.

The runner sets the current ``Invocation`` for the duration of one call;
facades (database, log) read the deadline from it so that connect and
statement timeouts shrink with the time left, and register cleanups on the
``WorkerContext`` so that resources kept in ``global_`` are closed when the
worker is recycled gracefully.

Script code can run with no invocation in progress: a generator's
``finally`` or a script class's ``__del__`` runs when the object is collected,
which may be after its call has ended.  Such code has no deadline, no caller
and nowhere to report to, so every facade that reaches outside the worker
(database, log, network) asks ``require_current(what)`` first and is refused
with ``OutsideInvocation`` there, never served with a default budget.

Nothing here is reachable from a script: scripts only see facade objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from scriptvisor.sandbox.wire import HttpEndpoint, WorkerLimits

__all__ = ["Invocation", "OutsideInvocation", "WorkerContext", "current", "require_current", "worker"]


@dataclass
class WorkerContext:
    """Facts about this worker, fixed at spawn (from the supervisor's policy)."""

    tenant: str
    worker_id: int = 0
    data_dir: str | None = None      # the tenant's data directory (sqlite files live here)
    scratch_dir: str | None = None   # this worker's private writable directory
    allowed_ports: tuple[int, ...] = ()  # TCP ports scripts may connect to (empty: none)
    http: tuple[HttpEndpoint, ...] = ()  # declared [[http]] endpoints (the http facade's)
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    #: Operator-declared databases by name (engine.databases.DatabaseDecl.to_policy):
    #: the only ones the facades open. Holds secrets: never handed to a script.
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Sends one message to the supervisor (set by the worker loop); facades
    #: report their database sessions with it so the supervisor can stop them.
    report: Callable[[dict[str, Any]], None] | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def on_recycle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the worker exits gracefully (planned recycle, shutdown)."""
        self._cleanups.append(fn)

    def run_cleanups(self) -> None:
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception:  # a cleanup failing must not stop the others
                pass


@dataclass
class Invocation:
    """One call in progress."""

    worker: WorkerContext
    deadline: float  # time.monotonic() value at which the supervisor kills us
    log: Callable[[str], None]

    def remaining(self) -> float:
        """Seconds left before the hard kill (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


_worker: WorkerContext | None = None
_current: Invocation | None = None


def set_worker(ctx: WorkerContext | None) -> None:
    global _worker
    _worker = ctx


def worker() -> WorkerContext:
    if _worker is None:
        raise RuntimeError("no worker context (not inside a scriptvisor worker)")
    return _worker


def set_current(inv: Invocation | None) -> None:
    global _current
    _current = inv


def current() -> Invocation:
    if _current is None:
        raise RuntimeError("no invocation in progress")
    return _current


class OutsideInvocation(RuntimeError):
    """A facade was used by script code running with no invocation in progress."""


def require_current(what: str) -> Invocation:
    """The invocation in progress, or ``OutsideInvocation`` naming ``what`` was refused."""
    if _current is None:
        raise OutsideInvocation(
            f"{what} is refused outside an invocation: this script code runs after its call "
            "ended (e.g. a generator's finally or __del__ run when the object was collected), "
            "with no deadline and no caller")
    return _current
