"""Review of pipelining (a reviewer who had not seen the code attacked its promises; fake rig: tests/engine/fakes.py)."""

from __future__ import annotations

import pytest

from scriptvisor.engine.config import TenantLimits
from scriptvisor.engine.supervisor import MAX_BEHIND


def _warm(rigs, **kw):
    kw.setdefault("limits", TenantLimits(timeout=5.0, max_concurrency=1))
    kw.setdefault("spares_per_tenant", 0)
    rig = rigs(auto=False, **kw)
    warm = rig.submit("acme", 0)
    worker = next(w for w in rig.live() if warm.id in w.pending)
    worker.answer()
    rig.settle()
    assert warm.result.ok
    return rig, worker


def _submit(rig, x, timeout=None, starts="submit"):
    job = rig.sup.submit("acme", path="s.py", source="def s(x, callback):\n    callback(None, x)\n",
                         function="s", args=[x], configuration={}, timeout=timeout,
                         timeout_starts=starts)
    rig.settle()
    return job


def _run_all(rig, jobs, limit=200):
    """Answer every pending call on every live worker, oldest first, until all are done."""
    for _ in range(limit):
        if all(j.done for j in jobs):
            return
        moved = False
        for w in rig.live():
            if w.pending:
                w.answer()
                moved = True
        rig.settle()
        if not moved:
            rig.advance(0.001)
    raise AssertionError("jobs never finished")


@pytest.mark.parametrize("starts", ["submit", "start"])
def test_calls_behind_a_timed_out_call_keep_submission_order_with_a_spare(rigs, starts):
    """Promise 4: max_concurrency=1 runs calls in submission order.

    The head call times out; its worker is killed with MAX_BEHIND calls queued
    behind it, held until the verdict (_await_verdict).  But kill_worker ->
    _close_worker -> _drain_queue already hands the *next queued* call (submitted
    after all those behind) to the tenant's idle spare.  When the verdict then
    requeues the calls behind (they never started), they run after it.
    ``run --batch`` is exactly this setup (spares=1, max_concurrency=1,
    timeout_starts="start")."""
    rig, worker = _warm(rigs, spares_per_tenant=1)
    head = _submit(rig, "head", timeout=0.5, starts=starts)
    rest = [_submit(rig, i, timeout=5.0, starts=starts) for i in range(MAX_BEHIND + 2)]
    assert [m["id"] for m in worker.invokes[1:]] == [head.id] + [j.id for j in rest[:MAX_BEHIND]]
    rig.advance(0.5)  # head's deadline: the worker is SIGKILLed
    assert head.result.code == "timeout"
    worker.die()      # EOF without head's result: those behind never started: requeued
    rig.settle()
    _run_all(rig, rest)
    assert all(j.result.ok for j in rest), [j.result.code for j in rest]
    order = []
    for w in rig.workers:
        if w is worker:
            continue
        order.extend(m["id"] for m in w.invokes)
    order = [i for i in order if i in {j.id for j in rest}]
    # one spare ran everything after the kill: its invoke order is the run order
    assert order == [j.id for j in rest], (order, [j.id for j in rest])


def test_a_call_queued_behind_a_hung_call_is_not_timed_out_while_another_worker_is_free(rigs):
    """Promise 3: a call is never killed for another call's deadline.

    max_concurrency=2: both workers busy.  Had B been pipelined behind one of
    the running calls (H, a script that is usually fast) and H hung, B would
    have waited for H's deadline although the other worker became free: no
    call is taken back from a worker (it may have started it).  So by default
    (``pipeline_concurrent`` off) a tenant with several workers gets no
    pipelining: B waits in the supervisor's queue and the first free worker
    takes it."""
    rig, _ = _warm(rigs, spares_per_tenant=1, limits=TenantLimits(timeout=5.0, max_concurrency=2))
    h = _submit(rig, "h", timeout=1.0)
    x = _submit(rig, "x", timeout=1.0)
    assert len([w for w in rig.live() if w.pending]) == 2  # H and X run on two workers
    b = _submit(rig, "b", timeout=1.0)
    assert not [w for w in rig.live() if b.id in w.pending], "B was sent behind a running call"
    wx = next(w for w in rig.live() if x.id in w.pending)
    wx.answer(x.id)  # the other worker is free now: it takes B
    rig.settle()
    assert b.id in wx.pending
    wx.answer(b.id)
    rig.settle()
    assert b.result.ok and not h.done


