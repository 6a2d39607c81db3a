"""A fake zygote, fake workers, a fake clock and a reactor driven by the test.

The supervisor under test is the real one with a real ``Channel`` per worker
on real socketpairs; only the processes are played here, in the test's own
thread: ``FakeZygote`` is what the injected process starter returns (it
answers ``spawn`` with ``spawned`` and keeps the worker's socket), and each
``FakeWorker`` answers frames as the test tells it.  Time moves only when the
test calls ``Rig.advance``, so deadline rules are checked exactly and in
microseconds of real time.  Fake pids are above the kernel's PID_MAX_LIMIT
(2**22), so no signal or pidfd can ever reach a real process.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
from typing import Any, Callable

from scriptvisor.engine.config import EngineConfig, TenantLimits
from scriptvisor.engine.supervisor import Supervisor
from scriptvisor.sandbox import wire

PID_BASE = 1 << 22  # PID_MAX_LIMIT: no real process has a pid at or above it


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeReactor:
    """epoll for the supervisor's sockets; its one timer fires only when the test advances time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ep = select.epoll()
        self.readers: dict[int, Callable[[], None]] = {}
        self.writers: dict[int, Callable[[], None]] = {}
        self.masks: dict[int, int] = {}
        self.timer: tuple[float, Callable[[], None]] | None = None

    def _update(self, fd: int) -> None:
        mask = (select.EPOLLIN if fd in self.readers else 0) | (select.EPOLLOUT if fd in self.writers else 0)
        old = self.masks.get(fd)
        if old is None and mask:
            self.ep.register(fd, mask)
            self.masks[fd] = mask
        elif old is not None and not mask:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            del self.masks[fd]
        elif old is not None and old != mask:
            self.ep.modify(fd, mask)
            self.masks[fd] = mask

    def add_reader(self, fd: int, cb: Callable[[], None]) -> None:
        self.readers[fd] = cb
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, cb: Callable[[], None]) -> None:
        self.writers[fd] = cb
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self.writers.pop(fd, None) is not None:
            self._update(fd)

    def call_at(self, when: float | None, cb: Callable[[], None]) -> None:
        self.timer = None if when is None else (when, cb)

    def pump(self) -> bool:
        """Dispatch every ready socket once; True if anything happened."""
        events = self.ep.poll(0)
        for fd, mask in events:
            if mask & select.EPOLLOUT and fd in self.writers:
                self.writers[fd]()
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and fd in self.readers:
                self.readers[fd]()
        return bool(events)

    def fire_due(self) -> bool:
        if self.timer is not None and self.timer[0] <= self.clock():
            _, cb = self.timer
            self.timer = None
            cb()
            return True
        return False

    def close(self) -> None:
        self.ep.close()


class FakeWorker:
    """The worker's end of its socket. ``auto``: answer invokes with their first argument."""

    def __init__(self, zygote: "FakeZygote", sock: socket.socket, policy: dict[str, Any], pid: int) -> None:
        self.zygote = zygote
        self.sock = sock
        sock.setblocking(False)
        self.policy = policy
        self.pid = pid
        self.decoder = wire.FrameDecoder(wire.MAX_INBOUND_FRAME)
        self.invokes: list[dict[str, Any]] = []   # every invoke frame it read
        self.pending: list[int] = []             # job ids read and not answered
        self.auto = zygote.auto
        self.closed = False
        self.asked_to_exit = False

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(wire.encode(msg))

    def ready(self) -> None:
        self.send({"t": "ready", "pid": self.pid})

    def answer(self, job_id: int | None = None, ok: bool = True) -> None:
        """Answer a call read earlier (the oldest by default) with its first argument."""
        job_id = self.pending.pop(0) if job_id is None else job_id
        if job_id in self.pending:
            self.pending.remove(job_id)
        args = next(m["args"] for m in self.invokes if m["id"] == job_id)
        value = args[0] if args else None
        error = None if ok else {"code": "script_error", "name": "Error", "message": "no"}
        self.send({"t": "result", "id": job_id, "ok": ok, "result": value if ok else None,
                   "error": error, "logs": [], "stats": {"cpu_ms": 0.1}})

    def serve(self) -> bool:
        if self.closed:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.die(status=0)
            return True
        for msg in self.decoder.feed(data):
            if msg["t"] == "invoke":
                self.invokes.append(msg)
                self.pending.append(msg["id"])
                if self.auto:
                    self.answer(msg["id"])
            elif msg["t"] == "exit":
                self.asked_to_exit = True
                self.die(status=0)
        return True

    def die(self, status: int = 9, report: bool = True) -> None:
        """The process ends: its socket closes; the zygote reports the raw wait status."""
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        if report:
            self.zygote.report_exit(self.pid, status)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        return self.status if self.status is not None else 9

    def kill(self) -> None:
        self.status = 9


