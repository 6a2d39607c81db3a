"""The supervisor's scheduling rules against a fake zygote, fake workers and a fake clock.

Each test runs in milliseconds: no process is forked, time moves only when
the test says so (``tests/engine/fakes.py``).  The same rules are exercised
through real processes in ``test_lifecycle.py``.
"""

from __future__ import annotations

import gc

import pytest

from scriptvisor.engine.config import TenantLimits
from scriptvisor.engine.deadlines import Deadlines
from scriptvisor.engine.supervisor import SupervisorState
from scriptvisor.engine.worker import IllegalTransition, WorkerState
from scriptvisor.engine.zygote_link import BACKOFF_MAX, ZygoteLink


# -- pools: spares, concurrency, the cap ---------------------------------------

def test_first_call_starts_a_worker_and_one_spare(rigs):
    rig = rigs(spares_per_tenant=1)
    job = rig.submit("acme", 42)
    assert job.result.ok and job.result.result == 42
    assert rig.count("worker_spawn", tenant="acme") == 2
    pool = rig.sup.pools["acme"]
    assert len(pool.idle) == 2 and pool.idle[0].invocations == 0  # the spare waits underneath


def test_a_cold_tenants_spare_is_forked_once_its_first_call_is_answered(rigs):
    """Not while that call runs on the tenant's only worker: the spare's fork and
    boot would take CPU from it (a cold start is one call waiting for one worker)."""
    rig = rigs(auto=False, spares_per_tenant=1)
    job = rig.submit("acme", 42)
    first = next(w for w in rig.workers if w.pending)
    assert rig.count("worker_spawn", tenant="acme") == 1 and not job.done
    first.answer()
    rig.settle()
    assert job.result.result == 42
    assert rig.count("worker_spawn", tenant="acme") == 2  # as many as before: the next call finds one idle
    assert len(rig.sup.pools["acme"].idle) == 2


def test_calls_beyond_max_concurrency_wait_in_the_queue(rigs):
    rig = rigs(auto=False, spares_per_tenant=0, limits=TenantLimits(timeout=5.0, max_concurrency=2))
    jobs = [rig.submit("acme", i) for i in range(3)]
    pool = rig.sup.pools["acme"]
    assert pool.count(WorkerState.BUSY) == 2 and len(pool.queue) == 1
    assert rig.count("worker_spawn") == 2  # no third worker: the limit is concurrency, not workers
    first = next(w for w in rig.workers if w.pending)
    first.answer()
    rig.settle()
    assert len(pool.queue) == 0 and len(first.pending) == 1  # the freed worker took the queued call
    for w in rig.workers:
        while w.pending:
            w.answer()
    rig.settle()
    assert sorted(j.result.result for j in jobs) == [0, 1, 2]
    assert rig.count("worker_spawn") == 2


def test_full_queue_answers_overloaded(rigs):
    rig = rigs(auto=False, spares_per_tenant=0,
               limits=TenantLimits(timeout=5.0, max_concurrency=1, max_queue=1))
    running, queued, refused = (rig.submit("acme", i) for i in range(3))
    assert refused.result.code == "overloaded" and refused.result.error["retry_after"] == 1
    assert not running.done and not queued.done


def test_global_cap_evicts_the_coldest_idle_worker_of_the_least_recent_tenant(rigs):
    rig = rigs(spares_per_tenant=0, max_workers=2)
    rig.submit("t1", 1)
    rig.advance(1.0)
    rig.submit("t2", 2)
    rig.advance(1.0)
    job = rig.submit("t3", 3)
    assert job.result.result == 3
    retired = [e for e in rig.events if e["event"] == "worker_retire"]
    assert [(e["tenant"], e["reason"]) for e in retired] == [("t1", "evicted")]
    assert not rig.live("t1") and rig.live("t2") and rig.live("t3")


def test_a_queued_call_times_out_at_its_own_deadline(rigs):
    rig = rigs(auto=False, spares_per_tenant=0, limits=TenantLimits(timeout=5.0, max_concurrency=1))
    running = rig.submit("acme", 1)
    queued = rig.submit("acme", 2, timeout=1.0)
    rig.advance(0.999)
    assert not queued.done
    rig.advance(0.002)
    assert queued.result.code == "timeout" and queued.result.error["phase"] == "queued"
    assert not running.done  # its own 5 s deadline is far away
    assert rig.sup.pools["acme"].queue == type(rig.sup.pools["acme"].queue)()


