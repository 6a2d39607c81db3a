"""Prometheus metrics of the operator server (its own registry, not the global one).

Counted by the server as requests complete:

    scriptvisor_invocations_total{tenant,kind,outcome}      kind: script|connection; outcome: ok or error code
    scriptvisor_invocation_duration_seconds{tenant,kind}    histogram of engine-reported duration
    scriptvisor_worker_recycles_total{reason}               every worker exit the engine reports (engine
                                                            events): timeout, crash, recycle, shutdown...
    scriptvisor_rejected_requests_total{tenant,status}      401/403/404/413/415/422/429/503...
    scriptvisor_requests_in_flight{tenant}                  invocations the server is waiting on

Read from the engine at scrape time (``engine.stats()``), so they are never stale:

    scriptvisor_workers{state}                              alive, spare (idle ready workers), busy
    scriptvisor_queue_depth{tenant}                         invocations waiting for a worker

Label values are bounded: tenants are folder names validated on load (unknown
tenants in URLs are never used as labels), outcomes are the fixed error codes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Latency buckets, seconds: warm no-op calls are sub-millisecond, the default deadline is 20 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)


class _EngineCollector(Collector):
    """Gauges read from ``engine.stats()`` when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats() or {}
        except Exception:  # a scrape must never fail because the engine is stopping
            stats = {}
        workers = GaugeMetricFamily("scriptvisor_workers", "Live worker processes by state", labels=["state"])
        counts = summarize_workers(stats)
        for state in ("alive", "spare", "busy"):
            workers.add_metric([state], counts[state])
        yield workers
        depth = GaugeMetricFamily("scriptvisor_queue_depth", "Invocations waiting for a worker", labels=["tenant"])
        for tenant, info in sorted(_tenants(stats).items()):
            depth.add_metric([tenant], float(_num(info, "queued", "queue", "queue_depth")))
        yield depth
        # psutil figures per tenant (summed over its workers; per-pid labels
        # would churn with every recycle).
        memory = GaugeMetricFamily("scriptvisor_worker_memory_bytes",
                                   "Memory of a tenant's live workers (rss, and uss: memory unique to them)",
                                   labels=["tenant", "kind"])
        cpu = GaugeMetricFamily("scriptvisor_worker_cpu_seconds",
                                "CPU time used by a tenant's live workers", labels=["tenant"])
        for tenant, info in sorted(_tenants(stats).items()):
            workers = [w for w in (info.get("workers") or []) if isinstance(w, dict)]
            for kind in ("rss", "uss"):
                memory.add_metric([tenant, kind], float(sum(_num(w, kind) for w in workers)))
            cpu.add_metric([tenant], float(sum(_num(w, "cpu_s") for w in workers)))
        yield memory
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
    """alive/spare/busy worker counts from ``engine.stats()``."""
    alive = spare = busy = 0
    for info in _tenants(stats).values():
        workers = info.get("workers") if isinstance(info, dict) else None
        if isinstance(workers, (list, tuple)):
            for w in workers:
                state = str(w.get("state", "")).lower() if isinstance(w, dict) else ""
                alive += 1
                if state in ("idle", "ready", "spare"):
                    spare += 1
                elif state in ("busy", "running"):
                    busy += 1
    return {"alive": float(alive), "spare": float(spare), "busy": float(busy)}


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
        if stats is not None:
            r.register(_EngineCollector(stats))

    def observe(self, tenant: str, kind: str, outcome: str, seconds: float) -> None:
        self.invocations.labels(tenant, kind, outcome).inc()
        self.duration.labels(tenant, kind).observe(max(0.0, seconds))

    def on_engine_event(self, event: dict[str, Any]) -> None:
        """Engine listener: count every worker that ended, by the engine's reason."""
        if event.get("event") == "worker_exit":
            self.recycles.labels(str(event.get("reason") or "unknown")[:40]).inc()

    def reject(self, tenant: str, status: int) -> None:
        self.rejected.labels(tenant, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
