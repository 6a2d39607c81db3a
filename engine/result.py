"""The outcome of one invocation, as callers and the CLI see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvocationError

__all__ = ["Result", "public"]


@dataclass(slots=True)
class Result:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    logs: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    #: pid, worker id, invocations served, cpu_ms of this call, maxrss_kb.
    worker: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, exc: InvocationError, *, logs: list[str] | None = None,
                duration_ms: float = 0.0, worker: dict[str, Any] | None = None) -> "Result":
        return cls(False, None, exc.to_dict(), list(logs or ()), duration_ms, dict(worker or {}))

    @property
    def code(self) -> str | None:
        """The error code, or None when ok."""
        return None if self.error is None else self.error.get("code")

    def to_dict(self, *, with_worker: bool = False) -> dict[str, Any]:
        """The ``scriptvisor run --json`` object: ok, result, error, logs, duration_ms.

        ``with_worker`` adds the worker's pid and resource figures, for the
        engine's own consumers (operator log, connections); they are not part
        of the public contract.
        """
        out = {
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
            "logs": self.logs,
            "duration_ms": round(self.duration_ms, 3),
        }
        if with_worker:
            out["worker"] = self.worker
        return out


def public(result: dict[str, Any]) -> dict[str, Any]:
    """A result dict without the engine-internal ``worker`` figures."""
    return {k: v for k, v in result.items() if k != "worker"}