def test_a_running_call_is_killed_at_its_deadline_and_replaced(rigs):
    rig = rigs(auto=False, spares_per_tenant=0)
    job = rig.submit("acme", 1, timeout=0.5)
    [worker] = rig.live()
    rig.advance(0.5)
    assert job.result.code == "timeout"
    assert rig.count("worker_exit", reason="timeout") == 1
    assert rig.sup.workers and worker.pid not in {w.pid for w in rig.sup.workers.values()}


# -- crash accounting: never run twice -----------------------------------------

def test_a_worker_that_dies_after_the_call_started_is_crash_and_never_rerun(rigs):
    rig = rigs(auto=False, spares_per_tenant=1)
    job = rig.submit("acme", 7)
    [worker] = [w for w in rig.workers if w.pending]
    worker.die(status=11)  # SIGSEGV, after it read the invoke frame
    rig.settle()
    assert job.result.code == "crash" and job.result.error["signal_name"] == "SIGSEGV"
    invokes = [m for w in rig.workers for m in w.invokes if m["id"] == job.id]
    assert len(invokes) == 1, "the invocation was sent once and never again"
    assert rig.count("job_requeued") == 0


def test_a_call_written_to_an_already_dead_worker_runs_elsewhere_once(rigs):
    rig = rigs(spares_per_tenant=1)
    warm = rig.submit("acme", 1)
    assert warm.result.ok
    warm_worker = next(w for w in rig.workers if w.invokes)
    warm_worker.die(report=False)  # dead, its EOF not yet seen by the supervisor
    job = rig.sup.submit("acme", path="s.py", source="x", function="s", args=[2], configuration={},
                         timeout=None)  # dispatched before the loop runs: the write finds EPIPE
    rig.settle()
    assert job.result.ok and job.result.result == 2
    assert rig.count("job_requeued", job=job.id) == 1
    invokes = [m for w in rig.workers for m in w.invokes if m["id"] == job.id]
    assert len(invokes) == 1 and warm_worker.invokes[-1]["id"] != job.id


def test_workers_that_cannot_boot_stop_being_spawned_after_three_tries(rigs):
    rig = rigs(boot="fail", spares_per_tenant=0)
    job = rig.submit("acme", 1)
    assert job.result.code == "engine_unavailable"
    assert "fail to start" in job.result.error["message"]
    assert rig.count("worker_spawn") == 3
    rig.advance(10.0)
    assert rig.count("worker_spawn") == 3  # nothing spins
    rig.zygote.boot = "ready"
    again = rig.submit("acme", 2)  # a new request gets one more try
    assert again.result.ok


# -- nothing leaks --------------------------------------------------------------

def _alive(type_name):
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


def test_dead_workers_and_finished_jobs_hold_no_deadline(rigs):
    """Issue 14's age-timer leak: 300 timeouts, each killing and replacing a worker."""
    rig = rigs(auto=False, spares_per_tenant=1, max_worker_age=3600.0)
    jobs_before = _alive("Job")
    handles_before = _alive("WorkerHandle")  # other tests' engines may hold some
    for i in range(300):
        job = rig.submit("acme", i, timeout=0.01)
        rig.advance(0.011)
        assert job.result.code == "timeout"
    del job
    assert sum(1 for w in rig.workers if w.closed) >= 300
    assert _alive("WorkerHandle") <= handles_before + len(rig.sup.workers), "dead workers are kept alive"
    assert _alive("Job") <= jobs_before, "finished jobs are kept alive"
    assert len(rig.sup.deadlines) <= len(rig.sup.workers)  # one age timer per live worker
    assert rig.sup.deadlines.size <= 2 * len(rig.sup.deadlines) + Deadlines.COMPACT_AFTER + 2


# -- the zygote: back-off, never give up ----------------------------------------

