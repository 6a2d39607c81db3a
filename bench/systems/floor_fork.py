"""The floor: what the machine itself charges for what a pool does, with no pool at all.

A small single-threaded parent (``python -S``, nothing imported but ``os``)
forks a child on request; the child says ready on a pipe and then answers
one-byte pings on a socketpair.  Its figures are the least any system can
pay on this machine in the same run, so scriptvisor's are reported as
multiples of them:

* ``recycle_ms``: SIGKILL the child -> the parent has forked its replacement
  and read its ready byte (the request travels over a pipe, like a zygote's
  spawn frame; no confinement, no interpreter start);
* ``warm_overhead_ms``: one round trip of a bare socketpair ping-pong, timed
  in the parent (the two process wake-ups any call to another process pays);
* ``cold_start_ms``: the same fork + ready for a child that never existed
  (the floor of a tenant's first call on a node);
* ``sup_cpu_us_per_call`` / ``worker_cpu_us_per_call``: CPU of each side per
  round trip of a bare socketpair ping-pong (1 byte each way), the floor of
  a no-op call's supervisor and worker CPU.

It serves no other figure: ``figures`` tells the harness which ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from .base import System, WatchdogExpired

__all__ = ["FloorSystem"]

_PARENT = r'''
import os, signal, socket, sys, resource, time
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
child = None
link = None
out = os.fdopen(1, "w", buffering=1)
def fork():
    global child, link
    ours, theirs = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r); ours.close()
        if link is not None:
            link.close()  # the previous child's link: its EOF must reach it
        os.write(w, b"r")
        while True:
            b = theirs.recv(1)
            if not b:
                os._exit(0)
            if b == b"q":
                ru = resource.getrusage(resource.RUSAGE_SELF)
                theirs.sendall(("%.9f\n" % (ru.ru_utime + ru.ru_stime)).encode())
                continue
            theirs.sendall(b)
    os.close(w); theirs.close()
    os.read(r, 1)  # the child is ready
    os.close(r)
    child, link = pid, ours
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "fork":
        old, old_link = child, link
        fork()
        out.write("%d\n" % child)
        if old is not None:  # the previous child goes after the answer, outside the timing
            old_link.close()
            try:
                os.waitpid(old, 0)
            except ChildProcessError:
                pass
    elif cmd[0] == "ping":
        n = int(cmd[1])
        f = link.makefile("rb")
        link.sendall(b"q"); w0 = float(f.readline())
        ru = resource.getrusage(resource.RUSAGE_SELF); s0 = ru.ru_utime + ru.ru_stime
        for _ in range(n):
            link.sendall(b"p")
            link.recv(1)
        ru = resource.getrusage(resource.RUSAGE_SELF); s1 = ru.ru_utime + ru.ru_stime
        link.sendall(b"q"); w1 = float(f.readline())
        out.write("%.9f %.9f\n" % ((s1 - s0) / n, (w1 - w0) / n))
    elif cmd[0] == "rt":
        t0 = time.perf_counter()
        link.sendall(b"p")
        link.recv(1)
        out.write("%.9f\n" % (time.perf_counter() - t0))
    elif cmd[0] == "quit":
        break
'''


class FloorSystem(System):
    name = "floor"
    requires = ()
    figures = ("warm", "recycle", "cold", "cpu")
    notes = {
        "warm_overhead_ms": "one socketpair ping-pong (1 byte each way), timed in the floor parent",
        "recycle_ms": "bare os.fork() from a small single-threaded parent; child signals ready on a pipe",
        "sup_cpu_us_per_call": "socketpair ping-pong, 1 byte each way: parent CPU per round trip",
        "worker_cpu_us_per_call": "socketpair ping-pong, 1 byte each way: child CPU per round trip",
    }

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[str] | None = None
        self.child: int | None = None

    def start(self, workers: int) -> None:
        self.workers = workers
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", _PARENT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.child = self._fork()

    def _ask(self, line: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise WatchdogExpired("the floor parent died")
        return answer

    def _fork(self) -> int:
        return int(self._ask("fork"))

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            try:
                proc.stdin.write("quit\n")  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            proc.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        return [self.child] if self.child else []

    def supervisor_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def recycle(self, watchdog: float = 10.0) -> float:
        assert self.child is not None
        os.kill(self.child, signal.SIGKILL)
        t0 = time.perf_counter()
        self.child = self._fork()
        return (time.perf_counter() - t0) * 1000.0

    def warm(self) -> float:
        return float(self._ask("rt")) * 1000.0

    def cold(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.child = self._fork()
        return {"cold_start_ms": (time.perf_counter() - t0) * 1000.0}

    def cpu_per_call(self, n: int) -> dict[str, float]:
        sup, worker = (float(x) for x in self._ask(f"ping {n}").split())
        return {"sup_cpu_us_per_call": sup * 1e6, "worker_cpu_us_per_call": worker * 1e6}
