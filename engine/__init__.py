"""scriptvisor's engine: the supervisor side of the sandbox.

Embed it::

    from engine import Engine
    with Engine() as eng:
        res = eng.invoke("acme", path="login.py", args=["a@example.com", "pw"])
        print(res.ok, res.result, res.error)
"""

from .api import AsyncEngine, Engine, load_script
from .config import EngineConfig, TenantLimits
from .errors import (
    CompileError, ContractViolation, Crash, DoubleCallback, EngineUnavailable, InvalidResult,
    InvocationError, NotFound, Overloaded, ProtocolError, ScriptError, Stall, Timeout,
)
from .result import Result

__all__ = sorted([
    "AsyncEngine", "CompileError", "ContractViolation", "Crash", "DoubleCallback", "Engine",
    "EngineConfig", "EngineUnavailable", "InvalidResult", "InvocationError", "NotFound",
    "Overloaded", "ProtocolError", "Result", "ScriptError", "Stall", "TenantLimits", "Timeout",
    "load_script",
])
