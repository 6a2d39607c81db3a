"""The supervisor: jobs on tenant-bound workers, within deadlines.

It is the glue of four parts, each with one job:

* ``engine.deadlines.Deadlines``: every timed action (a running job's
  deadline, a queued job's, a retiring worker's grace period, an idle
  worker's age, the zygote's restart) is an entry carrying its own action;
  the reactor's single timer is armed at the earliest one.
* ``engine.zygote_link.ZygoteLink``: a zygote's process and channel, its
  ``hello``, its restart with exponential back-off.  One link per set of
  preloaded extras (``wire.EXTRAS``: the network database drivers, the HTTP
  client): the slim zygote (``self.zygote``, started with the engine) forks
  the workers of tenants that declare no postgres/mysql database and no
  ``[[http]]`` endpoint; any other tenant is routed to the zygote of its set,
  started when such a tenant is first configured (``_link``).  Each link restarts on its own; its death
  takes only the workers it forked.
* ``engine.pools.Pools``: per-tenant bookkeeping (workers, idle stack,
  queue), the spares rule, the global cap and who is evicted for it.
* this module: job dispatch and accounting, and the worker lifecycle in
  verb-named steps (``spawn_worker``, ``dispatch``, ``kill_worker``,
  ``retire_worker``, ``replace_worker``, ``manage_workers``), plus the
  supervisor's own state (``SupervisorState``, a transition table like
  ``engine.worker``'s).

It never blocks and never forks: a reactor (``engine.reactor``) calls the
``_on_*`` handlers when a socket is readable or the deadline timer fires.
The clock and the zygote's process starter are injected, so the scheduling
rules run in unit tests against a fake zygote and fake workers.

At a job's deadline the worker's process is SIGKILLed through its pidfd
(and its process group), the caller gets ``timeout`` at once, and a
replacement is requested from the zygote in the same step.  An invocation
never runs twice: a job goes back to the queue only when its frame provably
never reached the worker (the write failed with the peer already gone);
a worker that dies after that is ``crash``.

Nothing a worker sends is trusted: frames are size-capped JSON validated by
``engine.protocol``; anything else kills the worker with ``protocol_error``.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import signal
import socket
import time
from typing import Any, Callable

from scriptvisor.sandbox import wire
from scriptvisor.sandbox.wire import HttpEndpoint, WorkerPolicy

from . import protocol
from .config import EngineConfig, TenantLimits
from .deadlines import Deadlines
from .dbsessions import DbSessions
from .egress import Egress
from .errors import (
    BadRequest, Crash, EngineUnavailable, InvocationError, Overloaded, ProtocolError, Timeout,
)
from .names import tenant_name_problem
from .pools import MAX_BOOT_FAILURES, Pools, TenantPool
from .result import Result
from .worker import Channel, Job, JobState, WorkerHandle, WorkerState, _move
from .zygote_link import ZygoteLink, ZygoteProcess, popen_zygote

__all__ = ["MAX_BOOT_FAILURES", "Supervisor", "SupervisorState", "TenantPool", "describe_status"]

log = logging.getLogger("scriptvisor.supervisor")

#: How long to wait for the zygote's exit report after a worker's EOF before
#: reporting the crash without an exit status.
STATUS_WAIT = 2.0

#: Why a worker went away -> whether it is replaced at once (planned exits and
#: evictions are not: the pool target decides those).
REPLACED = frozenset({"crash", "timeout", "protocol_error", "zygote_exit"})

#: Most calls queued inside one worker behind its running call (pipelining;
#: ``EngineConfig.pipeline_below_ms`` decides whether any are).
MAX_BEHIND = 8


class SupervisorState(str, enum.Enum):
    NEW = "new"            # constructed, zygote not started
    RUNNING = "running"    # accepting work
    DRAINING = "draining"  # refusing new work; running jobs finish or time out
    STOPPED = "stopped"    # terminal: every worker killed, zygote stopped


_MOVES = {
    SupervisorState.NEW: {SupervisorState.RUNNING, SupervisorState.STOPPED},
    SupervisorState.RUNNING: {SupervisorState.DRAINING, SupervisorState.STOPPED},
    SupervisorState.DRAINING: {SupervisorState.STOPPED},
    SupervisorState.STOPPED: set(),
}


def describe_status(status: int | None) -> dict[str, Any]:
    """Details for a ``crash`` from a raw wait status."""
    if status is None:
        return {"exit_status": None}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        return {"signal": sig, "signal_name": name}
    code = os.WEXITSTATUS(status)
    out: dict[str, Any] = {"exit_code": code}
    if code in wire.EXIT_NAMES:
        out["reason"] = wire.EXIT_NAMES[code]
    return out


_sources: dict[str, tuple[str, bytes]] = {}


def source_parts(source: str) -> tuple[str, bytes]:
    """(sha256, strict JSON bytes) of a script's source, memoised: warm calls
    resend the same text, and re-encoding a few KB of script per call is most
    of what submitting it would cost. ``FrameError`` when it cannot be sent."""
    parts = _sources.get(source)
    if parts is None:
        source_json = wire.json_bytes(source)  # strict: a lone surrogate raises here
        parts = (hashlib.sha256(source.encode("utf-8")).hexdigest(), source_json)
        if len(_sources) >= 1024:
            _sources.clear()
        _sources[source] = parts
    return parts


_names: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def name_parts(path: str, function: str) -> tuple[bytes, bytes]:
    """Strict JSON bytes of a call's script path and function name, memoised like sources."""
    key = (path, function)
    parts = _names.get(key)
    if parts is None:
        parts = (wire.json_bytes(path), wire.json_bytes(function))
        if len(_names) >= 1024:
            _names.clear()
        _names[key] = parts
    return parts


def source_digest(source: str) -> str:
    """sha256 of a script's source (memoised)."""
    return source_parts(source)[0]


