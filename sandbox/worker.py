"""The worker's main loop: one tenant, one socket, one invocation at a time.

The zygote forks us, closes every inherited descriptor except our socket,
applies OS confinement (``sandbox.confine.apply``) and then calls ``serve``.
From here on the process is hostile territory: tenant code runs in it.  It
holds nothing that another process shares (no lock, no queue, no shared
pipe): only its own end of a socketpair with the supervisor, so killing it at
any instant cannot wedge anyone else.

Everything it agrees on with the supervisor (frames, caps, the ``EXIT_*``
codes that reach the supervisor through the zygote's ``exited`` report, the
policy it is booted with) is the wire contract, ``sandbox.wire``; the
sandbox never imports the engine.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from collections import OrderedDict
from typing import Any

from scriptvisor.sandbox import context, wire
from scriptvisor.sandbox.wire import EXIT_BOOT_ERROR, EXIT_OK, EXIT_PROTOCOL, WorkerPolicy

__all__ = ["serve", "standby"]

SOURCE_CACHE = wire.SOURCE_CACHE  # script sources kept by hash, so warm calls send none


class _Usage:
    """CPU used since the previous result, and peak RSS: one getrusage per call.

    The baseline is the previous call's end, not this call's start: between
    the two the worker only blocks in ``recv`` (no CPU to speak of), and a
    getrusage costs ~4 us, a noticeable share of a no-op call.
    """

    __slots__ = ("_cpu",)

    def __init__(self) -> None:
        now = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = now.ru_utime + now.ru_stime

    def stats(self) -> dict[str, float]:
        now = resource.getrusage(resource.RUSAGE_SELF)
        cpu = now.ru_utime + now.ru_stime
        used, self._cpu = cpu - self._cpu, cpu
        return {"cpu_ms": round(used * 1000.0, 3), "maxrss_kb": now.ru_maxrss}


class _Channel:
    """Blocking framed socket. The worker only ever waits on its own socket."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self.decoder = wire.FrameDecoder(wire.MAX_INBOUND_FRAME)
        self.inbox: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(wire.encode(message, self.max_frame))

    def receive(self) -> dict[str, Any] | None:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)


def _json_piece(value: Any) -> bytes:
    """``value`` as the frame encoder writes it (``FrameError``/``ValueError`` if it cannot)."""
    text = wire.scalar_json(value)
    return wire.json_bytes(value) if text is None else text.encode("utf-8")


_USUAL_STATS = ("cpu_ms", "maxrss_kb")


def _stats_json(stats: dict[str, float]) -> bytes:
    """``stats`` as the frame encoder writes it; the usual two fields formatted directly."""
    cpu, rss = stats.get("cpu_ms"), stats.get("maxrss_kb")
    if tuple(stats) == _USUAL_STATS and type(cpu) is float and type(rss) is int and cpu - cpu == 0.0:
        return b'{"cpu_ms":%b,"maxrss_kb":%d}' % (float.__repr__(cpu).encode(), rss)
    return wire.json_bytes(stats)


def _result_frame(job_id: int, outcome: dict[str, Any], stats: dict[str, float], max_frame: int) -> bytes:
    if outcome.get("ok") and outcome.get("error") is None and type(job_id) is int:
        # The common shape, written piece by piece: the same bytes as the
        # message below through ``wire.encode`` (tests/sandbox/test_worker_frames.py),
        # without the encoder's per-call entry cost for a scalar result.
        logs = outcome.get("logs")
        try:
            payload = b"".join((
                b'{"t":"result","id":', int.__repr__(job_id).encode(), b',"ok":true,"result":',
                _json_piece(outcome.get("result")),
                b',"error":null,"logs":', wire.json_bytes(logs) if logs else b"[]",
                b',"stats":', _stats_json(stats), b"}",
            ))
            return wire.frame(payload, max_frame)
        except (ValueError, RecursionError, wire.FrameError):
            pass  # the general path below says why, and falls back
    message = {
        "t": "result",
        "id": job_id,
        "ok": bool(outcome.get("ok")),
        "result": outcome.get("result"),
        "error": outcome.get("error"),
        "logs": outcome.get("logs") or [],
        "stats": stats,
    }
    try:
        return wire.encode(message, max_frame)
    except wire.FrameError as exc:
        # The runner checks result size itself; this is the last line of
        # defence (huge logs plus a large value, or an unencodable error).
        fallback = {
            "t": "result", "id": job_id, "ok": False, "result": None,
            "error": wire.worker_error("invalid_result", "InvalidResult",
                                       f"result could not be sent: {exc.message}"),
            "logs": (outcome.get("logs") or [])[:50], "stats": stats,
        }
        try:
            return wire.encode(fallback, max_frame)
        except wire.FrameError:
            fallback["logs"] = []
            return wire.encode(fallback, max_frame)


