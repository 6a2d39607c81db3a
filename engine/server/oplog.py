"""Operator log: one JSON object per line, one line per invocation or server event.

Everything the server process logs goes here as such a line: its own events,
and (through ``install_logging``) every Python ``logging`` record, uvicorn's
included, as ``event="log"`` with ``logger``, ``message`` and ``exc`` (a
traceback, in the same one line).  Each line has ``level`` (debug, info,
warning, error); lines below the configured level (``serve --log-level``,
default info) are not written.  A line written while the server handles an
invocation carries that ``invocation_id``.

Lines go to stderr by default or to a file (opened in append mode, line
buffered, so ``tail -f`` and log shippers see whole lines).  ``reopen()``
(the server calls it on SIGHUP) opens the path again, so logrotate can move
the file away and signal the server (deploy/logrotate/scriptvisor).  Fields of an
invocation line: ``ts``, ``event="invocation"``, ``tenant``, ``script`` (or
``operation``), ``invocation_id``, ``outcome`` (``ok`` or the error code),
``duration_ms``, ``worker_pid``, ``recycle`` (why the worker was replaced, when
it was: ``timeout``, ``crash``, ``protocol_error``...), ``status`` (HTTP).
Nothing a script printed, and no argument value, is written here: arguments
carry passwords.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable

__all__ = ["CURRENT_INVOCATION", "LEVELS", "OperatorLog", "OperatorLogHandler", "install_logging"]

#: The invocation the current task is serving (set by the server around each
#: call): every log line written in that context carries it as ``invocation_id``.
CURRENT_INVOCATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation_id", default=None)

#: Outcomes after which the engine replaced the worker: the recycle reason.
RECYCLING_OUTCOMES = frozenset({"timeout", "crash", "protocol_error"})


#: ``--log-level`` names and their numbers (those of ``logging``).
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: Level of each server event (others: info).
EVENT_LEVELS = {"tenant_invalid": "warning", "log_stream_dropped": "warning"}


class OperatorLog:
    def __init__(self, path: str | None = None, stream: IO[str] | None = None, level: str = "info") -> None:
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
        self.level = level
        self._threshold = LEVELS[level]
        self._owned = path is not None
        self._path = path
        self._out: IO[str] = open(path, "a", buffering=1, encoding="utf-8") if path else (stream or sys.stderr)
        self._lock = threading.Lock()  # whole lines even if a thread logs too

    def reopen(self) -> bool:
        """Open the log file's path again (after logrotate moved it); False for a stream.

        If the path cannot be opened the old file stays in use and the
        failure is written to it.
        """
        if not self._owned or self._path is None:
            return False
        try:
            fresh = open(self._path, "a", buffering=1, encoding="utf-8")
        except OSError as exc:
            self.write("log_reopen_failed", path=self._path, error=str(exc))
            return False
        with self._lock:
            old, self._out = self._out, fresh
        old.close()
        self.write("log_reopened", path=self._path)
        return True

    def write(self, event: str, *, level: str | None = None, **fields: Any) -> None:
        level = level or EVENT_LEVELS.get(event, "info")
        if LEVELS.get(level, 20) < self._threshold:
            return
        record: dict[str, Any] = {"ts": round(time.time(), 3), "level": level, "event": event}
        record.update(fields)
        if "invocation_id" not in record:
            current = CURRENT_INVOCATION.get()
            if current is not None:
                record["invocation_id"] = current
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError):
                pass  # a full disk or closed stderr must not fail an invocation

    def invocation(
        self,
        *,
        tenant: str,
        invocation_id: str,
        outcome: str,
        duration_ms: float,
        status: int,
        worker_pid: int | None,
        script: str | None = None,
        operation: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {"tenant": tenant}
        if script is not None:
            fields["script"] = script
        if operation is not None:
            fields["operation"] = operation
        fields.update(
            invocation_id=invocation_id,
            outcome=outcome,
            duration_ms=round(duration_ms, 3),
            status=status,
            worker_pid=worker_pid,
            recycle=outcome if outcome in RECYCLING_OUTCOMES else None,
        )
        self.write("invocation", **fields)

    def close(self) -> None:
        if self._owned:
            self._out.close()


class OperatorLogHandler(logging.Handler):
    """A ``logging`` handler that writes each record as one operator-log line."""

    def __init__(self, oplog: OperatorLog) -> None:
        super().__init__(LEVELS[oplog.level])
        self.oplog = oplog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            level = "debug" if record.levelno < 20 else "info" if record.levelno < 30 else (
                "warning" if record.levelno < 40 else "error")
            self.oplog.write("log", level=level, **fields)
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def install_logging(oplog: OperatorLog) -> Callable[[], None]:
    """Route every ``logging`` record (root, uvicorn's loggers, warnings) to ``oplog``.

    Returns a function that undoes it (the server calls it when it stops).
    """
    handler = OperatorLogHandler(oplog)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    root.handlers = [handler]
    root.setLevel(LEVELS[oplog.level])
    touched = []
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "py.warnings"):
        lg = logging.getLogger(name)
        touched.append((lg, list(lg.handlers), lg.propagate))
        lg.handlers = []
        lg.propagate = True
    logging.captureWarnings(True)

    def undo() -> None:
        logging.captureWarnings(False)
        root.handlers = saved[1]
        root.setLevel(saved[0])
        for lg, handlers, propagate in touched:
            lg.handlers = handlers
            lg.propagate = propagate

    return undo
