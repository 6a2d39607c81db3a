"""Prometheus metrics of the operator server (its own registry, not the global one).

Counted by the server as requests complete:

    scriptvisor_invocations_total{tenant,kind,outcome}      kind: script|connection; outcome: ok or error code
    scriptvisor_invocation_duration_seconds{tenant,kind}    histogram of engine-reported duration
    scriptvisor_worker_recycles_total{reason}               every worker exit the engine reports (engine
                                                            events): timeout, crash, recycle, shutdown...
    scriptvisor_rejected_requests_total{tenant,status}      401/403/404/413/415/422/429/503...
    scriptvisor_requests_in_flight{tenant}                  invocations the server is waiting on
    scriptvisor_sse_dropped_subscribers_total{reason}       log streams ended by the server (slow, ...)

Read from the engine at scrape time (``engine.stats()``), so they are never stale:

    scriptvisor_workers{state}                              live workers by state: spawning, idle, busy,
                                                            exiting; the states partition the live
                                                            workers, so sum(scriptvisor_workers) is the
                                                            live count
    scriptvisor_queue_depth{tenant}                         invocations waiting for a worker
    scriptvisor_worker_rss_bytes{tenant}                    resident memory of the tenant's live workers
    scriptvisor_worker_uss_bytes{tenant}                    memory unique to them (what killing them frees)
    scriptvisor_worker_cpu_seconds_total{tenant}            CPU used by the tenant's workers, cumulative:
                                                            a worker's CPU stays counted after it exits

Process and build:

    process_*                                               the server process (prometheus_client's
                                                            ProcessCollector: cpu, rss, fds, start time)
    scriptvisor_build_info{version,python}                  always 1

Label values are bounded: tenants are folder names validated on load (unknown
tenants in URLs are never used as labels), outcomes are the fixed error codes.

Who sees what: ``render(per_tenant=False)`` (a caller without the admin token)
leaves out every series with a ``tenant`` label, so an anonymous scrape learns
the node's health but nothing about its tenants.
"""

from __future__ import annotations

import platform
from typing import Any, Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ServerMetrics", "WORKER_STATES"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets, seconds: warm no-op calls are sub-millisecond, the default deadline is 20 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
#: The live states of ``engine.worker.WorkerState`` (DEAD workers are not in stats()).
WORKER_STATES = ("spawning", "idle", "busy", "exiting")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("scriptvisor")
    except Exception:  # a source tree that is not installed
        return "unknown"


class _CpuLedger:
    """Cumulative worker CPU per tenant, monotonic across worker exits.

    ``engine.stats()`` shows the CPU of live workers only.  At each scrape the
    ledger remembers each live worker's figure; when the engine reports a worker's
    exit its last figure (read once more from the exiting process if it can
    still be read) moves to the tenant's retired total.  The exported value is
    never allowed to go down, even if a worker died between two scrapes.
    """

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, float]] = {}  # worker id -> (tenant, cpu seconds)
        self.retired: dict[str, float] = {}
        self.exported: dict[str, float] = {}

    def on_exit(self, worker: Any, pid: Any, tenant: str) -> None:
        entry = self.seen.pop(worker, None) if isinstance(worker, int) else None
        cpu = entry[1] if entry else 0.0
        if isinstance(pid, int) and pid > 0:
            try:  # a killed worker stays readable until its parent (the zygote) reaps it
                import psutil

                times = psutil.Process(pid).cpu_times()
                cpu = max(cpu, times.user + times.system)
            except Exception:
                pass
        if cpu:
            self.retired[tenant] = self.retired.get(tenant, 0.0) + cpu

    def values(self, stats: dict[str, Any]) -> dict[str, float]:
        live: dict[str, float] = {}
        for tenant, info in _tenants(stats).items():
            total = 0.0
            for w in (info.get("workers") or []) if isinstance(info, dict) else []:
                if not isinstance(w, dict):
                    continue
                cpu = _num(w, "cpu_s")
                wid = w.get("worker_id")
                if isinstance(wid, int):
                    self.seen[wid] = (tenant, max(cpu, self.seen.get(wid, (tenant, 0.0))[1]))
                total += cpu
            live[tenant] = total
        for tenant in set(live) | set(self.retired):
            value = self.retired.get(tenant, 0.0) + live.get(tenant, 0.0)
            self.exported[tenant] = max(value, self.exported.get(tenant, 0.0))
        return dict(self.exported)