class Supervisor:
    def __init__(self, config: EngineConfig, reactor: Any, *,
                 clock: Callable[[], float] = time.monotonic,
                 starter: Callable[[int], ZygoteProcess] = popen_zygote) -> None:
        self.config = config
        self.reactor = reactor
        self.clock = clock
        self.deadlines = Deadlines(clock, self._arm)
        self.pools = Pools(config.limits, spares=config.spares_per_tenant,
                           max_workers=config.max_workers, clock=clock)
        self.starter = starter
        self.zygote = self._make_link(())
        #: every zygote link by the extras it preloads; ``()`` is ``self.zygote``
        self.zygotes: dict[tuple[str, ...], ZygoteLink] = {(): self.zygote}
        self.workers: dict[int, WorkerHandle] = {}   # by worker id, all not DEAD
        self.by_pid: dict[int, WorkerHandle] = {}    # until the zygote reports the exit
        self.state = SupervisorState.NEW
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.counters: dict[str, int] = {}
        self.uidmap: Any = None
        self.am_root = os.geteuid() == 0
        self.dbsessions = DbSessions(self)  # stops a dead worker's database sessions
        #: killed workers' channels still read for the calls queued behind (``_await_verdict``)
        self._verdicts: dict[int, Callable[[bool], None]] = {}
        self.egress: Egress | None = None   # nftables rules per tenant uid (root only)

    # ------------------------------------------------------------------ state
    def _move(self, new: SupervisorState) -> None:
        self.state = _move("supervisor", _MOVES, self.state, new)

    @property
    def running(self) -> bool:
        return self.state is SupervisorState.RUNNING

    @property
    def zygote_ready(self) -> bool:
        return self.zygote.ready

    @property
    def layers(self) -> dict[str, Any]:
        return self.zygote.layers

    @property
    def available(self) -> bool:
        """Accepting work and able to start workers now (what ``/readyz`` reports)."""
        return self.running and self.zygote.ready

    def _make_link(self, extras: tuple[str, ...]) -> ZygoteLink:
        link: ZygoteLink = ZygoteLink(
            self.reactor, self.deadlines, starter=self.starter, extras=extras,
            on_message=lambda msg: self._on_zygote_message(link, msg),
            on_exit=lambda status: self._on_zygote_exit(link, status))
        return link

    def _link(self, pool: TenantPool, start: bool = True) -> ZygoteLink:
        """The zygote link that forks ``pool``'s workers, started if it never was."""
        return self._link_for(pool.extras, start)

    def _link_for(self, extras: tuple[str, ...], start: bool = True) -> ZygoteLink:
        link = self.zygotes.get(extras)
        if link is None:
            link = self.zygotes[extras] = self._make_link(extras)
        if start and not link.enabled and self.state is SupervisorState.RUNNING:
            link.start()
        return link

    def _arm(self, when: float | None) -> None:
        self.reactor.call_at(when, self.deadlines.fire)

    # ------------------------------------------------------------------ events
    def emit(self, event: str, **fields: Any) -> None:
        self.counters[event] = self.counters.get(event, 0) + 1
        if self.listeners:
            fields["event"] = event
            fields["t"] = self.clock()
            for fn in list(self.listeners):
                try:
                    fn(fields)
                except Exception:  # an observer must never break the loop
                    log.exception("event listener failed")

    # ------------------------------------------------------------------ zygote
    def start(self) -> None:
        if self.state is not SupervisorState.NEW:
            raise RuntimeError("supervisor already started")
        os.makedirs(self.config.state_dir, mode=0o711, exist_ok=True)
        if self.am_root and self.config.confine:
            try:
                from .uids import UidMap
            except ImportError:
                self.uidmap = None
            else:
                self.uidmap = UidMap.from_config(self.config)
            if self.uidmap is not None and self.config.egress:
                self.egress = Egress(self.config.state_dir, self.config.uid_base).start()
        self.zygote.start()
        self._move(SupervisorState.RUNNING)
        for extras in self.config.zygote_extras:
            self._link_for(wire.extras_for(extras))
        for pool in self.pools:
            self._link(pool)

    def _on_zygote_message(self, link: ZygoteLink, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "spawned":
            self._on_spawned(msg.get("worker"), msg.get("pid"))
        elif kind == "exited":
            self._on_exited(msg.get("pid"), msg.get("status"))
        elif kind == "failed":
            self._on_spawn_failed(msg.get("worker"), str(msg.get("reason")))
        elif kind == "hello":
            self.emit("zygote_ready", pid=msg.get("pid"), layers=link.layers, flavour=link.flavour,
                      **link.size)
            if self.running:
                for pool in self.pools:
                    self.manage_workers(pool)
        elif kind == "log":
            level = getattr(logging, str(msg.get("level", "info")).upper(), logging.INFO)
            log.log(level, "%s zygote: %s", link.flavour, msg.get("message"))

    def _on_zygote_exit(self, link: ZygoteLink, status: int | None) -> None:
        """A zygote is gone; its workers die with it (PDEATHSIG). The link restarts it."""
        self.emit("zygote_exit", status=status, flavour=link.flavour)
        for w in list(self.workers.values()):
            if w.extras == link.extras:
                self.kill_worker(w, "zygote_exit", Crash("the worker's parent (zygote) died", status=status))
        for pid, w in list(self.by_pid.items()):
            if w.extras == link.extras:
                del self.by_pid[pid]
        if self.running and link.deaths > 1:
            # Not a blip: the restart waits out a back-off. Callers get a
            # clear answer now instead of waiting in a queue for it.
            err = self._unavailable(link)
            for pool in self.pools:
                if pool.extras == link.extras:
                    while pool.queue:
                        self._finish(pool.queue.popleft(), Result.failure(err))

    def _unavailable(self, link: ZygoteLink) -> EngineUnavailable:
        retry = link.retry_after()
        return EngineUnavailable(f"the engine's zygote is restarting; retry in {retry:g} s",
                                 retry_after=retry)

    # ------------------------------------------------------------------ tenants
    def configure_tenant(self, name: str, limits: TenantLimits | None = None,
                         data_dir: str | None = None,
                         http: tuple[HttpEndpoint, ...] | None = None, databases: Any = None,
                         egress: Any = None) -> TenantPool:
        problem = tenant_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        pool = self.pools.get(name)
        changed_http = pool is not None and http is not None and tuple(http) != pool.http
        old_extras = pool.extras if pool is not None else None
        pool = self.pools.configure(name, limits, data_dir, http, databases, egress)
        if old_extras is not None and old_extras != pool.extras:
            # Its next workers come from another zygote: the old one's standby goes.
            self._drop_standby(self.zygotes.get(old_extras), name)
        if self.running:
            self._link(pool)  # a tenant declaring a database: its zygote starts now
        if changed_http and pool.workers:
            # A changed [[http]] declaration must hold for the next call, not
            # whenever the tenant's current workers happen to be recycled.
            self.recycle_tenant(name)
        return pool

    def remove_tenant(self, name: str) -> None:
        """Retire the tenant's idle workers and its standby, and forget it once they are gone.

        Running calls finish (their workers retire after them); queued ones
        still run. A later call for the tenant configures it afresh.
        """
        pool = self.pools.get(name)
        if pool is None:
            return
        pool.removed = True
        for w in list(pool.idle):
            self.retire_worker(w, "evicted")
        self._forget_if_empty(pool)

    def _forget_if_empty(self, pool: TenantPool) -> None:
        if pool.removed and not pool.workers and not pool.queue and not pool.held:
            if self.pools.by_name.get(pool.name) is pool:
                del self.pools.by_name[pool.name]
            self._drop_standby(self._link(pool, start=False), pool.name)

    def _drop_standby(self, link: ZygoteLink | None, tenant: str) -> None:
        if link is not None and link.ready:
            try:
                link.send(wire.encode({"t": "drop_standby", "tenant": tenant}))
            except OSError:
                pass

    def _policy(self, pool: TenantPool, worker_id: int) -> WorkerPolicy:
        uid = gid = None
        if self.uidmap is not None:
            # keyed by the data dir when there is one: its files belong to the
            # uid, so two servers of one tenants folder agree on it and two
            # folders' same-named tenants never share one
            uid = gid = self.uidmap.uid_for(os.path.realpath(pool.data_dir) if pool.data_dir else pool.name)
            if self.egress is not None:
                self.egress.allow(uid, pool.egress)
        return WorkerPolicy(
            tenant=pool.name,
            worker_id=worker_id,
            uid=uid,
            gid=gid,
            # the supervisor's pid keeps two engines on one state dir (the CLI's
            # short-lived ones share the host-wide default) off each other's
            # scratch mount points; a server's state dir is its own anyway
            scratch_dir=os.path.join(self.config.state_dir, "scratch", str(os.getpid()), pool.name, str(worker_id)),
            data_dir=pool.data_dir,
            allowed_ports=tuple(sorted(set(pool.limits.allowed_ports) | {p for _, p in pool.egress})),
            http=pool.http,
            databases=tuple(d.to_policy() for d in pool.databases),
            limits=pool.limits.worker_limits(),
            confine=self.config.confine,
            debug_exec=self.config.debug_exec,
            max_frame=self.config.max_frame,
            standby=self.config.standby,
        )

    # ------------------------------------------------------------------ workers
    def spawn_worker(self, pool: TenantPool) -> WorkerHandle | None:
        link = self._link(pool)
        if not link.ready:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        chan = Channel(ours, self.config.max_frame)
        w = WorkerHandle(pool.name, chan, self.clock())
        w.extras = link.extras
        policy = self._policy(pool, w.id)
        fd = chan.fd
        chan.want_write = lambda on: (self.reactor.add_writer(fd, chan.flush) if on
                                      else self.reactor.remove_writer(fd))
        self.workers[w.id] = w
        pool.workers.add(w)
        self.reactor.add_reader(fd, lambda: self._on_worker_readable(w))
        frame = wire.encode({"t": "spawn", "worker": w.id, "policy": policy.to_wire()})
        try:
            link.send(frame, os.dup(theirs.fileno()))
        except OSError:
            # The zygote is gone; its EOF restarts it and respawns workers.
            theirs.close()
            self._close_worker(w, "boot_failed")
            return None
        theirs.close()
        self.emit("worker_spawn", tenant=pool.name, worker=w.id)
        return w

    def _on_spawned(self, worker_id: Any, pid: Any) -> None:
        w = self.workers.get(worker_id) if type(worker_id) is int else None
        if w is None or type(pid) is not int:
            return
        w.pid = pid
        self.by_pid[pid] = w
        try:
            w.pidfd = os.pidfd_open(pid)
        except OSError:
            w.pidfd = None  # already gone; its EOF and exit report follow
        if w.got_ready and w.state is WorkerState.SPAWNING:
            self._became_ready(w)

    def _on_spawn_failed(self, worker_id: Any, reason: str) -> None:
        w = self.workers.get(worker_id) if type(worker_id) is int else None
        if w is None:
            return
        log.error("spawn of a worker for tenant %s failed: %s", w.tenant, reason)
        self._boot_failed(w, reason)

    def _boot_failed(self, w: WorkerHandle, reason: str) -> None:
        pool = self.pools[w.tenant]
        pool.boot_failures += 1
        pool.boot_error = reason
        self._close_worker(w, "boot_failed")
        if pool.booting_fails:
            err = EngineUnavailable(f"workers for tenant {pool.name!r} fail to start: {reason}")
            while pool.queue:
                self._finish(pool.queue.popleft(), Result.failure(err))
        else:
            self.manage_workers(pool)

    def _became_ready(self, w: WorkerHandle) -> None:
        w.transition(WorkerState.IDLE)
        w.ready_at = self.clock()
        pool = self.pools[w.tenant]
        pool.boot_failures = 0
        if self.config.max_worker_age:
            w.timers.append(self.deadlines.at(w.spawned_at + self.config.max_worker_age,
                                              lambda: self._on_age(w)))
        self.emit("worker_ready", tenant=w.tenant, worker=w.id, pid=w.pid,
                  boot_ms=(w.ready_at - w.spawned_at) * 1000.0, timings=w.boot_timings)
        self._worker_free(w)
        if w.state is WorkerState.BUSY and w.invocations == 0:
            # It took a call that waited for it (a cold tenant's first): the
            # spares follow once that call is answered (_on_result), so their
            # fork and boot take no CPU from it (~1 ms of a cold start here).
            return
        self.manage_workers(pool)  # a cold tenant's spares start once its first worker is ready

    def _on_age(self, w: WorkerHandle) -> None:
        if w.alive and w.state is WorkerState.IDLE and self._should_recycle(w):
            self.retire_worker(w, "age")

    def _worker_free(self, w: WorkerHandle) -> None:
        """``w`` is IDLE with no job: give it the next queued one, or park it."""
        pool = self.pools[w.tenant]
        if pool.removed and not pool.queue:
            pool.idle.append(w)  # retire_worker takes it from the idle list
            self.retire_worker(w, "evicted")
            return
        while pool.queue and pool.has_slot():
            job = pool.queue.popleft()
            if job.done:
                continue
            self.dispatch(w, job)
            return
        pool.park(w)
        self._serve_starved()

    def _drain_queue(self, pool: TenantPool) -> None:
        """A busy slot opened (a worker was killed or retired): hand queued jobs to idle workers."""
        while pool.queue and pool.idle and pool.has_slot():
            w = pool.idle.pop()
            job = pool.queue.popleft()
            if job.done:
                pool.idle.append(w)
                continue
            self.dispatch(w, job)

    def kill_worker(self, w: WorkerHandle, reason: str, error: InvocationError | None = None) -> None:
        """SIGKILL the worker and its process group, close it, fail its job with ``error``."""
        if not w.alive:
            return
        # The pidfd names this process and no other, even if its pid has been
        # reused; the process group (setsid: pgid == pid) is signalled only
        # while the pidfd shows the leader alive, so a stale pgid is never hit.
        # A worker whose pid is not known yet is only ever spawning: closing
        # its socket below makes it exit at its first read.
        if w.pidfd is not None:
            try:
                signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
            except OSError:
                pass
            else:
                try:
                    os.killpg(w.pid, signal.SIGKILL)  # anything it forked despite seccomp
                except OSError:
                    pass
        job = w.job
        behind = [j for j in w.behind if not j.done]
        w.behind.clear()
        held = False
        if behind:
            if reason == "protocol_error" or w.chan.closed or self.state is SupervisorState.STOPPED:
                pass  # nothing more it sent can be read or believed (or no one waits): below
            elif w.chan.eof:
                # Everything it sent has been read and none of it was the
                # result of the call ahead: the worker never started these.
                self._requeue(behind, w)
                behind = []
            else:
                held = True
        hold = self.pools.get(w.tenant) if held else None
        if hold is not None:
            hold.held += 1  # before _close_worker drains the queue: these go first
        self._close_worker(w, reason, keep_channel=held)
        if job is not None and not job.done:
            self._finish(job, Result.failure(error or Crash(f"worker killed: {reason}"),
                                             worker=w.info()))
        if held:
            self._await_verdict(w, job, behind, hold)
        else:
            lost = error if reason == "shutdown" and error is not None else self._lost_behind(reason)
            for nxt in behind:
                self._finish(nxt, Result.failure(lost, worker=w.info()))

    def _lost_behind(self, reason: str) -> Crash:
        return Crash(f"worker killed ({reason}) while this call was queued in it behind another; "
                     "it may have started, so it is not run again", reason=reason, pipelined=True)

    def _requeue(self, jobs: list[Job], w: WorkerHandle) -> None:
        """Calls sent behind another that provably never started: they run elsewhere, once, in order."""
        pool = self.pools.get(w.tenant)
        for job in reversed(jobs):
            if job.done:
                continue
            job.worker = None
            job.transition(JobState.QUEUED)
            if pool is None or not self.running:
                self._finish(job, Result.failure(EngineUnavailable("the engine is not accepting work")))
                continue
            if job.deadline and job.deadline <= self.clock():
                # its wall clock ran out while it waited in the dead worker: it
                # never started, and it is not started now
                self._finish(job, Result.failure(self._queued_timeout(job)))
                continue
            self._enqueue(pool, job, job.deadline, front=True)
            self.emit("job_requeued", tenant=job.tenant, job=job.id, worker=w.id)

    def _await_verdict(self, w: WorkerHandle, head: Job | None, behind: list[Job],
                       held: TenantPool | None) -> None:
        """``w`` was killed with ``behind`` queued after ``head``: did any of them start?

        The worker sends a call's result before it starts the next one, and
        what a dead process wrote stays readable in the socket. So the channel
        is read to its EOF (the process and its group are gone): a result for
        ``head`` means the calls behind may have started (``crash``); none
        means they never did, and they run elsewhere. Not settled within
        ``STATUS_WAIT`` (something still holds the socket open): ``crash``.
        """
        chan = w.chan
        fd = chan.fd
        head_id = head.id if head is not None else None
        timer: list[Any] = []

        def settle(started: bool) -> None:
            if chan.closed:
                return
            self._verdicts.pop(fd, None)
            if held is not None:
                held.held -= 1
            self.reactor.remove_reader(fd)
            self.deadlines.cancel(timer[0] if timer else None)
            chan.close()
            if started:
                for job in behind:
                    if not job.done:
                        self._finish(job, Result.failure(self._lost_behind(w.exit_reason or "crash"),
                                                         worker=w.info()))
            else:
                self._requeue(behind, w)
            pool = self.pools.get(w.tenant)
            if pool is not None and self.running:
                if pool.queue:
                    self._drain_queue(pool)
                    self.manage_workers(pool)
                self._forget_if_empty(pool)

        def on_readable() -> None:
            try:
                messages = chan.read()
            except wire.FrameError:
                settle(True)
                return
            if messages is None:
                settle(not chan.eof)
                return
            for raw in messages:
                if type(raw) is dict and raw.get("t") == "result" and raw.get("id") == head_id:
                    settle(True)
                    return

        timer.append(self.deadlines.after(STATUS_WAIT, lambda: settle(True)))
        self._verdicts[fd] = settle
        self.reactor.add_reader(fd, on_readable)

    def _close_worker(self, w: WorkerHandle, reason: str, keep_channel: bool = False) -> None:
        if not w.alive:
            return
        w.transition(WorkerState.DEAD)
        w.exit_reason = reason
        # Every deadline naming this worker goes now, so nothing keeps a dead
        # worker (and its channel) alive until a 3600 s age timer runs out.
        for d in w.timers:
            self.deadlines.cancel(d)
        w.timers.clear()
        self.reactor.remove_reader(w.chan.fd)
        self.reactor.remove_writer(w.chan.fd)
        if not keep_channel:
            w.chan.close()
        if w.pidfd is not None:
            os.close(w.pidfd)
            w.pidfd = None
        self.workers.pop(w.id, None)
        self.dbsessions.closed(w, reason)
        pool = self.pools.get(w.tenant)
        if pool is not None:
            pool.forget(w)
        self.emit("worker_exit", tenant=w.tenant, worker=w.id, pid=w.pid, reason=reason)
        if pool is not None and reason == "evicted" and not pool.workers:
            # The tenant lost its last worker to make room: its standby goes too.
            self._drop_standby(self.zygotes.get(w.extras), pool.name)
        if pool is not None and self.running:
            self._drain_queue(pool)
            if reason in REPLACED:
                self.replace_worker(pool)
            self.manage_workers(pool)
        if pool is not None:
            self._forget_if_empty(pool)

    def _on_exited(self, pid: Any, status: Any) -> None:
        if type(pid) is not int:
            return
        w = self.by_pid.pop(pid, None)
        if w is None:
            return
        w.exit_status = status if type(status) is int else None
        if w.alive:
            # Dead but not yet seen as EOF: drain what it wrote before dying.
            for _ in range(64):
                if not w.alive:
                    break
                self._on_worker_readable(w)
            if w.alive:
                self._worker_gone(w)
        elif w.pending_crash is not None:
            self._report_crash(w)

    def _report_crash(self, w: WorkerHandle) -> None:
        job, w.pending_crash = w.pending_crash, None
        if job is not None:
            self._finish(job, Result.failure(self._crash(w), worker=w.info()))

    def _crash(self, w: WorkerHandle) -> Crash:
        details = describe_status(w.exit_status)
        if "signal_name" in details:
            what = f"killed by {details['signal_name']}"
            if details["signal_name"] == "SIGXCPU":
                what += " (CPU time limit)"
            elif details["signal_name"] == "SIGKILL":
                what += " (out of memory, or killed from outside)"
        elif details.get("exit_code") is not None:
            what = f"exited with status {details['exit_code']}"
        else:
            what = "died (exit status unknown)"
        return Crash(f"worker {what}", **details)

    def _worker_gone(self, w: WorkerHandle) -> None:
        """EOF on a worker's channel: it died or closed its end on purpose."""
        if w.state is WorkerState.SPAWNING and not w.got_ready:
            status = w.exit_status
            if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                # Killed from outside (or by the OOM killer) while booting: not
                # a boot error of the tenant's workers, so replace it one for one.
                self._close_worker(w, "crash")
                return
            self._boot_failed(w, f"worker exited before it was ready ({describe_status(status)})")
            return
        if w.state is WorkerState.EXITING:
            self._close_worker(w, w.exit_reason or "planned")
            return
        job = w.job
        behind = [j for j in w.behind if not j.done]
        w.behind.clear()
        if behind:
            if w.chan.eof:
                # every frame it wrote was read, and the call ahead of these
                # has no result: the worker never started them
                self._requeue(behind, w)
            else:
                for nxt in behind:
                    self._finish(nxt, Result.failure(self._lost_behind("crash"), worker=w.info()))
        status_known = w.exit_status is not None or w.pid is None
        if w.pid is not None and w.exit_status is None:
            # Make sure it is really gone (a hostile worker may just close its socket).
            if w.pidfd is not None:
                try:
                    signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
                except OSError:
                    pass
        self._close_worker(w, "crash")
        if job is not None and not job.done:
            # The invoke frame was written: the call may have started. It is
            # reported, never run again.
            if status_known or w.pid not in self.by_pid:
                self._finish(job, Result.failure(self._crash(w), worker=w.info()))
            else:
                w.pending_crash = job
                # w is DEAD and its other timers are gone; this one holds it
                # only until the zygote's exit report or STATUS_WAIT.
                self.deadlines.after(STATUS_WAIT, lambda: self._report_crash(w))

    def _on_worker_readable(self, w: WorkerHandle) -> None:
        if not w.alive:
            return
        # The calls this batch of frames makes us send to ``w`` (the next
        # ones, pipelined behind a result) go out in one write.
        w.cork = []
        try:
            self._read_worker(w)
        finally:
            corked, w.cork = w.cork, None
            if corked and w.alive:
                # (a join of one frame is that frame, not a copy)
                self._write(w, b"".join([f for f, _ in corked]), [j for _, j in corked])

    def _read_worker(self, w: WorkerHandle) -> None:
        try:
            messages = w.chan.read()
        except wire.FrameError as exc:
            self.kill_worker(w, "protocol_error", ProtocolError(
                f"worker sent a bad frame: {exc.message}", reason=exc.reason))
            return
        if messages is None:
            self._worker_gone(w)
            return
        for raw in messages:
            if not w.alive:
                return
            try:
                msg = protocol.parse_worker_message(raw)
            except wire.FrameError as exc:
                self.kill_worker(w, "protocol_error", ProtocolError(
                    f"worker sent a bad message: {exc.message}", reason=exc.reason))
                return
            if isinstance(msg, protocol.WorkerResult):
                self._on_result(w, msg)
            elif isinstance(msg, protocol.DbSession):
                self.dbsessions.opened(w, msg)
            elif isinstance(msg, protocol.NeedSource):
                job = w.job
                if job is None or job.id != msg.id or job.resent or w.behind:
                    # (with a call sent behind it, a resend would run out of
                    # order; the mirrored source cache means an honest worker
                    # never asks then)
                    self.kill_worker(w, "protocol_error", ProtocolError("unexpected need_source"))
                    return
                job.resent = True
                w.known_sources.pop(job.hash, None)
                self._send_invoke(w, job)
            else:  # Ready
                if w.state is not WorkerState.SPAWNING or w.got_ready:
                    self.kill_worker(w, "protocol_error", ProtocolError("unexpected ready frame"))
                    return
                w.got_ready = True
                w.boot_timings = msg.timings
                if w.pid is not None:
                    self._became_ready(w)

    def _on_result(self, w: WorkerHandle, msg: protocol.WorkerResult) -> None:
        job = w.job
        if w.state is not WorkerState.BUSY or job is None or job.id != msg.id:
            self.kill_worker(w, "protocol_error", ProtocolError("result for a job the worker does not hold"))
            return
        w.job = None
        w.invocations += 1
        now = self.clock()
        pool = self.pools.get(w.tenant)
        if pool is not None and job.debug_code is None:
            pool.note_duration(job.hash, now - job.started)
        info = w.info()
        info["cpu_ms"] = msg.stats.get("cpu_ms")
        info["maxrss_kb"] = msg.stats.get("maxrss_kb")
        if "compile_ms" in msg.stats:
            info["compile_ms"] = msg.stats["compile_ms"]
        began = job.started if job.clock_at_start else job.submitted
        result = Result(msg.ok, msg.result, msg.error, msg.logs, (now - began) * 1000.0, info)
        if w.invocations == 1 and pool is not None and self.running:
            # The spares _became_ready left until this first call was
            # answered; counted while this worker is still busy, so the pool
            # ends as it would have (the next call finds an idle spare).
            self.manage_workers(pool)
        if w.behind:
            # The worker sent this result and went on to the call queued
            # behind it: that one is running now, on its own deadline.
            nxt = w.behind.popleft()
            w.job = nxt
            nxt.started = now
            if not nxt.deadline:  # its wall clock starts now
                nxt.deadline = now + nxt.timeout
            nxt.timer = self.deadlines.at(nxt.deadline, lambda: self._on_job_deadline(nxt))
            self._finish(job, result)
            if w.alive and w.job is nxt:
                self._pipeline(w)
            return
        # IDLE before the job is reported done, so observers of job_done (a
        # draining close waits for busy == 0) see the pool as it now is.
        w.transition(WorkerState.IDLE)
        self._finish(job, result)
        if self._should_recycle(w):
            pool = self.pools.get(w.tenant)
            self.retire_worker(w, "operator" if pool is not None and w.spawned_at < pool.recycle_before
                               else "planned")
        else:
            # _worker_free expects an IDLE worker that is not in the idle list
            self._worker_free(w)

    def _should_recycle(self, w: WorkerHandle) -> bool:
        cfg = self.config
        pool = self.pools.get(w.tenant)
        if pool is not None and w.spawned_at < pool.recycle_before:
            return True
        if cfg.max_invocations_per_worker and w.invocations >= cfg.max_invocations_per_worker:
            return True
        return bool(cfg.max_worker_age and self.clock() - w.spawned_at >= cfg.max_worker_age)

    def retire_worker(self, w: WorkerHandle, reason: str) -> None:
        """Planned recycle: ask the worker to exit (closing its resources), kill after a grace."""
        if w.state is not WorkerState.IDLE:
            return
        pool = self.pools[w.tenant]
        if w in pool.idle:
            pool.idle.remove(w)
        w.transition(WorkerState.EXITING)
        w.exit_reason = reason
        try:
            w.chan.send(wire.encode({"t": "exit"}))
        except OSError:
            pass
        w.timers.append(self.deadlines.after(self.config.exit_grace, lambda: self._on_grace(w)))
        self.emit("worker_retire", tenant=w.tenant, worker=w.id, pid=w.pid, reason=reason)
        if self.running:
            self._drain_queue(pool)
            self.manage_workers(pool)

    def recycle_tenant(self, tenant: str) -> dict[str, int]:
        """The operator's "recycle": every current worker of ``tenant`` is replaced.

        Idle workers are retired now (a planned exit, replaced by
        ``manage_workers``); busy ones finish their call first and are retired
        when they come back (``_should_recycle``), so no call is cut short.
        """
        pool = self.pools.get(tenant)
        if pool is None:
            return {"retired": 0, "after_call": 0}
        pool.recycle_before = self.clock()
        idle = [w for w in pool.workers if w.state is WorkerState.IDLE]
        busy = pool.count(WorkerState.BUSY)
        for w in idle:
            self.retire_worker(w, "operator")
        self.emit("tenant_recycle", tenant=tenant, retired=len(idle), after_call=busy)
        return {"retired": len(idle), "after_call": busy}

    def _on_grace(self, w: WorkerHandle) -> None:
        if w.alive and w.state is WorkerState.EXITING:
            self.kill_worker(w, w.exit_reason or "planned")

    def replace_worker(self, pool: TenantPool) -> None:
        """A worker died or was killed: start its replacement now, one for one.

        ``manage_workers`` alone would wait until the pool falls below its
        target, which after an external kill of several idle workers means
        waiting for the last one's death to be noticed.
        """
        if pool.booting_fails or pool.removed or not self._link(pool).ready:
            return
        if self.pools.replacement_fits(pool) and self._make_room(pool):
            self.spawn_worker(pool)

    def manage_workers(self, pool: TenantPool) -> None:
        """Keep busy + queued + spares workers for the tenant, within its limits and the cap."""
        if not self.running or pool.booting_fails or not self._link(pool).ready:
            return
        if pool.removed:
            if not pool.queue:
                return
            pool.removed = False  # work arrived for it again
        want, have = self.pools.shortfall(pool)
        while have < want:
            if not self._make_room(pool):
                break
            if self.spawn_worker(pool) is None:
                break
            have += 1

    def _make_room(self, pool: TenantPool) -> bool:
        """True when one more worker fits under the global cap (evicting an LRU idle one)."""
        if self.pools.live_total() < self.pools.max_workers:
            return True
        victim = self.pools.victim(pool)
        if victim is None:
            return False
        self.retire_worker(victim, "evicted")
        return True

    def _serve_starved(self) -> None:
        """A tenant with queued jobs and no worker at all may be waiting on the cap."""
        for pool in self.pools.starved():
            self.manage_workers(pool)

    # ------------------------------------------------------------------ jobs
    def submit(self, tenant: str, *, path: str, source: str, function: str, args: list[Any],
               configuration: dict[str, Any] | None, timeout: float | None,
               on_done: Callable[[Job], None] | None = None, debug_code: str | None = None,
               timeout_starts: str = "submit") -> Job:
        """Queue a call. Its wall clock (``timeout``) runs from submission, so
        time waiting for a worker counts, unless ``timeout_starts="start"``:
        then it runs from the moment the call starts (for a producer that
        queues many calls on purpose and wants each to get its whole timeout)."""
        if timeout_starts not in ("submit", "start"):
            raise ValueError("timeout_starts must be 'submit' or 'start'")
        pool = self.pools.get(tenant) or self.configure_tenant(tenant)
        if timeout is None:
            timeout = pool.limits.timeout
        timeout = float(timeout)
        if not (timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        refused: InvocationError | None = None
        try:
            # Everything a frame must carry is checked here, before the call
            # is queued: strict UTF-8 (a lone surrogate from a login form),
            # JSON values only, and the whole invoke frame within the
            # worker's cap. The error names the argument; nothing is sent.
            path_json, fn_json = name_parts(path, function)
            digest, source_json = source_parts(source)
            args_json, config_json = wire.encode_arguments(
                list(args), dict(configuration or {}),
                source_bytes=len(source_json) + len(path_json) + len(fn_json))
        except wire.ArgumentError as exc:
            refused = BadRequest(exc.message, argument=exc.argument, reason=exc.reason)
        except wire.FrameError as exc:
            refused = BadRequest(f"the script's path, function or source cannot be sent: {exc.message}",
                                 reason=exc.reason)
        if refused is not None:
            return self.refuse(tenant, refused, on_done)
        job = Job(tenant, path_json, fn_json, source_json, digest, args_json, config_json,
                  timeout, on_done, debug_code, now=self.clock())
        job.clock_at_start = timeout_starts == "start"
        pool.last_used = job.submitted
        if not self.running:
            self._finish(job, Result.failure(EngineUnavailable("the engine is not accepting work")))
            return job
        link = self._link(pool)
        if link.backing_off:
            self._finish(job, Result.failure(self._unavailable(link)))
            return job
        if pool.booting_fails:
            pool.boot_failures = MAX_BOOT_FAILURES - 1  # one more try for a new request
        # Spares exist to replace killed workers at once, not to raise the
        # tenant's concurrency: a call beyond max_concurrency waits in the queue.
        while pool.idle and pool.has_slot():
            w = pool.idle.pop()
            if w.state is WorkerState.IDLE:
                self.dispatch(w, job)
                if len(pool.idle) < self.config.spares_per_tenant:
                    self.manage_workers(pool)
                return job
        if len(pool.queue) + pool.pipelined() >= pool.limits.max_queue:
            self._finish(job, Result.failure(Overloaded(
                f"tenant {tenant!r} has {len(pool.queue)} invocations waiting", retry_after=1)))
            return job
        self._enqueue(pool, job, 0.0 if job.clock_at_start else job.submitted + timeout)
        self._pipeline_any(pool)
        if pool.queue:
            self.manage_workers(pool)
        return job

    def _enqueue(self, pool: TenantPool, job: Job, deadline: float, front: bool = False) -> None:
        """Queue ``job`` until ``deadline`` (the caller's wall clock covers waiting
        too); 0: no deadline until it starts (``timeout_starts="start"``)."""
        job.deadline = deadline
        self.deadlines.cancel(job.timer)
        job.timer = self.deadlines.at(deadline, lambda: self._on_queued_deadline(job)) if deadline else None
        if front:
            pool.queue.appendleft(job)
        else:
            pool.queue.append(job)

    def _on_queued_deadline(self, job: Job) -> None:
        if job.state is not JobState.QUEUED:
            return
        pool = self.pools.get(job.tenant)
        if pool is not None:
            try:
                pool.queue.remove(job)
            except ValueError:
                pass
        self._finish(job, Result.failure(self._queued_timeout(job)))

    @staticmethod
    def _queued_timeout(job: Job) -> Timeout:
        """The error of a call whose wall clock ran out before it started."""
        return Timeout(f"no worker became free within the {job.timeout:g} s wall clock",
                       timeout=job.timeout, phase="queued")

    def _on_job_deadline(self, job: Job) -> None:
        w = job.worker
        if job.state is JobState.RUNNING and w is not None and w.job is job:
            self.kill_worker(w, "timeout", Timeout(
                f"invocation exceeded its {job.timeout:g} s wall clock; worker recycled",
                timeout=job.timeout))

    def refuse(self, tenant: str, error: InvocationError,
               on_done: Callable[[Job], None] | None = None) -> Job:
        """A job that fails with ``error`` before it is queued (a request error: nothing runs)."""
        job = Job(tenant, b"null", b"null", b"null", "", b"[]", b"{}", 0.0, on_done, now=self.clock())
        self._finish(job, Result.failure(error))
        return job

    def dispatch(self, w: WorkerHandle, job: Job) -> None:
        w.transition(WorkerState.BUSY)
        w.job = job
        job.transition(JobState.RUNNING)
        job.worker = w
        now = self.clock()
        if job.deadline and job.deadline <= now:
            job.deadline = now  # spent its whole budget in the queue
        elif not job.deadline:
            job.deadline = now + job.timeout
        # A queued job keeps the deadline it got at submission: the caller's
        # wall clock covers waiting for a worker too.
        self.deadlines.cancel(job.timer)
        job.timer = self.deadlines.at(job.deadline, lambda: self._on_job_deadline(job))
        job.started = now
        self._send_invoke(w, job)
        if w.job is job:
            self._pipeline(w)

    def _pipeline(self, w: WorkerHandle) -> None:
        """Send the tenant's next queued calls behind ``w``'s running one, when that cannot hurt.

        A call is queued in a worker only when the calls ahead of it there
        usually finish within ``pipeline_below_ms`` in total (their scripts'
        recent averages), so it waits no longer than a round trip through the
        supervisor would have cost it; only from the head of the queue (order
        is kept), at most ``MAX_BEHIND``, and only when its deadline is not
        earlier than the call's ahead of it: at the running call's deadline the
        ones behind are then either running (their own deadline applies) or
        provably not started (``_await_verdict``).
        """
        limit = self.config.pipeline_below_ms / 1000.0
        head = w.job
        if not limit or head is None or w.state is not WorkerState.BUSY or head.debug_code is not None:
            return
        line = w.behind
        if len(line) >= MAX_BEHIND:
            return
        pool = self.pools.get(w.tenant)
        if pool is None or not pool.queue or pool.removed or pool.held or self._retires_after_call(w, pool):
            return
        if pool.limits.max_concurrency > 1 and not self.config.pipeline_concurrent:
            return
        typical = pool.durations
        ahead = typical.get(head.hash)
        if ahead is None:
            return
        for j in line:
            t = typical.get(j.hash)
            if t is None:
                return
            ahead += t
        last = line[-1] if line else head
        queue = pool.queue
        while queue and len(line) < MAX_BEHIND and ahead < limit and not self._retires_after_call(w, pool):
            job = queue[0]
            if job.done:
                queue.popleft()
                continue
            t = typical.get(job.hash)
            if job.debug_code is not None or t is None or (
                    job.deadline and (not last.deadline or job.deadline < last.deadline)):
                return  # (a fixed deadline never waits behind one not yet known)
            queue.popleft()
            self.deadlines.cancel(job.timer)
            job.timer = None
            job.transition(JobState.RUNNING)
            job.worker = w
            line.append(job)
            self._send_invoke(w, job)
            if not w.alive or w.job is not head:
                return
            ahead += t
            last = job

    def _pipeline_any(self, pool: TenantPool) -> None:
        for w in pool.workers:
            if not pool.queue:
                return
            if w.state is WorkerState.BUSY and len(w.behind) < MAX_BEHIND:
                self._pipeline(w)

    def _retires_after_call(self, w: WorkerHandle, pool: TenantPool) -> bool:
        """Will ``w`` be recycled when its running call ends? Then nothing is queued in it."""
        cfg = self.config
        if w.spawned_at < pool.recycle_before:
            return True
        if cfg.max_invocations_per_worker and w.invocations + 1 + len(w.behind) >= cfg.max_invocations_per_worker:
            return True
        return bool(cfg.max_worker_age and self.clock() - w.spawned_at >= cfg.max_worker_age)

    def _send_invoke(self, w: WorkerHandle, job: Job) -> None:
        """Write ``job``'s frame to ``w``: the running call (``w.job``) or one behind it (``w.behind``)."""
        behind = job is not w.job
        remaining = max(0.001, job.deadline - self.clock()) if job.deadline else job.timeout
        try:
            if job.debug_code is not None:
                frame = wire.encode({"t": "debug_exec", "id": job.id, "code": job.debug_code},
                                    wire.MAX_INBOUND_FRAME)
            else:
                sources = w.known_sources
                known = job.hash in sources
                frame = wire.invoke_frame(job.id, remaining, job.hash, job.path_json, job.fn_json,
                                          None if known else job.source_json, job.args_json,
                                          job.config_json)
                # the worker's cache changes exactly like this when it reads the frame
                if known:
                    sources.move_to_end(job.hash)
                else:
                    sources[job.hash] = None
                    if len(sources) > wire.SOURCE_CACHE:
                        sources.popitem(last=False)
        except wire.FrameError as exc:  # submit checked the sizes: never the worker's fault
            job.worker = None
            self._finish(job, Result.failure(BadRequest(f"the call cannot be sent: {exc.message}",
                                                        reason=exc.reason)))
            if behind:
                w.behind.remove(job)
                return
            w.job = None
            w.transition(WorkerState.IDLE)
            self._worker_free(w)
            return
        if w.cork is not None:
            w.cork.append((frame, job))
        else:
            self._write(w, frame, (job,))

    def _write(self, w: WorkerHandle, data: bytes, jobs: Any) -> None:
        """Write the invoke frames of ``jobs`` (``data``) to ``w``."""
        try:
            w.chan.send(data)
        except (BrokenPipeError, ConnectionResetError):
            # The worker died before it could read the calls (killed while
            # idle, its EOF not yet seen): the write found the peer gone, so
            # they provably never started. Run them on another worker.
            lost = [j for j in jobs if not j.done and j.worker is w]
            if any(j.resent for j in lost):  # need_source resend: the call may have been read
                self.kill_worker(w, "crash")
                return
            for job in lost:
                if job is w.job:
                    w.job = None
                elif job in w.behind:
                    w.behind.remove(job)
            self._requeue(lost, w)
            self._worker_gone(w)
        except OSError as exc:
            self.kill_worker(w, "protocol_error", ProtocolError(f"worker stopped reading: {exc}"))

    def _finish(self, job: Job, result: Result) -> None:
        if job.done:
            return
        job.transition(JobState.DONE)
        self.deadlines.cancel(job.timer)
        job.timer = None
        if not result.duration_ms:
            began = job.started if job.clock_at_start and job.started else job.submitted
            result.duration_ms = (self.clock() - began) * 1000.0
        job.result = result
        job.worker = None
        self.emit("job_done", tenant=job.tenant, job=job.id, code=result.code,
                  duration_ms=result.duration_ms, pid=result.worker.get("pid"))
        if job.on_done is not None:
            try:
                job.on_done(job)
            except Exception:
                log.exception("job completion callback failed")

    def _fail_all_queued(self, err: InvocationError) -> None:
        for pool in self.pools:
            while pool.queue:
                self._finish(pool.queue.popleft(), Result.failure(err))

    # ------------------------------------------------------------------ shutdown
    def drain(self) -> None:
        """Stop accepting work; queued jobs fail, running ones finish or time out."""
        if self.state is SupervisorState.RUNNING:
            self._move(SupervisorState.DRAINING)
            self._fail_all_queued(EngineUnavailable("the engine is shutting down"))

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers.values() if w.state is WorkerState.BUSY)

    def stop(self) -> None:
        """Kill every worker, stop the zygote and wait for it. Idempotent."""
        if self.state is SupervisorState.STOPPED:
            return
        self.drain()
        self._move(SupervisorState.STOPPED)
        for w in list(self.workers.values()):
            self.kill_worker(w, "shutdown", EngineUnavailable("the engine stopped"))
        for link in self.zygotes.values():
            link.stop()
        self.by_pid.clear()
        for settle in list(self._verdicts.values()):
            settle(True)  # no one reads on: what may have started is reported, nothing requeued
        self.deadlines.clear()
        self.dbsessions.close()
        if self.egress is not None:
            self.egress.close()

    # ------------------------------------------------------------------ stats
    def stats(self, *, memory: bool = True) -> dict[str, Any]:
        tenants: dict[str, Any] = {}
        now = self.clock()
        for pool in self.pools:
            ws = []
            for w in pool.workers:
                entry: dict[str, Any] = {"worker_id": w.id, "pid": w.pid, "state": w.state.name.lower(),
                                         "invocations": w.invocations,
                                         "age_s": round(now - w.spawned_at, 3)}
                if memory and w.pid is not None:
                    entry.update(_memory(w.pid))
                ws.append(entry)
            tenants[pool.name] = {"workers": ws, "queued": len(pool.queue),
                                  "pipelined": sum(len(w.behind) for w in pool.workers),
                                  "idle": len(pool.idle), "boot_error": pool.boot_error or None}
        return {"state": self.state.value, "available": self.available,
                "zygote_pid": self.zygote.pid if self.zygote.chan is not None else None,
                "zygote": {"state": self.zygote.state.value, "deaths": self.zygote.deaths,
                           "restarts": self.zygote.restarts},
                "zygotes": {link.flavour: {"pid": link.pid if link.chan is not None else None,
                                           "state": link.state.value, "deaths": link.deaths,
                                           "restarts": link.restarts, **link.size}
                            for link in self.zygotes.values()},
                "layers": self.layers, "tenants": tenants, "counters": dict(self.counters),
                "workers_alive": len(self.workers), "deadlines": len(self.deadlines)}


def _memory(pid: int) -> dict[str, Any]:
    import psutil

    try:
        p = psutil.Process(pid)
        mem = p.memory_full_info()
        cpu = p.cpu_times()
        return {"rss": mem.rss, "uss": mem.uss, "cpu_s": round(cpu.user + cpu.system, 3)}
    except (psutil.Error, OSError):
        return {}
