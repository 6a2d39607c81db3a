"""Supervisor-side bookkeeping: a framed channel, a worker handle, a job.

Process bookkeeping (``WorkerHandle``) is kept apart from job bookkeeping
(``Job``) and from pool policy (``engine.supervisor``).  Both state machines
are explicit enums; a terminal state cannot be left (``transition`` raises).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from collections import OrderedDict, deque
from enum import IntEnum
from typing import Any, Callable

from . import protocol
from .result import Result


class IllegalTransition(RuntimeError):
    pass


class WorkerState(IntEnum):
    SPAWNING = 1  # asked the zygote; waiting for its pid and the worker's ready frame
    IDLE = 2      # ready, bound to its tenant, no job
    BUSY = 3      # running exactly one job
    EXITING = 4   # asked to exit (planned recycle); SIGKILL after the grace period
    DEAD = 5      # terminal: killed or gone; socket closed


_WORKER_MOVES = {
    WorkerState.SPAWNING: {WorkerState.IDLE, WorkerState.DEAD},
    WorkerState.IDLE: {WorkerState.BUSY, WorkerState.EXITING, WorkerState.DEAD},
    WorkerState.BUSY: {WorkerState.IDLE, WorkerState.EXITING, WorkerState.DEAD},
    WorkerState.EXITING: {WorkerState.DEAD},
    WorkerState.DEAD: set(),
}


class JobState(IntEnum):
    QUEUED = 1
    RUNNING = 2
    DONE = 3  # terminal


_JOB_MOVES = {
    JobState.QUEUED: {JobState.RUNNING, JobState.DONE},
    # RUNNING -> QUEUED only when the invocation never reached its worker
    # (the worker was already dead when the frame was written): run it elsewhere.
    JobState.RUNNING: {JobState.DONE, JobState.QUEUED},
    JobState.DONE: set(),
}


def _move(what: str, moves: dict[Any, set[Any]], old: Any, new: Any) -> Any:
    """``new`` if the state machine allows ``old -> new``; terminal states allow nothing."""
    if new not in moves[old]:
        raise IllegalTransition(f"{what}: {old.name} -> {new.name}")
    return new


class Channel:
    """A non-blocking framed socket. Writes that do not fit wait for EVENT_WRITE.

    ``send`` never blocks, so a peer that stops reading (a hostile worker)
    cannot stall the supervisor; its backlog is bounded by ``max_backlog``.
    """

    def __init__(self, sock: socket.socket, max_frame: int, max_backlog: int = 64 * 1024 * 1024) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = protocol.FrameDecoder(max_frame)
        self.out: deque[list[Any]] = deque()  # [bytes/memoryview, fd or None]
        self.backlog = 0
        self.max_backlog = max_backlog
        self.closed = False
        #: the peer closed its end and everything it sent has been read
        self.eof = False
        self.want_write: Callable[[bool], None] = lambda on: None

    def _write(self, data: bytes | memoryview, fd: int | None) -> int:
        """Send what the socket takes now. A passed fd travels with the first byte; ours is then closed."""
        if fd is None:
            return self.sock.send(data)
        sent = socket.send_fds(self.sock, [data], [fd])
        os.close(fd)
        return sent

    def _drop_backlog(self) -> None:
        for _data, fd in self.out:
            if fd is not None:
                os.close(fd)
        self.out.clear()
        self.backlog = 0

    def send(self, data: bytes, fd: int | None = None) -> None:
        if self.closed:
            return
        if not self.out:
            try:
                sent = self._write(data, fd)
                fd = None
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self.out.append([data, fd])
            self.backlog += len(data)
            self.want_write(True)
        else:
            self.out.append([data, fd])
            self.backlog += len(data)
        if self.backlog > self.max_backlog:
            raise OSError(errno.ENOBUFS, "peer is not reading its channel")

    def flush(self) -> None:
        """Called on EVENT_WRITE."""
        while self.out:
            data, fd = self.out[0]
            try:
                sent = self._write(data, fd)
                self.out[0][1] = None
            except BlockingIOError:
                return
            except OSError:
                # The peer is gone (EPIPE/ECONNRESET). Drop the backlog; the
                # read side sees EOF and reports the death in the usual way.
                self._drop_backlog()
                break
            self.backlog -= sent
            if sent < len(data):
                self.out[0][0] = memoryview(data)[sent:]
                return
            self.out.popleft()
        self.want_write(False)

    def read(self) -> list[dict[str, Any]] | None:
        """Messages now available; None at EOF. Raises ``protocol.FrameError``."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionResetError:
            # A peer that died with frames of ours unread: the kernel reports
            # this instead of EOF, and only once everything it wrote was read.
            self.eof = True
            return None
        except OSError:
            return None
        if not data:
            self.eof = True
            return None
        return self.decoder.feed(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_backlog()
        self.sock.close()


_job_ids = itertools.count(1)


class Job:
    __slots__ = (
        "id", "tenant", "path_json", "fn_json", "source_json", "hash", "args_json", "config_json",
        "timeout", "submitted", "deadline", "state", "worker", "result", "on_done",
        "debug_code", "resent", "timer", "started", "clock_at_start",
    )

    def __init__(self, tenant: str, path_json: bytes, fn_json: bytes, source_json: bytes, digest: str,
                 args_json: bytes, config_json: bytes, timeout: float,
                 on_done: Callable[["Job"], None] | None = None, debug_code: str | None = None,
                 now: float | None = None) -> None:
        # The call's parts are kept as the JSON bytes the invoke frame is
        # made of: checked once at submission, never re-encoded per send.
        self.id = next(_job_ids)
        self.tenant = tenant
        self.path_json = path_json
        self.fn_json = fn_json
        self.source_json = source_json
        self.hash = digest
        self.args_json = args_json
        self.config_json = config_json
        self.timeout = timeout
        self.submitted = time.monotonic() if now is None else now
        self.deadline = 0.0
        self.state = JobState.QUEUED
        self.worker: WorkerHandle | None = None
        self.result: Result | None = None
        self.on_done = on_done
        self.debug_code = debug_code
        self.resent = False
        self.timer: list[Any] | None = None
        #: when the worker began (or, pipelined, was free to begin) this call
        self.started = 0.0
        #: the wall clock starts when the call starts, not at submission (a
        #: producer that queues many calls on purpose, e.g. ``run --batch``)
        self.clock_at_start = False

    def transition(self, new: JobState) -> None:
        self.state = _move(f"job {self.id}", _JOB_MOVES, self.state, new)

    @property
    def done(self) -> bool:
        return self.state is JobState.DONE


_worker_ids = itertools.count(1)


class WorkerHandle:
    __slots__ = (
        "id", "tenant", "chan", "pid", "pidfd", "state", "job", "behind", "cork", "known_sources",
        "spawned_at", "ready_at", "invocations", "got_ready", "exit_status",
        "exit_reason", "pending_crash", "timers", "boot_timings", "extras",
    )

    def __init__(self, tenant: str, chan: Channel, now: float | None = None) -> None:
        self.id = next(_worker_ids)
        self.tenant = tenant
        self.chan = chan
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.state = WorkerState.SPAWNING
        self.job: Job | None = None
        #: calls whose invoke frames were sent behind ``job`` (pipelining), in
        #: order: the worker starts each only after it has sent the result of
        #: the one before
        self.behind: deque[Job] = deque()
        #: while the supervisor handles a batch of this worker's frames, the
        #: invoke frames it answers with, written together afterwards (None: write at once)
        self.cork: list[tuple[bytes, Job]] | None = None
        #: the worker's source cache, mirrored exactly (same capacity, same
        #: order of use): a source is sent only when the worker lacks it
        self.known_sources: OrderedDict[str, None] = OrderedDict()
        self.spawned_at = time.monotonic() if now is None else now
        self.ready_at = 0.0
        self.invocations = 0
        self.got_ready = False
        self.exit_status: int | None = None
        self.exit_reason: str | None = None
        self.pending_crash: Job | None = None
        #: Deadline entries that name this worker (age, grace, status): all
        #: cancelled when it dies, so nothing keeps a dead worker alive.
        self.timers: list[Any] = []
        self.boot_timings: dict[str, float] = {}
        #: the preloaded extras of the zygote that forked it (its link: Supervisor.zygotes)
        self.extras: tuple[str, ...] = ()

    def transition(self, new: WorkerState) -> None:
        self.state = _move(f"worker {self.id}", _WORKER_MOVES, self.state, new)

    @property
    def alive(self) -> bool:
        return self.state is not WorkerState.DEAD

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "worker_id": self.id, "invocations": self.invocations}
