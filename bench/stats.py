"""Percentile summaries of sample lists, the one shape every figure reports."""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = ["PERCENTILES", "summarize"]

#: Reported percentiles, in the order the report prints them.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)


def _nearest_rank(ordered: list[float], pct: float) -> float:
    # Nearest-rank: a reported percentile is always a value that was measured,
    # never an interpolation between two samples.
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: Iterable[float], digits: int = 4) -> dict[str, Any]:
    """``{"p50", "p90", "p99", "p99.9", "max", "n"}``; values None when n == 0."""
    ordered = sorted(float(s) for s in samples)
    out: dict[str, Any] = {}
    for key, pct in PERCENTILES:
        out[key] = round(_nearest_rank(ordered, pct), digits) if ordered else None
    out["max"] = round(ordered[-1], digits) if ordered else None
    out["n"] = len(ordered)
    return out
