"""Operator log: one JSON object per line, one line per invocation or server event.

Lines go to stderr by default or to a file (opened in append mode, line
buffered, so ``tail -f`` and log shippers see whole lines).  Fields of an
invocation line: ``ts``, ``event="invocation"``, ``tenant``, ``script`` (or
``operation``), ``invocation_id``, ``outcome`` (``ok`` or the error code),
``duration_ms``, ``worker_pid``, ``recycle`` (why the worker was replaced, when
it was: ``timeout``, ``crash``, ``protocol_error``...), ``status`` (HTTP).
Nothing a script printed, and no argument value, is written here: arguments
carry passwords.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

__all__ = ["OperatorLog"]

#: Outcomes after which the engine replaced the worker: the recycle reason.
RECYCLING_OUTCOMES = frozenset({"timeout", "crash", "protocol_error"})


class OperatorLog:
    def __init__(self, path: str | None = None, stream: IO[str] | None = None) -> None:
        self._owned = path is not None
        self._out: IO[str] = open(path, "a", buffering=1, encoding="utf-8") if path else (stream or sys.stderr)
        self._lock = threading.Lock()  # whole lines even if a thread logs too

    def write(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "event": event}
        record.update(fields)
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
