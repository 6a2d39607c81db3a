"""Per-tenant pool bookkeeping: which workers a tenant has, wants, and may lose.

Pure bookkeeping, no I/O: the supervisor asks ``Pools`` how many workers a
tenant should have (``wanted``), whether one more fits under the global cap
and which idle worker to evict for it (``victim``), and which tenants wait
with no worker at all (``starved``).  Nothing here spawns or kills.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator

from scriptvisor.sandbox.wire import HttpEndpoint, extras_for

from .config import TenantLimits
from .worker import Job, WorkerHandle, WorkerState

__all__ = ["MAX_BOOT_FAILURES", "Pools", "TenantPool"]

#: Consecutive boot failures after which a tenant's queued jobs are failed
#: instead of retried (a worker that cannot boot must not spin the loop).
MAX_BOOT_FAILURES = 3


class TenantPool:
    __slots__ = ("name", "limits", "data_dir", "http", "workers", "idle", "queue", "last_used",
                 "boot_failures", "boot_error", "recycle_before", "removed", "databases", "egress",
                 "durations", "_extras", "held")

    def __init__(self, name: str, limits: TenantLimits, data_dir: str | None, now: float,
                 http: tuple[HttpEndpoint, ...] = ()) -> None:
        self.name = name
        self.limits = limits
        self.data_dir = data_dir
        #: declared [[http]] endpoints, as the worker's http facade receives them
        self.http = http
        #: declared [[databases]] (engine.databases.DatabaseDecl, secrets included)
        self.databases: tuple[Any, ...] = ()
        #: (host, port) pairs its workers may reach (engine.egress)
        self.egress: tuple[tuple[str, int], ...] = ()
        self.workers: set[WorkerHandle] = set()
        self.idle: list[WorkerHandle] = []   # LIFO: the warmest worker is reused first
        self.queue: deque[Job] = deque()
        self.last_used = now
        self.boot_failures = 0
        self.boot_error = ""
        #: workers spawned before this (monotonic) are retired when next free
        #: (``Supervisor.recycle_tenant``: the operator's "recycle" action)
        self.recycle_before = 0.0
        #: being removed: no worker is spawned for it; it goes with its last worker
        self.removed = False
        #: script hash -> recent average seconds from start to result (decides pipelining)
        self.durations: dict[str, float] = {}
        self._extras: tuple[Any, Any, tuple[str, ...]] | None = None
        #: killed workers whose queued calls await their verdict: until they
        #: are back in the queue (at its front), nothing later is dispatched,
        #: so calls keep their order
        self.held = 0

    @property
    def extras(self) -> tuple[str, ...]:
        """The preloaded extras its workers need (which zygote forks them); cached per declaration."""
        cached = self._extras
        if cached is None or cached[0] is not self.databases or cached[1] is not self.http:
            extras = extras_for((d.driver for d in self.databases), http=bool(self.http))
            cached = self._extras = (self.databases, self.http, extras)
        return cached[2]

    def note_duration(self, digest: str, seconds: float) -> None:
        """Fold one call's duration into its script's moving average."""
        old = self.durations.get(digest)
        if old is None:
            if len(self.durations) >= 256:
                self.durations.clear()
            self.durations[digest] = seconds
        else:
            self.durations[digest] = old + (seconds - old) * 0.25

    def count(self, state: WorkerState) -> int:
        return sum(1 for w in self.workers if w.state is state)

    def has_slot(self) -> bool:
        """May one more of this tenant's calls run now (``max_concurrency``)?

        Not while calls sent behind a killed worker's last one await their
        verdict: they go back to the front of the queue and run first."""
        return not self.held and self.count(WorkerState.BUSY) < self.limits.max_concurrency

    def pipelined(self) -> int:
        """Calls sent to the tenant's workers behind their running ones."""
        return sum(len(w.behind) for w in self.workers)

    def live(self) -> int:
        """Workers that are not on their way out."""
        return sum(1 for w in self.workers if w.state is not WorkerState.EXITING)

    @property
    def booting_fails(self) -> bool:
        """Its workers keep failing to boot: stop spawning until a new request."""
        return self.boot_failures >= MAX_BOOT_FAILURES

    def park(self, w: WorkerHandle) -> None:
        """An IDLE worker with nothing to do. The idle list is a stack: the
        warmest worker (its caches, its connections in global_) serves next;
        a fresh spare goes to the bottom so it only serves when every warm
        worker is busy."""
        if w.invocations == 0:
            self.idle.insert(0, w)
        else:
            self.idle.append(w)

    def forget(self, w: WorkerHandle) -> None:
        self.workers.discard(w)
        if w in self.idle:
            self.idle.remove(w)


