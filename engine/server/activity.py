"""The server's own short memory of invocations, for the console.

Two bounded structures, both fed by ``record()`` once per completed
invocation (on the server's one event loop, so no locks):

* per tenant, the last ``RECENT_PER_TENANT`` invocations (id, script or
  operation, outcome code, HTTP status, duration, time);
* one ring of ``BUCKETS`` time buckets of ``BUCKET_SECONDS`` each (15 minutes
  at 10 s), each holding the count per outcome and a log-scale latency
  histogram, from which percentiles are read.  A bucket is a fixed-size
  array whatever the traffic: memory does not grow with calls.

This is not a metrics system (``/metrics`` is, for Prometheus): it is what the
operator view draws so that a fresh node with no Prometheus still shows "the
last minutes".  Tenant and outcome values are bounded: tenants are loaded
folder names, outcomes the engine's fixed error codes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Callable

__all__ = ["Activity", "BUCKET_SECONDS", "BUCKETS", "RECENT_PER_TENANT"]

#: Invocations remembered per tenant for "recent invocations".
RECENT_PER_TENANT = 50
#: Width of one time bucket, seconds.
BUCKET_SECONDS = 10
#: Buckets kept: 90 x 10 s = the last 15 minutes.
BUCKETS = 90
#: Latency histogram: bucket i holds durations up to LAT_MIN_MS * LAT_GROWTH**i.
#: 1.2x steps from 0.05 ms: a percentile read from it is at most 20 % above
#: the true value; 80 steps reach past 100 s (beyond any deadline).
LAT_MIN_MS = 0.05
LAT_GROWTH = 1.2
LAT_STEPS = 80
PERCENTILES = (50, 90, 99)


def _lat_index(ms: float) -> int:
    if ms <= LAT_MIN_MS:
        return 0
    return min(LAT_STEPS - 1, math.ceil(math.log(ms / LAT_MIN_MS, LAT_GROWTH)))


def _lat_bound(index: int) -> float:
    return LAT_MIN_MS * LAT_GROWTH ** index


class _Bucket:
    __slots__ = ("start", "outcomes", "hist", "count")

    def __init__(self, start: int) -> None:
        self.start = start
        self.outcomes: dict[str, int] = {}
        self.hist = [0] * LAT_STEPS
        self.count = 0

    def add(self, outcome: str, ms: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.hist[_lat_index(ms)] += 1
        self.count += 1


def _percentiles(hist: list[int], count: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        if not count:
            out[f"p{p}"] = None
            continue
        rank = math.ceil(count * p / 100)
        seen = 0
        for i, n in enumerate(hist):
            seen += n
            if seen >= rank:
                out[f"p{p}"] = round(_lat_bound(i), 3)
                break
    return out


class Activity:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._ring: deque[_Bucket] = deque(maxlen=BUCKETS)

    def record(self, tenant: str, *, invocation_id: str, kind: str, name: str, outcome: str,
               status: int, duration_ms: float) -> None:
        now = self._clock()
        entry = {"invocation_id": invocation_id, "kind": kind, "name": name, "outcome": outcome,
                 "status": status, "duration_ms": round(duration_ms, 3),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        self._recent.setdefault(tenant, deque(maxlen=RECENT_PER_TENANT)).appendleft(entry)
        start = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
        if not self._ring or self._ring[-1].start < start:
            self._ring.append(_Bucket(start))
        self._ring[-1].add(outcome, duration_ms)

    def recent(self, tenant: str) -> list[dict[str, Any]]:
        return list(self._recent.get(tenant, ()))

    def series(self) -> dict[str, Any]:
        """Every bucket of the window, oldest first, empty ones included."""
        now = int(self._clock() // BUCKET_SECONDS) * BUCKET_SECONDS
        first = now - (BUCKETS - 1) * BUCKET_SECONDS
        by_start = {b.start: b for b in self._ring if b.start >= first}
        buckets = []
        for start in range(first, now + 1, BUCKET_SECONDS):
            b = by_start.get(start)
            hist, count = (b.hist, b.count) if b else ([0] * LAT_STEPS, 0)
            buckets.append({
                "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "count": count,
                "outcomes": dict(b.outcomes) if b else {},
                "latency_ms": _percentiles(hist, count),
            })
        return {"bucket_seconds": BUCKET_SECONDS, "buckets": buckets}
