"""The zygote: a small, single-threaded, pre-warmed parent that forks workers.

Contract
--------
* **Started once** by the supervisor with ``python -s -m scriptvisor.engine.zygote FD``
  (fork+exec, so it inherits nothing of a grown supervisor), a scrubbed
  environment and one descriptor: its control socket.  It never starts a
  thread, so ``fork()`` here is always safe.
* **Preloads** RestrictedPython, the runner, every facade and the confinement
  module, compiles a warm-up script, then ``gc.freeze()``s so forked workers
  share those pages copy-on-write and do not dirty them with GC bookkeeping.
  The first frame it reads (``preload {extras}``) names what it holds beyond
  that (``wire.EXTRAS``: network database drivers): the supervisor runs one
  zygote per set of extras, the slim one (none) for tenants without such
  databases, so their workers do not inherit psycopg.  Then it says ``hello``
  with the confinement layers it can provide, its extras, and its size.
* **On ``spawn``** (a frame plus the worker's socket passed as SCM_RIGHTS) it
  calls ``confine.prepare(policy)``, forks, answers ``spawned {worker, pid}``
  and closes its copy of the socket.  The supervisor now holds the only other
  end: when the worker dies, the supervisor sees EOF.
* **In the child**, before any tenant code exists: signal handlers back to
  defaults, stdin/stdout/stderr to ``/dev/null``, every other descriptor
  closed except the worker socket and the ones confinement asks to keep,
  ``confine.apply(policy)``, then ``sandbox.worker.serve``.
* **Keeps a standby** per active tenant (``EngineConfig.standby``): after a
  spawn it forks one more child with the same policy that confines itself,
  builds its runner and waits on a private socketpair for its channel.  The
  next ``spawn`` for that tenant hands the supervisor's socket to the standby
  (SCM_RIGHTS) instead of forking, so a replacement after a kill is ready in
  about the time of one message.  Standbys run no tenant code before their
  channel arrives, close the zygote link first, and are counted by nobody but
  the zygote; a standby whose policy no longer matches is killed.
* **Reaps** every worker (SIGCHLD through a wakeup pipe, no polling) and
  reports ``exited {pid, status}`` with the raw wait status, then empties the
  worker's scratch directory.
* **On ``stop``** or EOF on the control socket (the supervisor is gone) it
  SIGKILLs every worker's process group, reaps them and exits.

Log lines travel to the supervisor as ``log`` frames on the control socket.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from scriptvisor.sandbox import wire
from scriptvisor.sandbox.wire import WorkerPolicy


class Zygote:
    def __init__(self, fd: int) -> None:
        self.ctl = socket.socket(fileno=fd)
        self.ctl.setblocking(True)
        self.decoder = wire.FrameDecoder(wire.DEFAULT_MAX_FRAME)
        self.fds: list[int] = []          # sockets received, in order, awaiting their spawn frame
        self.children: dict[int, WorkerPolicy] = {}  # pid -> policy
        self.confine: Any = None
        self.layers: dict[str, Any] = {}
        self.running = True
        self.standbys: dict[str, dict[str, Any]] = {}      # tenant -> {pid, link, key}
        self.want_standby: dict[str, WorkerPolicy] = {}  # tenant -> policy, forked after replies
        self.standby_seq = 0
        self.last_error = ""
        self.t_child = 0.0                     # in a forked child: when it first ran
        self.extras: tuple[str, ...] = ()   # wire.EXTRAS this zygote preloads
        self.early: list[dict[str, Any]] = []  # frames that came with the preload frame

    # -- plumbing ---------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        self.ctl.sendall(wire.encode(message))

    def log(self, level: str, message: str) -> None:
        try:
            self.send({"t": "log", "level": level, "message": message})
        except OSError:
            pass

    # -- preload ----------------------------------------------------------
    def read_preload(self) -> bool:
        """Block for the supervisor's first frame, ``preload {extras}``. False on EOF."""
        while True:
            data, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 64)
            self.fds.extend(fds)
            if not data:
                return False
            messages = self.decoder.feed(data)
            if messages:
                break
        first, self.early = messages[0], messages[1:]
        extras = first.get("extras") if first.get("t") == "preload" else None
        if type(extras) is not list or not set(extras) <= set(wire.EXTRAS):
            raise SystemExit(f"zygote: expected a preload frame first, got {first!r:.200}")
        self.extras = wire.extras_for(extras)
        return True

    def preload(self) -> None:
        import scriptvisor.sandbox.runner  # noqa: F401 - the point is to import it now
        import scriptvisor.sandbox.worker  # noqa: F401
        from scriptvisor.sandbox import facades

        failed = facades.preload(self.extras)
        for name in failed:
            self.log("warning", f"facade {name!r} failed to load; scripts cannot import it")
        try:
            from scriptvisor.sandbox import confine
        except ImportError as exc:
            self.confine = None
            self.layers = {"confinement": [False, f"scriptvisor.sandbox.confine unavailable: {exc}"]}
        else:
            self.confine = confine
            try:
                self.layers = {k: list(v) for k, v in confine.available(None).items()}
            except Exception as exc:  # report, never degrade silently
                self.layers = {"confinement": [False, f"layer probe failed: {exc}"]}
        # Warm the compiler and the runner's code paths once.
        from scriptvisor.sandbox.context import WorkerContext

        warm = scriptvisor.sandbox.runner.Runner(WorkerContext(tenant="__zygote__"))
        warm.invoke(path="warmup.py", source="def warmup(callback):\n    callback(None, 1)\n",
                    source_hash="warmup", function="warmup", args=[], configuration={}, timeout=5.0)
        del warm
        gc.collect()
        gc.freeze()

    # -- spawning ---------------------------------------------------------
    def spawn(self, msg: dict[str, Any]) -> None:
        worker_id = msg.get("worker")
        if not self.fds:
            self.send({"t": "failed", "worker": worker_id, "reason": "no socket received with spawn"})
            return
        fd = self.fds.pop(0)
        try:
            policy = WorkerPolicy.from_wire(msg.get("policy"))
        except wire.FrameError as exc:
            os.close(fd)
            self.send({"t": "failed", "worker": worker_id, "reason": f"bad policy: {exc.message}"})
            return
        missing = set(policy.extras()) - set(self.extras)
        if missing:  # the supervisor routes by extras: a bug, refused rather than imported late
            os.close(fd)
            self.send({"t": "failed", "worker": worker_id,
                       "reason": f"this zygote does not preload {', '.join(sorted(missing))}"})
            return
        tenant = policy.tenant
        sb = self.standbys.pop(tenant, None)
        if sb is not None:
            if sb["key"] == policy.standby_key() and self._hand_over(sb, fd, worker_id):
                self.send({"t": "spawned", "worker": worker_id, "pid": sb["pid"]})
                if policy.standby:
                    self.want_standby[tenant] = policy
                return
            self._drop_standby(sb)
        pid = self._fork(fd, policy, link=None)
        if pid is None:
            self.send({"t": "failed", "worker": worker_id, "reason": self.last_error})
            return
        self.send({"t": "spawned", "worker": worker_id, "pid": pid})
        if policy.standby:
            self.want_standby[tenant] = policy

    def _hand_over(self, sb: dict[str, Any], fd: int, worker_id: Any) -> bool:
        """Pass the channel to a standby. On failure ``fd`` stays ours to fork with."""
        link: socket.socket = sb["link"]
        try:
            socket.send_fds(link, [json.dumps({"worker_id": worker_id}).encode()], [fd])
        except OSError:
            return False  # the standby died; reap() reports its exit
        os.close(fd)
        link.close()
        return True

    def _drop_standby(self, sb: dict[str, Any]) -> None:
        """Kill a standby that will never be used (policy changed, engine stopping)."""
        sb["link"].close()
        try:
            os.kill(sb["pid"], signal.SIGKILL)
        except OSError:
            pass

    def make_standbys(self) -> None:
        """Fork the standbys asked for by recent spawns (after the replies went out)."""
        while self.want_standby:
            tenant, policy = self.want_standby.popitem()
            if tenant in self.standbys:
                continue
            self.standby_seq += 1
            sb_policy = policy.replace(scratch_dir=os.path.join(
                os.path.dirname(policy.scratch_dir or "/nonexistent/x"), f"standby-{self.standby_seq}"))
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = self._fork(None, sb_policy, link=theirs.fileno())
            theirs.close()
            if pid is None:
                ours.close()
                self.log("warning", f"standby for tenant {tenant!r} not started: {self.last_error}")
                continue
            self.standbys[tenant] = {"pid": pid, "link": ours, "key": policy.standby_key()}

    def _fork(self, fd: int | None, policy: WorkerPolicy, link: int | None) -> int | None:
        """Fork a worker (``fd``: its channel) or a standby (``link``: its zygote link)."""
        keep: set[int] = set()
        t_prepare = time.perf_counter()
        if policy.confine and self.confine is not None:
            try:
                self.confine.prepare(policy)
                keep = set(self.confine.keep_fds(policy))
            except Exception as exc:
                if fd is not None:
                    os.close(fd)
                self.last_error = f"prepare failed: {exc}"
                return None
        t_fork = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            self.last_error = f"fork failed: {exc}"
            return None
        if pid == 0:  # pragma: no cover - runs in the child, observed through the engine
            self.t_child = time.perf_counter()
            timings = {"prepare_ms": round((t_fork - t_prepare) * 1000.0, 4),
                       "fork_ms": round((self.t_child - t_fork) * 1000.0, 4)}
            self._child(fd if fd is not None else link, keep, policy, standby=fd is None, timings=timings)
        if fd is not None:
            os.close(fd)
        self.children[pid] = policy
        return pid

    def _child(self, fd: int, keep: set[int], policy: WorkerPolicy, standby: bool = False,
               timings: dict[str, float] | None = None) -> None:
        from scriptvisor.sandbox import worker  # preloaded: a dict lookup

        code = wire.EXIT_BOOT_ERROR
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            # SIGXFSZ: Python ignores it by default so writes past RLIMIT_FSIZE
            # raise EFBIG; keep it ignored in workers for a clean error.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            keep_all = sorted(keep | {0, 1, 2, fd})
            low = 3
            for k in keep_all:
                if k >= low:
                    os.closerange(low, k)
                    low = k + 1
            os.closerange(low, 1 << 16)
            if timings is not None:
                # signals, stdio and descriptors: mostly the first copy-on-write faults after fork
                timings["child_setup_ms"] = round((time.perf_counter() - self.t_child) * 1000.0, 4)
            code = wire.EXIT_CONFINEMENT_FAILED
            if policy.confine and self.confine is not None:
                self.confine.apply(policy, timings)
            else:
                os.setsid()
            code = wire.EXIT_BOOT_ERROR
            if standby:
                worker.standby(fd, policy, timings)
            else:
                worker.serve(fd, policy, timings=timings)
        except BaseException:  # noqa: BLE001 - a child must never return into the zygote loop
            pass
        os._exit(code)

    # -- reaping ----------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            policy = self.children.pop(pid, None)
            for tenant, sb in list(self.standbys.items()):
                if sb["pid"] == pid:  # a standby died before use: nobody else knows it
                    del self.standbys[tenant]
                    sb["link"].close()
            try:
                self.send({"t": "exited", "pid": pid, "status": status})
            except OSError:
                pass
            if policy is not None and self.confine is not None and policy.confine:
                try:
                    self.confine.cleanup_scratch(policy)
                except Exception as exc:
                    self.log("warning", f"scratch cleanup failed for pid {pid}: {exc}")

    def kill_all(self) -> None:
        for sb in self.standbys.values():
            sb["link"].close()
        self.standbys.clear()
        for pid in list(self.children):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        deadline = time.monotonic() + 5.0
        while self.children and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, 0)  # blocking: every child was SIGKILLed
            except ChildProcessError:
                break
            policy = self.children.pop(pid, None)
            if policy is not None and self.confine is not None and policy.confine:
                try:
                    self.confine.cleanup_scratch(policy)
                except Exception:
                    pass

    # -- main loop --------------------------------------------------------
    def handle_control(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 64)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            data, fds = b"", []
        self.fds.extend(fds)
        if not data:
            self.running = False
            return
        self.handle_messages(self.decoder.feed(data))

    def handle_messages(self, messages: list[dict[str, Any]]) -> None:
        for msg in messages:
            kind = msg["t"]
            if kind == "spawn":
                self.spawn(msg)
            elif kind == "drop_standby":
                sb = self.standbys.pop(msg.get("tenant"), None)
                self.want_standby.pop(msg.get("tenant"), None)
                if sb is not None:
                    self._drop_standby(sb)
            elif kind == "stop":
                self.running = False

    def run(self) -> int:
        rpipe, wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wpipe, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the supervisor decides when we stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C in a terminal reaches the whole group
        signal.signal(signal.SIGHUP, signal.SIG_IGN)   # the server's log-reopen signal, if sent to the group
        if not self.read_preload():
            return 0
        self.preload()
        self.send({"t": "hello", "pid": os.getpid(), "layers": self.layers, "extras": list(self.extras),
                   "modules": len(sys.modules), "rss_kb": _rss_kb()})
        self.handle_messages(self.early)
        self.early = []
        sel = selectors.DefaultSelector()
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        sel.register(rpipe, selectors.EVENT_READ, "sig")
        while self.running:
            for key, _ in sel.select():
                if key.data == "ctl":
                    self.handle_control()
                else:
                    try:
                        os.read(rpipe, 4096)
                    except BlockingIOError:
                        pass
                    self.reap()
            self.reap()
            if self.running and self.want_standby:
                self.make_standbys()
        self.kill_all()
        return 0


def _rss_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[0])
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the supervisor
    except Exception:
        pass
    return Zygote(fd).run()


if __name__ == "__main__":
    sys.exit(main())