def test_zygote_restarts_back_off_exponentially_and_never_give_up(rigs):
    rig = rigs()
    assert rig.submit("acme", 1).result.ok
    delays = []
    for _ in range(12):
        before = rig.clock()
        rig.zygote.die()
        rig.settle()
        link = rig.sup.zygote
        if link.backing_off:
            delays.append(link.restart.when - before)
            refused = rig.submit("acme", 2)
            assert refused.result.code == "engine_unavailable"
            assert refused.result.error["retry_after"] >= 1
            assert not rig.sup.available
            rig.advance(link.restart.when - rig.clock())
        else:
            delays.append(0.0)
        assert len(rig.zygotes) == len(delays) + 1  # restarted: never given up
    assert delays[0] == 0.0 and delays[1] == 0.25 and delays[2] == 0.5
    assert all(b >= a for a, b in zip(delays, delays[1:]))
    assert max(delays) == BACKOFF_MAX
    rig.zygote.hello()
    rig.settle()
    assert rig.sup.available
    assert rig.submit("acme", 3).result.result == 3
    # a zygote that stays up long enough starts a fresh series
    rig.advance(61.0)
    rig.zygote.die()
    rig.settle()
    assert not rig.sup.zygote.backing_off and rig.sup.zygote.deaths == 1


def test_backoff_schedule():
    assert [ZygoteLink.backoff(n) for n in range(1, 6)] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert ZygoteLink.backoff(50) == BACKOFF_MAX


def test_calls_queued_during_a_single_zygote_restart_run_after_it(rigs):
    rig = rigs(spares_per_tenant=0)
    assert rig.submit("acme", 1).result.ok
    rig.zygote.die()
    rig.settle()
    job = rig.submit("acme", 2)  # restarting at once, not backing off: it waits
    assert not job.done
    rig.zygote.hello()
    rig.settle()
    assert job.result.result == 2


# -- the supervisor's own state -------------------------------------------------

def test_supervisor_state_moves_only_along_its_table(rigs):
    rig = rigs()
    assert rig.sup.state is SupervisorState.RUNNING
    rig.sup.drain()
    assert rig.sup.state is SupervisorState.DRAINING
    assert rig.submit("acme", 1).result.code == "engine_unavailable"
    with pytest.raises(IllegalTransition):
        rig.sup._move(SupervisorState.RUNNING)
    rig.sup.stop()
    assert rig.sup.state is SupervisorState.STOPPED
    rig.sup.stop()  # idempotent


def test_deadlines_run_in_order_and_cancelled_ones_release_their_action():
    now = [0.0]
    armed = []
    d = Deadlines(lambda: now[0], armed.append)
    ran = []
    d.at(2.0, lambda: ran.append(2))
    one = d.at(1.0, lambda: ran.append(1))
    d.at(3.0, lambda: ran.append(3))
    assert armed[-1] == 1.0
    d.cancel(one)
    assert one.action is None and len(d) == 2
    now[0] = 2.5
    d.fire()
    assert ran == [2] and armed[-1] == 3.0
    now[0] = 3.0
    d.fire()
    assert ran == [2, 3] and armed[-1] is None and len(d) == 0


def test_a_removed_tenant_loses_its_workers_and_comes_back_on_its_next_call(rigs):
    rig = rigs(spares_per_tenant=1, boot="manual")
    job = rig.sup.submit("gone", path="s.py", source="x", function="s", args=[1], configuration={},
                         timeout=None)
    rig.settle()
    [first] = rig.live("gone")  # a cold tenant's first worker boots alone
    first.ready()
    rig.settle()
    assert job.result.ok
    first_, spare = rig.live("gone")  # then its spare
    rig.sup.remove_tenant("gone")  # the spare is still booting
    rig.settle()
    spare.ready()
    rig.settle()
    rig.settle()
    assert not rig.live("gone") and rig.sup.pools.get("gone") is None
    assert rig.count("worker_spawn", tenant="gone") == 2  # no spare was spawned to replace them
    rig.zygote.boot = "ready"
    assert rig.submit("gone", 2).result.result == 2