def _debug_exec(code: str, channel_fd: int) -> dict[str, Any]:
    """Test-only: run plain Python after confinement, as if RestrictedPython were broken.

    ``channel_fd`` (the worker's socket) is in scope so tests can play a
    hostile worker that writes garbage to the supervisor.
    """
    scope: dict[str, Any] = {"__name__": "__debug_exec__", "channel_fd": channel_fd}
    try:
        exec(compile(code, "<debug_exec>", "exec"), scope)  # noqa: S102 - test-only, policy-gated
        return {"ok": True, "result": scope.get("result"), "error": None, "logs": []}
    except BaseException as exc:  # noqa: BLE001 - report everything, the worker lives on
        return {"ok": False, "result": None, "logs": [],
                "error": wire.worker_error("script_error", type(exc).__name__, str(exc)[:4000],
                                           source="exception", errno=getattr(exc, "errno", None))}


def _boot(policy: WorkerPolicy) -> tuple[context.WorkerContext, Any]:
    """Build the worker's context and runner (before or after receiving the channel)."""
    from scriptvisor.sandbox.runner import Runner  # preloaded by the zygote; import is a dict lookup

    ctx = context.WorkerContext(
        tenant=policy.tenant,
        worker_id=policy.worker_id,
        data_dir=policy.data_dir,
        scratch_dir=policy.scratch_dir,
        allowed_ports=policy.allowed_ports,
        http=policy.http,
        limits=policy.limits,
        databases={str(d["name"]): d for d in policy.databases},
    )
    context.set_worker(ctx)
    try:
        return ctx, Runner(ctx)
    except Exception:
        os._exit(EXIT_BOOT_ERROR)


def standby(link_fd: int, policy: WorkerPolicy, timings: dict[str, float] | None = None) -> None:
    """A confined, booted worker waiting for its channel. Never returns.

    The zygote forks one of these ahead of demand for each active tenant, so a
    replacement after a kill costs one message instead of a fork, confinement
    and boot.  No tenant code runs until the channel arrives; the link to the
    zygote (private to this process) is closed before anything else happens.
    """
    t0 = time.perf_counter()
    ctx, runner = _boot(policy)
    timings = dict(timings or {}, boot_ms=round((time.perf_counter() - t0) * 1000.0, 4), standby=1)
    link = socket.socket(fileno=link_fd)
    link.setblocking(True)
    try:
        data, fds, _flags, _addr = socket.recv_fds(link, 4096, 1)
    except OSError:
        os._exit(EXIT_OK)
    link.close()
    if len(fds) != 1 or not data:
        os._exit(EXIT_OK)  # the zygote dropped us: nothing to serve
    try:
        ctx.worker_id = int(json.loads(data.decode("utf-8"))["worker_id"])
    except (ValueError, KeyError, TypeError):
        os._exit(EXIT_PROTOCOL)
    serve(fds[0], policy, booted=(ctx, runner), timings=timings)


def serve(fd: int, policy: WorkerPolicy,
          booted: tuple[context.WorkerContext, Any] | None = None,
          timings: dict[str, float] | None = None) -> None:
    """Run the worker loop on socket ``fd`` until told to exit. Never returns.

    ``timings`` (ms per boot step: fork, confinement layers, runner) travel
    in the ready frame, for the cold-start figure of ``bench/``.
    """
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    max_frame = policy.max_frame
    chan = _Channel(sock, max_frame)
    timings = dict(timings or {})
    if booted is None:
        t0 = time.perf_counter()
        booted = _boot(policy)
        timings["boot_ms"] = round((time.perf_counter() - t0) * 1000.0, 4)
    ctx, runner = booted
    ctx.report = chan.send
    debug_exec = policy.debug_exec
    sources: OrderedDict[str, str] = OrderedDict()

    usage = _Usage()
    try:
        chan.send({"t": "ready", "pid": os.getpid(), "timings": timings})
        while True:
            try:
                msg = chan.receive()
            except wire.FrameError:
                os._exit(EXIT_PROTOCOL)
            if msg is None:  # supervisor closed our socket: nothing left to do
                break
            kind = msg["t"]
            if kind == "invoke":
                job_id = msg["id"]
                digest = msg["hash"]
                source = msg.get("source")
                if source is not None:
                    sources[digest] = source
                    if len(sources) > SOURCE_CACHE:
                        sources.popitem(last=False)
                else:
                    source = sources.get(digest)
                    if source is None:
                        chan.send({"t": "need_source", "id": job_id})
                        continue
                    sources.move_to_end(digest)
                outcome = runner.invoke(
                    path=msg["path"], source=source, source_hash=digest,
                    function=msg.get("fn") or "", args=msg.get("args") or [],
                    configuration=msg.get("config") or {}, timeout=float(msg["timeout"]),
                )
                stats = usage.stats()
                if runner.compile_ms:
                    stats["compile_ms"] = round(runner.compile_ms, 4)
                    runner.compile_ms = 0.0
                sock.sendall(_result_frame(job_id, outcome, stats, max_frame))
            elif kind == "debug_exec" and debug_exec:
                outcome = _debug_exec(msg["code"], fd)
                sock.sendall(_result_frame(msg["id"], outcome, usage.stats(), max_frame))
            elif kind == "exit":
                break
            else:
                os._exit(EXIT_PROTOCOL)
    except (BrokenPipeError, ConnectionResetError):
        pass
    ctx.run_cleanups()
    sys.stdout.flush()
    os._exit(EXIT_OK)
