"""scriptvisor's engine: the supervisor side of the sandbox.

Embed it::

    from scriptvisor.engine import Engine
    with Engine() as eng:
        res = eng.invoke("acme", path="login.py", args=["a@example.com", "pw"])
        print(res.ok, res.result, res.error)

The public names are resolved lazily: workers import ``engine.protocol`` and
``engine.errors`` only, and must not drag the API, asyncio and subprocess into
the zygote (every byte of anonymous memory there is copied into each worker's
page tables and torn down at every kill).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AsyncEngine": "api", "Engine": "api", "load_script": "api",
    "EngineConfig": "config", "TenantLimits": "config",
    "Result": "result",
    "CompileError": "errors", "ContractViolation": "errors", "Crash": "errors",
    "DoubleCallback": "errors", "EngineUnavailable": "errors", "InvalidResult": "errors",
    "InvocationError": "errors", "NotFound": "errors", "Overloaded": "errors",
    "ProtocolError": "errors", "ScriptError": "errors", "Stall": "errors", "Timeout": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