def test_a_recycled_tenant_gets_its_spare_back(rigs):
    rig = rigs(spares_per_tenant=1)
    assert rig.submit("acme", 1).result.ok
    before = {w.pid for w in rig.live("acme")}
    rig.sup.recycle_tenant("acme")
    rig.settle()
    after = {w.pid for w in rig.live("acme")}
    assert len(after) == 1 and not (after & before)  # every worker replaced: the spare waits


def test_worker_codes_are_error_classes():
    from scriptvisor.engine.errors import CODES, WORKER_CODES

    assert WORKER_CODES <= set(CODES)


# -- pipelining: a second call sent behind a short running one ------------------

def _pipelining_rig(rigs, **kw):
    """One worker, no spare; one call already answered so the script's duration is known (0 s on the fake clock)."""
    kw.setdefault("limits", TenantLimits(timeout=5.0, max_concurrency=1))
    rig = rigs(auto=False, spares_per_tenant=0, **kw)
    warm = rig.submit("acme", 0)
    [worker] = rig.live()
    worker.answer()
    rig.settle()
    assert warm.result.ok
    return rig, worker


def _answer_elsewhere(rig, dead, job):
    [other] = [w for w in rig.live() if w is not dead and job.id in w.pending]
    other.answer(job.id)
    rig.settle()


def test_short_calls_are_sent_behind_the_running_one_and_run_in_order(rigs):
    from scriptvisor.engine.supervisor import MAX_BEHIND
    rig, worker = _pipelining_rig(rigs)
    jobs = [rig.submit("acme", i) for i in range(MAX_BEHIND + 2)]
    pool = rig.sup.pools["acme"]
    sent = [m["id"] for m in worker.invokes[1:]]
    assert sent == [j.id for j in jobs[:MAX_BEHIND + 1]]  # the running call and MAX_BEHIND behind it
    assert list(pool.queue) == jobs[MAX_BEHIND + 1:]
    assert rig.sup.stats()["tenants"]["acme"]["pipelined"] == MAX_BEHIND
    worker.answer()  # the first result: the worker goes on, and the last call is sent behind
    rig.settle()
    assert jobs[0].result.result == 0 and not jobs[1].done and not pool.queue
    assert [m["id"] for m in worker.invokes[1:]] == [j.id for j in jobs]
    while worker.pending:
        worker.answer()
    rig.settle()
    assert [j.result.result for j in jobs] == list(range(MAX_BEHIND + 2))
    assert rig.count("worker_spawn") == 1 and rig.count("job_requeued") == 0


def test_calls_are_queued_in_a_worker_only_while_those_ahead_usually_take_under_the_limit(rigs):
    rig = rigs(auto=False, spares_per_tenant=0, limits=TenantLimits(timeout=5.0, max_concurrency=1))
    rig.submit("acme", 0)
    [worker] = rig.live()
    rig.advance(0.0008)  # 0.8 ms: two of these ahead are within pipeline_below_ms (2 ms), three are not
    worker.answer()
    rig.settle()
    jobs = [rig.submit("acme", i) for i in range(1, 6)]
    assert [m["id"] for m in worker.invokes[1:]] == [j.id for j in jobs[:3]]
    assert list(rig.sup.pools["acme"].queue) == jobs[3:]


def test_nothing_is_sent_behind_a_slow_script(rigs):
    rig = rigs(auto=False, spares_per_tenant=0, limits=TenantLimits(timeout=5.0, max_concurrency=1))
    rig.submit("acme", 0)
    [worker] = rig.live()
    rig.advance(0.05)  # 50 ms: far above pipeline_below_ms
    worker.answer()
    rig.settle()
    a, b = rig.submit("acme", 1), rig.submit("acme", 2)
    assert [m["id"] for m in worker.invokes[1:]] == [a.id]
    assert list(rig.sup.pools["acme"].queue) == [b]


def test_pipelining_can_be_switched_off(rigs):
    rig, worker = _pipelining_rig(rigs, pipeline_below_ms=0)
    a, b = rig.submit("acme", 1), rig.submit("acme", 2)
    assert [m["id"] for m in worker.invokes[1:]] == [a.id]