class _EngineCollector(Collector):
    """Gauges read from ``engine.stats()`` when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], dict[str, Any]], ledger: _CpuLedger) -> None:
        self._stats = stats
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats() or {}
        except Exception:  # a scrape must never fail because the engine is stopping
            stats = {}
        workers = GaugeMetricFamily(
            "scriptvisor_workers", "Live worker processes by state (the states sum to the live count)",
            labels=["state"])
        counts = summarize_workers(stats)
        for state in WORKER_STATES:
            workers.add_metric([state], counts[state])
        yield workers
        depth = GaugeMetricFamily("scriptvisor_queue_depth", "Invocations waiting for a worker", labels=["tenant"])
        for tenant, info in sorted(_tenants(stats).items()):
            depth.add_metric([tenant], float(_num(info, "queued", "queue", "queue_depth")))
        yield depth
        # psutil figures per tenant (summed over its workers; per-pid labels
        # would churn with every recycle).
        rss = GaugeMetricFamily("scriptvisor_worker_rss_bytes",
                                "Resident memory of a tenant's live workers (shared pages counted in each)",
                                labels=["tenant"])
        uss = GaugeMetricFamily("scriptvisor_worker_uss_bytes",
                                "Memory unique to a tenant's live workers (freed if they exit)", labels=["tenant"])
        for tenant, info in sorted(_tenants(stats).items()):
            ws = [w for w in (info.get("workers") or []) if isinstance(w, dict)]
            rss.add_metric([tenant], float(sum(_num(w, "rss") for w in ws)))
            uss.add_metric([tenant], float(sum(_num(w, "uss") for w in ws)))
        yield rss
        yield uss
        cpu = CounterMetricFamily("scriptvisor_worker_cpu_seconds",
                                  "CPU time used by a tenant's workers, including workers that exited",
                                  labels=["tenant"])
        for tenant, value in sorted(self._ledger.values(stats).items()):
            cpu.add_metric([tenant], round(value, 3))
        yield cpu


def _num(info: Any, *keys: str) -> float:
    if isinstance(info, dict):
        for key in keys:
            value = info.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, (list, tuple)):
                return float(len(value))
    return 0.0


def _tenants(stats: dict[str, Any]) -> dict[str, Any]:
    tenants = stats.get("tenants")
    return tenants if isinstance(tenants, dict) else {}


def summarize_workers(stats: dict[str, Any]) -> dict[str, float]:
    """Live worker counts by state from ``engine.stats()``; plus ``alive``, their sum."""
    counts = dict.fromkeys(WORKER_STATES, 0.0)
    for info in _tenants(stats).values():
        workers = info.get("workers") if isinstance(info, dict) else None
        if isinstance(workers, (list, tuple)):
            for w in workers:
                state = str(w.get("state", "")).lower() if isinstance(w, dict) else ""
                # an unknown state is still a live worker: count it as spawning
                # rather than let the states stop summing to the live count
                counts[state if state in counts else "spawning"] += 1
    counts["alive"] = sum(counts[s] for s in WORKER_STATES)
    return counts


class _Anonymous(Collector):
    """A view of a registry without the series that carry a ``tenant`` label."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if any("tenant" in s.labels for s in family.samples):
                continue
            yield family


class ServerMetrics:
    def __init__(self, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        # *_created series double the output and nothing here reads them
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter(
            "scriptvisor_invocations", "Invocations by tenant and outcome", ["tenant", "kind", "outcome"], registry=r
        )
        self.duration = Histogram(
            "scriptvisor_invocation_duration_seconds", "Invocation duration reported by the engine",
            ["tenant", "kind"], buckets=BUCKETS, registry=r,
        )
        self.recycles = Counter(
            "scriptvisor_worker_recycles", "Worker processes that ended, by reason", ["reason"], registry=r
        )
        self.rejected = Counter(
            "scriptvisor_rejected_requests", "Requests refused before or instead of running", ["tenant", "status"],
            registry=r,
        )
        self.in_flight = Gauge(
            "scriptvisor_requests_in_flight", "Invocations the server is waiting on", ["tenant"], registry=r
        )
        self.sse_dropped = Counter(
            "scriptvisor_sse_dropped_subscribers", "Log streams the server ended (slow readers)", ["reason"],
            registry=r,
        )
        build = Gauge("scriptvisor_build_info", "scriptvisor version and Python (always 1)",
                      ["version", "python"], registry=r)
        build.labels(_version(), platform.python_version()).set(1)
        ProcessCollector(registry=r)
        self._cpu = _CpuLedger()
        if stats is not None:
            r.register(_EngineCollector(stats, self._cpu))
        self._anonymous = _Anonymous(r)

    def observe(self, tenant: str, kind: str, outcome: str, seconds: float) -> None:
        self.invocations.labels(tenant, kind, outcome).inc()
        self.duration.labels(tenant, kind).observe(max(0.0, seconds))

    def on_engine_event(self, event: dict[str, Any]) -> None:
        """Engine listener: count every worker that ended, by the engine's reason."""
        if event.get("event") == "worker_exit":
            self.recycles.labels(str(event.get("reason") or "unknown")[:40]).inc()
            self._cpu.on_exit(event.get("worker"), event.get("pid"), str(event.get("tenant") or "-"))

    def reject(self, tenant: str, status: int) -> None:
        self.rejected.labels(tenant, str(status)).inc()

    def render(self, *, per_tenant: bool = True) -> bytes:
        return generate_latest(self.registry if per_tenant else self._anonymous)