def test_with_pipeline_concurrent_a_call_behind_a_hung_one_waits_for_it(rigs):
    """The risk ``EngineConfig.pipeline_concurrent`` accepts, pinned down: a
    call sent behind one that hangs stays there although another worker frees
    up; after the hung call's deadline it is requeued (it never started) and
    runs once, or times out if its own wall clock ran out meanwhile."""
    rig, _ = _warm(rigs, spares_per_tenant=1, pipeline_concurrent=True,
                   limits=TenantLimits(timeout=5.0, max_concurrency=2))
    h = _submit(rig, "h", timeout=1.0)
    x = _submit(rig, "x", timeout=1.0)
    b = _submit(rig, "b", timeout=3.0)
    [wb] = [w for w in rig.live() if b.id in w.pending]
    other = next(w for w in rig.live() if w is not wb and w.pending)
    other.answer()
    rig.advance(0.001)
    assert not b.done and b.id not in other.pending  # B stays behind the call ahead of it
    rig.advance(1.0)  # that call's deadline: its worker is killed
    wb.die()
    rig.settle()
    _run_all(rig, [b])
    assert b.result.ok and rig.count("job_requeued", job=b.id) == 1


def test_calls_are_not_pipelined_past_max_invocations_per_worker(rigs):
    """``max_invocations_per_worker`` recycles a worker after N calls; _retires_after_call
    only checks ``invocations + 1`` (the running call), not the calls already behind it,
    so up to MAX_BEHIND more run in a worker that should have been recycled."""
    rig, worker = _warm(rigs, max_invocations_per_worker=3)
    jobs = [_submit(rig, i) for i in range(6)]
    _run_all(rig, jobs)
    assert all(j.result.ok for j in jobs)
    per_worker = [len(w.invokes) for w in rig.workers]
    assert max(per_worker) <= 3, per_worker


def test_a_requeued_call_whose_deadline_has_passed_is_not_started_on_another_worker(rigs):
    """Promise 3: a call past its deadline must fail ``timeout`` (phase queued), not start.

    Calls behind a head that timed out share (about) its deadline, since their
    deadline may not be earlier.  The verdict requeues them (they never started)
    and _await_verdict.settle -> _drain_queue dispatches them at once, before
    their (already past) queued-deadline timer can fire: dispatch() then sends a
    call with no budget left to the idle spare (it may start: side effects after
    the deadline) and SIGKILLs that healthy worker a moment later ("worker
    recycled"); the calls pipelined behind it on the spare go through the whole
    kill/verdict again."""
    rig, worker = _warm(rigs, spares_per_tenant=1)
    jobs = [_submit(rig, i, timeout=1.0) for i in range(3)]  # same deadline: all pipelined
    assert [m["id"] for m in worker.invokes[1:]] == [j.id for j in jobs]
    spare = next(w for w in rig.live() if w is not worker)
    rig.advance(1.0)  # jobs[0]'s deadline (== the others'): kill
    worker.die()      # EOF, no result: jobs[1:] never started, requeued with no time left
    rig.settle()
    late = [m["id"] for m in spare.invokes if m["id"] in {j.id for j in jobs}]
    assert late == [], f"calls past their deadline were sent to the spare: {late}"
    assert all(j.result.code == "timeout" and j.result.error.get("phase") == "queued" for j in jobs[1:]), \
        [(j.result.code, j.result.error) for j in jobs[1:]]
    assert rig.count("worker_exit", pid=spare.pid) == 0  # the healthy spare is not killed for them


# -- the same order hole through real processes ---------------------------------

STEP = (
    "import sqlite\n"
    "\n"
    "def step(n, slow, callback):\n"
    "    db = global_.get('db')\n"
    "    if db is None:\n"
    "        db = sqlite.connect('runs.db')\n"
    "        db.execute('CREATE TABLE IF NOT EXISTS runs (n INTEGER)')\n"
    "        global_['db'] = db\n"
    "    db.execute('INSERT INTO runs VALUES (?)', [n])\n"
    "    while slow:\n"
    "        pass\n"
    "    callback(None, n)\n"
)


def test_batch_lines_after_a_timed_out_line_run_in_order_real_processes(tmp_path):
    """``run --batch`` setup (spares 1, max_concurrency 1, timeout_starts="start"):
    line 0 (a usually-fast script) hangs to its timeout with lines 1..8 queued
    behind it in its worker; the lines after them must still run after them."""
    import sqlite3

    from scriptvisor.engine import Engine

    from .conftest import make_config

    data = tmp_path / "data"
    data.mkdir()
    with Engine(make_config(state_dir=str(tmp_path / "state"), spares_per_tenant=1)) as eng:
        eng.configure_tenant("order", limits=TenantLimits(timeout=5.0, max_concurrency=1, max_queue=1000),
                             data_dir=str(data))

        def call(n, slow=False):
            return eng.submit("order", path="step.py", source=STEP, function="step", args=[n, slow],
                              timeout=0.5, timeout_starts="start")

        warm = [call(-1 - i) for i in range(10)]
        assert all(r.ok for r in eng.wait_all(warm, 30))
        jobs = [call(0, slow=True)] + [call(n) for n in range(1, MAX_BEHIND + 4)]
        results = eng.wait_all(jobs, 30)
        assert results is not None
        assert results[0].error["code"] == "timeout"
    runs = [n for (n,) in sqlite3.connect(data / "runs.db").execute("SELECT n FROM runs WHERE n >= 0 ORDER BY rowid")]
    assert runs == list(range(0, MAX_BEHIND + 4)), runs