def test_a_script_never_seen_finishing_gets_nothing_queued_behind_it_nor_is_queued(rigs):
    rig, worker = _pipelining_rig(rigs)
    other = rig.sup.submit("acme", path="o.py", source="def o(x, callback):\n    callback(None, x)\n",
                           function="o", args=[1], configuration={}, timeout=None)
    b = rig.submit("acme", 2)
    rig.settle()
    assert [m["id"] for m in worker.invokes[1:]] == [other.id]
    assert list(rig.sup.pools["acme"].queue) == [b]


def test_a_call_with_an_earlier_deadline_is_not_sent_behind_a_later_one(rigs):
    rig, worker = _pipelining_rig(rigs)
    a = rig.submit("acme", 1, timeout=5.0)
    b = rig.submit("acme", 2, timeout=1.0)
    assert [m["id"] for m in worker.invokes[1:]] == [a.id]
    rig.advance(1.001)
    assert b.result.code == "timeout" and b.result.error["phase"] == "queued" and not a.done


def test_the_call_behind_one_whose_worker_died_before_its_result_runs_elsewhere_once(rigs):
    rig, worker = _pipelining_rig(rigs)
    a, b = rig.submit("acme", 1), rig.submit("acme", 2)
    worker.die(status=11)  # during a: b was read, never started
    rig.settle()
    assert a.result.code == "crash"
    _answer_elsewhere(rig, worker, b)
    assert b.result.ok and b.result.result == 2 and rig.count("job_requeued", job=b.id) == 1
    ran_b = [w for w in rig.workers if any(m["id"] == b.id for m in w.invokes) and w is not worker]
    assert len(ran_b) == 1


def test_the_call_behind_one_whose_result_was_sent_is_crash_and_never_rerun(rigs):
    rig, worker = _pipelining_rig(rigs)
    a, b = rig.submit("acme", 1), rig.submit("acme", 2)
    worker.answer()  # a's result is sent: the worker may have started b
    worker.die(status=11)
    rig.settle()
    assert a.result.ok and a.result.result == 1
    assert b.result.code == "crash" and rig.count("job_requeued") == 0
    assert sum(1 for w in rig.workers for m in w.invokes if m["id"] == b.id) == 1


def test_a_timeout_kill_requeues_the_call_behind_only_once_the_worker_is_gone(rigs):
    rig, worker = _pipelining_rig(rigs)
    a = rig.submit("acme", 1, timeout=0.5)
    b = rig.submit("acme", 2, timeout=1.0)
    rig.advance(0.5)  # a's deadline: the worker is SIGKILLed (a fake pid: the test plays the death)
    assert a.result.code == "timeout" and not b.done
    worker.die()  # EOF: nothing it wrote was a's result, so b never started
    rig.settle()
    _answer_elsewhere(rig, worker, b)
    assert b.result.ok and b.result.result == 2 and rig.count("job_requeued", job=b.id) == 1


def test_a_timeout_kill_that_races_the_running_calls_result_reports_the_call_behind_as_crash(rigs):
    rig, worker = _pipelining_rig(rigs)
    a = rig.submit("acme", 1, timeout=0.5)
    b = rig.submit("acme", 2, timeout=1.0)
    rig.clock.t += 0.5
    worker.answer()          # a finished just as its deadline fired: the result is still unread
    rig.reactor.fire_due()   # the kill
    worker.die()
    rig.settle()
    assert a.result.code == "timeout"
    assert b.result.code == "crash" and b.result.error["pipelined"] is True
    assert rig.count("job_requeued") == 0


def test_a_worker_that_never_closes_its_socket_after_the_kill_leaves_the_call_behind_crash(rigs):
    rig, worker = _pipelining_rig(rigs)
    a = rig.submit("acme", 1, timeout=0.5)
    b = rig.submit("acme", 2, timeout=5.0)
    rig.advance(0.5)
    assert a.result.code == "timeout" and not b.done
    rig.advance(2.0)  # STATUS_WAIT: no EOF, so no proof that b never started
    assert b.result.code == "crash" and rig.count("job_requeued") == 0
    assert rig.sup.stats()["deadlines"] <= 2


