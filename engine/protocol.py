"""The supervisor's side of the wire: validating what workers send.

The frame format, the caps, the messages, the exit codes and the worker
policy live in ``scriptvisor.sandbox.wire``, the one leaf module both sides
import (the sandbox never imports the engine).  This module re-exports the
frame helpers for the engine and adds what only the supervisor needs: typed
messages from a worker, each validated by ``parse_worker_message`` before the
supervisor acts on it.  A worker is never trusted: any ``FrameError`` from one
means kill it and report ``protocol_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scriptvisor.sandbox.wire import (
    DEFAULT_MAX_FRAME, HEADER, MAX_ERROR_NAME, MAX_ERROR_TEXT, MAX_INBOUND_FRAME, MAX_LOG_LINES,
    VERSION, WORKER_CODES, FrameDecoder, FrameError, encode,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DbSession",
    "HEADER",
    "MAX_INBOUND_FRAME",
    "VERSION",
    "FrameDecoder",
    "FrameError",
    "NeedSource",
    "Ready",
    "WorkerResult",
    "encode",
    "parse_worker_message",
]


# --------------------------------------------------------------------------
# Typed messages from workers.  Validation lives here so the supervisor only
# ever handles objects whose shape has been checked.


@dataclass(slots=True)
class Ready:
    pid: int
    #: milliseconds per boot step (fork, each confinement layer, runner boot)
    timings: dict[str, float]


@dataclass(slots=True)
class NeedSource:
    id: int


@dataclass(slots=True)
class DbSession:
    driver: str     # postgres | mysql
    name: str       # the declared database's name (the supervisor looks up the rest)
    session: int    # backend pid / thread id
    started: str    # postgres backend_start (guards against a reused pid), else ""


@dataclass(slots=True)
class WorkerResult:
    id: int
    ok: bool
    result: Any
    error: dict[str, Any] | None
    logs: list[str]
    stats: dict[str, float]


def _is_text(value: Any, limit: int = MAX_ERROR_TEXT) -> bool:
    return type(value) is str and len(value) <= limit


def parse_worker_message(msg: dict[str, Any]) -> Ready | WorkerResult | NeedSource | DbSession:
    """Validate one decoded message from a worker. Raises ``FrameError``."""
    kind = msg["t"]
    if kind == "result":
        job_id = msg.get("id")
        ok = msg.get("ok")
        error = msg.get("error")
        logs = msg.get("logs", [])
        stats = msg.get("stats", {})
        if type(job_id) is not int or type(ok) is not bool:
            raise FrameError("bad_message", "result needs an integer id and a boolean ok")
        if type(logs) is not list or len(logs) > MAX_LOG_LINES or not all(type(x) is str for x in logs):
            raise FrameError("bad_message", "result logs must be a list of strings")
        if type(stats) is not dict or not all(
            type(k) is str and type(v) in (int, float) for k, v in stats.items()
        ):
            raise FrameError("bad_message", "result stats must map names to numbers")
        if ok:
            if error is not None:
                raise FrameError("bad_message", "an ok result carries no error")
        else:
            if type(error) is not dict:
                raise FrameError("bad_message", "a failed result needs an error object")
            if error.get("code") not in WORKER_CODES:
                raise FrameError("bad_message", f"worker may not report code {error.get('code')!r}")
            if not _is_text(error.get("name"), MAX_ERROR_NAME) or not _is_text(error.get("message")):
                raise FrameError("bad_message", "error name and message must be strings")
            if msg.get("result") is not None:
                raise FrameError("bad_message", "a failed result carries no value")
        return WorkerResult(job_id, ok, msg.get("result"), error, logs, stats)
    if kind == "need_source":
        job_id = msg.get("id")
        if type(job_id) is not int:
            raise FrameError("bad_message", "need_source needs an integer id")
        return NeedSource(job_id)
    if kind == "db_session":
        driver, name, session, started = (msg.get("driver"), msg.get("name"), msg.get("session"),
                                          msg.get("started", ""))
        if (driver not in ("postgres", "mysql") or not _is_text(name, 64) or type(session) is not int
                or not 0 < session < 2**32 or not _is_text(started, 64)):
            raise FrameError("bad_message", "db_session needs driver, name, an integer session and started")
        return DbSession(driver, name, session, started)
    if kind == "ready":
        pid = msg.get("pid")
        timings = msg.get("timings", {})
        if type(pid) is not int:
            raise FrameError("bad_message", "ready needs an integer pid")
        if type(timings) is not dict or len(timings) > 32 or not all(
            type(k) is str and len(k) <= 40 and type(v) in (int, float) for k, v in timings.items()
        ):
            raise FrameError("bad_message", "ready timings must map at most 32 names to numbers")
        return Ready(pid, timings)
    raise FrameError("bad_message", f"unknown message type from worker: {kind[:40]!r}")
