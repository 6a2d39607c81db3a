"""The console's in-memory aggregates (engine/server/activity.py), with a fake clock."""

from __future__ import annotations

import math

from scriptvisor.engine.server.activity import BUCKETS, BUCKET_SECONDS, RECENT_PER_TENANT, Activity


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _record(act: Activity, tenant: str, outcome: str, ms: float, n: int = 1) -> None:
    for i in range(n):
        act.record(tenant, invocation_id=f"id{i}", kind="script", name="s", outcome=outcome, status=200,
                   duration_ms=ms)


def test_buckets_count_outcomes_and_read_percentiles_within_the_histogram_step() -> None:
    clock = Clock()
    act = Activity(clock)
    for ms in range(1, 101):  # 1..100 ms, one call each
        _record(act, "a", "ok", float(ms))
    _record(act, "b", "timeout", 2000.0, n=3)
    last = act.series()["buckets"][-1]
    assert last["count"] == 103 and last["outcomes"] == {"ok": 100, "timeout": 3}
    exact = sorted([float(ms) for ms in range(1, 101)] + [2000.0] * 3)
    for p in (50, 90, 99):
        true = exact[math.ceil(len(exact) * p / 100) - 1]
        got = last["latency_ms"][f"p{p}"]
        assert true <= got <= true * 1.2, (p, true, got)


def test_the_window_is_a_fixed_number_of_buckets_and_old_ones_fall_out() -> None:
    clock = Clock()
    act = Activity(clock)
    _record(act, "a", "ok", 1.0)
    series = act.series()
    assert series["bucket_seconds"] == BUCKET_SECONDS and len(series["buckets"]) == BUCKETS
    assert series["buckets"][-1]["count"] == 1
    clock.now += BUCKET_SECONDS * BUCKETS  # the call is now older than the window
    series = act.series()
    assert len(series["buckets"]) == BUCKETS and sum(b["count"] for b in series["buckets"]) == 0
    for _ in range(BUCKETS * 3):  # memory stays bounded however long it runs
        clock.now += BUCKET_SECONDS
        _record(act, "a", "ok", 1.0)
    assert len(act._ring) == BUCKETS


def test_recent_invocations_are_per_tenant_newest_first_and_bounded() -> None:
    act = Activity(Clock())
    for i in range(RECENT_PER_TENANT + 10):
        act.record("a", invocation_id=str(i), kind="script", name="s", outcome="ok", status=200, duration_ms=1.0)
    act.record("b", invocation_id="other", kind="connection", name="login", outcome="timeout", status=200,
               duration_ms=5.0)
    recent = act.recent("a")
    assert len(recent) == RECENT_PER_TENANT and recent[0]["invocation_id"] == str(RECENT_PER_TENANT + 9)
    assert [r["invocation_id"] for r in act.recent("b")] == ["other"]
    assert act.recent("nobody") == []