def test_the_source_cache_mirror_sends_a_source_again_once_the_worker_has_dropped_it(rigs):
    from scriptvisor.sandbox import wire
    rig = rigs(spares_per_tenant=0)
    def call(n):
        return rig.sup.submit("acme", path="s.py", source=f"def s(x, callback):\n    callback(None, {n})\n",
                              function="s", args=[0], configuration={}, timeout=None)
    for n in range(wire.SOURCE_CACHE + 1):
        call(n)
        rig.settle()
    job = call(0)  # evicted from the worker's cache by the 64 after it
    rig.settle()
    [worker] = rig.live()
    frame = next(m for m in worker.invokes if m["id"] == job.id)
    assert job.result.ok and frame.get("source")
    again = call(0)
    rig.settle()
    assert "source" not in next(m for m in worker.invokes if m["id"] == again.id) or \
        next(m for m in worker.invokes if m["id"] == again.id).get("source") is None


def test_of_the_calls_behind_a_dead_workers_last_result_the_first_is_crash_and_the_rest_run_elsewhere(rigs):
    rig, worker = _pipelining_rig(rigs)
    a, b, c, d = (rig.submit("acme", i) for i in range(1, 5))
    assert len(worker.invokes) == 5  # warm-up, a, and b c d behind it
    worker.answer()  # a's result: the worker went on to b
    worker.die(status=11)
    rig.settle()
    assert a.result.ok and b.result.code == "crash"
    for job in (c, d):
        _answer_elsewhere(rig, worker, job)
    assert (c.result.result, d.result.result) == (3, 4)
    assert rig.count("job_requeued") == 2 and rig.count("job_requeued", job=b.id) == 0


def test_a_call_whose_clock_starts_at_its_start_waits_in_the_queue_without_timing_out(rigs):
    rig = rigs(auto=False, spares_per_tenant=0, limits=TenantLimits(timeout=1.0, max_concurrency=1))
    running = rig.submit("acme", 1)
    [worker] = rig.live()
    queued = rig.sup.submit("acme", path="s.py", source="def s(x, callback):\n    callback(None, x)\n",
                            function="s", args=[2], configuration={}, timeout=None, timeout_starts="start")
    rig.advance(0.9)
    worker.answer(running.id)
    rig.settle()
    assert running.result.ok and not queued.done  # dispatched at 0.9 s: its 1 s runs from there
    rig.advance(0.9)
    assert not queued.done
    rig.advance(0.2)
    assert queued.result.code == "timeout" and queued.result.error.get("phase") != "queued"
    with pytest.raises(ValueError):
        rig.sup.submit("acme", path="s.py", source="x", function="s", args=[], configuration={},
                       timeout=None, timeout_starts="later")


def test_a_pipelined_call_whose_clock_starts_at_its_start_gets_its_deadline_when_promoted(rigs):
    rig, worker = _pipelining_rig(rigs, limits=TenantLimits(timeout=1.0, max_concurrency=1))
    a = rig.submit("acme", 1)
    b = rig.sup.submit("acme", path="s.py", source="def s(x, callback):\n    callback(None, x)\n",
                       function="s", args=[2], configuration={}, timeout=None, timeout_starts="start")
    rig.settle()
    assert [m["id"] for m in worker.invokes[1:]] == [a.id, b.id]
    frame = next(m for m in worker.invokes if m["id"] == b.id)
    assert frame["timeout"] == 1.0
    rig.advance(0.5)
    worker.answer(a.id)
    rig.settle()
    rig.advance(0.9)
    assert not b.done  # promoted at 0.5 s: its deadline is 1.5 s
    worker.answer(b.id)
    rig.settle()
    assert b.result.ok and 899 < b.result.duration_ms < 901


def test_stopping_while_a_killed_workers_queued_calls_await_their_verdict_answers_them(rigs):
    rig, worker = _pipelining_rig(rigs)
    a = rig.submit("acme", 1, timeout=0.5)
    b = rig.submit("acme", 2, timeout=5.0)
    rig.advance(0.5)  # a's deadline: b waits for the killed worker's EOF
    assert a.result.code == "timeout" and not b.done
    rig.sup.stop()
    assert b.done and b.result.code == "crash"