class Pools:
    """All tenants' pools, the spares rule and the global worker cap."""

    def __init__(self, default_limits: TenantLimits, *, spares: int, max_workers: int,
                 clock: Callable[[], float]) -> None:
        self.default_limits = default_limits
        self.spares = spares
        self.max_workers = max_workers
        self.clock = clock
        self.by_name: dict[str, TenantPool] = {}

    def __iter__(self) -> Iterator[TenantPool]:
        return iter(self.by_name.values())

    def __getitem__(self, name: str) -> TenantPool:
        return self.by_name[name]

    def get(self, name: str) -> TenantPool | None:
        return self.by_name.get(name)

    def configure(self, name: str, limits: TenantLimits | None, data_dir: str | None,
                  http: tuple[HttpEndpoint, ...] | None = None, databases: Any = None,
                  egress: Any = None) -> TenantPool:
        pool = self.by_name.get(name)
        if pool is None:
            pool = TenantPool(name, limits or self.default_limits, data_dir, self.clock(), tuple(http or ()))
            self.by_name[name] = pool
        else:
            pool.removed = False
            if limits is not None:
                pool.limits = limits
            if data_dir is not None:
                pool.data_dir = data_dir
            if http is not None:
                pool.http = tuple(http)
        if databases is not None:
            pool.databases = tuple(databases)
        if egress is None and (databases is not None or http is not None):
            # by default exactly what the declarations name (Tenant.egress computes the same)
            egress = [d.endpoint for d in pool.databases if d.endpoint is not None]
            egress += [(address, ep.port) for ep in pool.http for address in ep.addresses]
        if egress is not None:
            pool.egress = tuple(dict.fromkeys((str(h), int(p)) for h, p in egress))
        return pool

    def shortfall(self, pool: TenantPool) -> tuple[int, int]:
        """(workers the tenant should have, workers it has), in one pass (it runs per submit).

        It should have busy + queued + spares, within its concurrency +
        spares: spares exist to replace killed workers at once, not to raise
        the tenant's concurrency (a call beyond max_concurrency waits in the
        queue). It has the workers that are or will be able to serve (busy,
        spawning, idle).
        """
        busy = ready = spawning = 0
        for w in pool.workers:
            state = w.state
            if state is WorkerState.BUSY:
                busy += 1
            elif state is WorkerState.IDLE:
                ready += 1
            elif state is WorkerState.SPAWNING:
                spawning += 1
        have = busy + ready + spawning
        cap = pool.limits.max_concurrency + self.spares
        if not busy and not ready:
            # No ready worker (a cold tenant, or one just recycled): one worker
            # per waiting call, or one spare, boots first; the other spares
            # follow once one is ready (a spare forked and booting beside the
            # first worker takes CPU from the call waiting for it).
            return min(max(len(pool.queue), min(self.spares, 1)), cap), have
        return min(busy + len(pool.queue) + self.spares, cap), have

    def replacement_fits(self, pool: TenantPool) -> bool:
        """One-for-one replacement of a dead worker stays within concurrency + spares."""
        return pool.live() < pool.limits.max_concurrency + self.spares

    def live_total(self) -> int:
        return sum(p.live() for p in self.by_name.values())

    def victim(self, pool: TenantPool) -> WorkerHandle | None:
        """When the cap is reached: the coldest idle worker of the least recently used other tenant."""
        others = [p for p in self.by_name.values() if p is not pool and p.idle]
        if not others:
            return None
        return min(others, key=lambda p: p.last_used).idle[0]

    def starved(self) -> list[TenantPool]:
        """Tenants with queued jobs and no live worker (they may be waiting on the cap)."""
        return [p for p in self.by_name.values() if p.queue and not p.live()]