def test_a_call_with_time_left_is_not_lost_to_a_requeued_expired_call_ahead_of_it(rigs):
    """Promise 3 (never killed for another call's deadline).

    B and C were queued behind A; A times out, the worker dies without A's
    result, so B and C never started.  B's deadline (== A's) is spent: it is
    answered ``timeout`` (queued) and never sent again; C, with 4 s left, runs
    on the spare.  (Before the fix B was sent to the spare with no budget left,
    killed there at once, and C, pipelined behind it, was lost as ``crash``.)"""
    rig, worker = _warm(rigs, spares_per_tenant=1)
    a = _submit(rig, "a", timeout=1.0)
    b = _submit(rig, "b", timeout=1.0)
    c = _submit(rig, "c", timeout=5.0)
    spare = next(w for w in rig.live() if w is not worker)
    rig.clock.t += 1.0
    rig.reactor.fire_due()  # a's deadline: kill
    worker.die()
    rig.settle()
    assert b.result.code == "timeout" and b.result.error.get("phase") == "queued"
    assert [m["id"] for m in spare.invokes] == [c.id]
    _run_all(rig, [c])
    assert c.result.ok, (c.result.code, c.result.error)


# -- attacks that held (kept as regression tests) --------------------------------

def _answer_everything(rig, jobs, rounds=20):
    for _ in range(rounds):
        for w in rig.live():
            while w.pending:
                w.answer()
        rig.advance(0.3)
        if all(j.done for j in jobs):
            return


def _invocations(rig, job):
    return sum(1 for w in rig.workers for m in w.invokes if m["id"] == job.id)


@pytest.mark.parametrize("attack", ["result_for_a_call_behind", "second_result", "garbage_frame",
                                    "need_source_behind", "second_ready"])
def test_a_hostile_worker_with_calls_behind_gives_each_call_one_outcome(rigs, attack):
    rig, w = _warm(rigs, spares_per_tenant=1)
    jobs = [_submit(rig, i, timeout=1.0) for i in range(4)]
    fake = {"t": "result", "ok": True, "result": 1, "error": None, "logs": [], "stats": {}}
    if attack == "result_for_a_call_behind":
        w.answer(jobs[1].id)
    elif attack == "second_result":
        w.answer(jobs[0].id)
        w.send(dict(fake, id=jobs[0].id))
    elif attack == "garbage_frame":
        w.sock.sendall(b"SV\x01J\x00\x00\x00\x05{{{{{")
    elif attack == "need_source_behind":
        w.send({"t": "need_source", "id": jobs[1].id})
    else:
        w.send({"t": "ready", "pid": 1})
    rig.settle()
    _answer_everything(rig, jobs)
    assert all(j.done for j in jobs)
    assert all(_invocations(rig, j) == 1 for j in jobs)  # nothing re-sent: it may have started
    assert rig.count("job_requeued") == 0 and not rig.sup._verdicts


def test_zygote_death_requeues_only_the_calls_behind_the_first_one_without_a_result(rigs):
    rig, w = _warm(rigs)
    jobs = [_submit(rig, i) for i in range(MAX_BEHIND + 3)]
    w.answer()  # jobs[0] done; the worker runs jobs[1]
    rig.settle()
    rig.zygote.die()
    rig.settle()
    rig.advance(1.0)
    rig.zygote.hello()
    rig.settle()
    _answer_everything(rig, jobs)
    assert jobs[0].result.ok and jobs[1].result.code == "crash"
    assert all(j.result.ok for j in jobs[2:])
    assert rig.count("job_requeued") == MAX_BEHIND  # the line refilled after jobs[0]
    ran = [m["id"] for x in rig.workers if x is not w for m in x.invokes]
    assert [i for i in ran if i in {j.id for j in jobs}] == [j.id for j in jobs[2:]]


def test_drain_and_stop_with_calls_inside_workers_give_each_one_outcome(rigs):
    rig, w = _warm(rigs)
    jobs = [_submit(rig, i, timeout=1.0) for i in range(MAX_BEHIND + 3)]
    rig.sup.drain()
    rig.settle()
    assert all(j.result.code == "engine_unavailable" for j in jobs[MAX_BEHIND + 1:])
    rig.advance(1.0)  # the running call's deadline while draining: the calls behind await the verdict
    assert jobs[0].result.code == "timeout" and rig.sup._verdicts
    rig.sup.stop()    # no one reads on: crash, never requeued, never a hang
    assert all(j.result.code == "crash" for j in jobs[1:MAX_BEHIND + 1])