class FakeZygote:
    """What the injected starter returns; plays the zygote's side of the control socket."""

    def __init__(self, rig: "Rig", fd: int) -> None:
        self.rig = rig
        self.sock = socket.socket(fileno=os.dup(fd))
        self.sock.setblocking(False)
        self.decoder = wire.FrameDecoder(wire.DEFAULT_MAX_FRAME)
        self.fds: list[int] = []
        self.process = FakeProcess(PID_BASE + rig.next_pid())
        self.pid = self.process.pid
        self.auto = rig.auto
        self.boot = rig.boot  # "ready" | "fail" (exit 3 before ready) | "manual"
        self.alive = True
        self.extras: list[str] | None = None  # from the supervisor's first frame, preload

    def hello(self) -> None:
        self.sock.sendall(wire.encode({"t": "hello", "pid": self.pid, "layers": {}}))

    def report_exit(self, pid: int, status: int) -> None:
        if self.alive:
            self.sock.sendall(wire.encode({"t": "exited", "pid": pid, "status": status}))

    def serve(self) -> bool:
        if not self.alive:
            return False
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 64)
        except BlockingIOError:
            return False
        self.fds.extend(fds)
        if not data:
            self.die()
            return True
        for msg in self.decoder.feed(data):
            if msg["t"] == "preload":
                assert self.extras is None, "preload is the first frame, once"
                self.extras = msg["extras"]
            elif msg["t"] == "spawn":
                assert self.extras is not None, "spawn before preload"
                policy = wire.WorkerPolicy.from_wire(msg["policy"])  # the contract holds
                pid = PID_BASE + self.rig.next_pid()
                w = FakeWorker(self, socket.socket(fileno=self.fds.pop(0)), msg["policy"], pid)
                self.rig.workers.append(w)
                self.sock.sendall(wire.encode({"t": "spawned", "worker": msg["worker"], "pid": pid}))
                assert policy.tenant == msg["policy"]["tenant"]
                if self.boot == "ready":
                    w.ready()
                elif self.boot == "fail":
                    w.die(status=wire.EXIT_BOOT_ERROR << 8)
            elif msg["t"] == "stop":
                self.die()
        return True

    def die(self, status: int = 9) -> None:
        """The zygote ends: its workers die with it (PDEATHSIG), unreported."""
        if not self.alive:
            return
        self.alive = False
        self.process.status = status
        for w in self.rig.workers:
            if w.zygote is self:
                w.die(report=False)
        self.sock.close()


class Rig:
    """A supervisor on a fake clock, a test-driven reactor and a fake zygote."""

    def __init__(self, *, auto: bool = True, boot: str = "ready", **config: Any) -> None:
        config.setdefault("limits", TenantLimits(timeout=5.0))
        self.tmp = tempfile.mkdtemp(prefix="sv-fake-")
        config.setdefault("state_dir", self.tmp)
        config.setdefault("confine", False)
        self.config = EngineConfig(**config)
        self.clock = FakeClock()
        self.reactor = FakeReactor(self.clock)
        self.auto = auto
        self.boot = boot
        self.zygotes: list[FakeZygote] = []
        self.workers: list[FakeWorker] = []
        self.events: list[dict[str, Any]] = []
        self._pids = 0
        self.sup = Supervisor(self.config, self.reactor, clock=self.clock, starter=self._start)
        self.sup.listeners.append(self.events.append)
        self.sup.am_root = False  # no uid map: nothing here touches the host
        self.sup.start()
        self.zygote.hello()
        self.settle()

    def next_pid(self) -> int:
        self._pids += 1
        return self._pids

    def _start(self, fd: int) -> FakeProcess:
        z = FakeZygote(self, fd)
        self.zygotes.append(z)
        return z.process

    @property
    def zygote(self) -> FakeZygote:
        return self.zygotes[-1]

    def settle(self) -> None:
        """Let every side act until nothing moves (no time passes)."""
        for _ in range(10_000):
            moved = False
            for z in list(self.zygotes):
                moved |= z.serve()
            for w in list(self.workers):
                moved |= w.serve()
            moved |= self.reactor.pump()
            moved |= self.reactor.fire_due()
            if not moved:
                return
        raise AssertionError("the rig never settled")

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        self.settle()

    def submit(self, tenant: str = "acme", *args: Any, timeout: float | None = None) -> Any:
        job = self.sup.submit(tenant, path="s.py", source="def s(x, callback):\n    callback(None, x)\n",
                              function="s", args=list(args), configuration={}, timeout=timeout)
        self.settle()
        return job

    def live(self, tenant: str | None = None) -> list[FakeWorker]:
        return [w for w in self.workers if not w.closed and (tenant is None or w.policy["tenant"] == tenant)]

    def count(self, event: str, **match: Any) -> int:
        return sum(1 for e in self.events if e["event"] == event
                   and all(e.get(k) == v for k, v in match.items()))

    def close(self) -> None:
        self.sup.stop()
        self.reactor.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

