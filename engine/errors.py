"""Structured outcomes of an invocation that did not succeed.

Every failure a caller can see is one class here with a stable snake_case
``code``, an HTTP status for the operator API, and ``to_dict()``.  Nothing
else leaves the engine: no tracebacks, no bare strings.

    InvocationError                    code               http
    ├── ScriptError                    script_error       200  callback(err) or an uncaught exception
    ├── CompileError                   compile_error      200  RestrictedPython refused the source
    ├── NotFound                       not_found          200  script file or function missing
    ├── Stall                          stall              200  function returned, callback never called
    ├── DoubleCallback                 double_callback    200  callback called more than once
    ├── InvalidResult                  invalid_result     200  value not JSON-serialisable / too large
    ├── ContractViolation              contract_violation 200  profile breaks the action-script contract
    ├── Timeout                        timeout            200  wall clock exceeded; worker killed
    ├── Crash                          crash              200  worker died on its own (signal, exit, OOM)
    ├── ProtocolError                  protocol_error     200  worker sent a bad frame; worker killed
    ├── BadRequest                     bad_request        400  input that is not a valid call (bad JSON line...)
    ├── Overloaded                     overloaded         429  tenant queue full
    ├── EngineUnavailable              engine_unavailable 503  engine stopping / zygote gone
    └── ConfinementUnavailable         confinement_unavailable 503  a required OS layer is missing

"200" means: the engine ran (or tried to run) the script, so an HTTP caller
gets a normal result object with ``ok: false``.  The non-200 ones are about
the request, not the script.

The worker reports the first six codes itself (``WORKER_CODES``, defined in
the wire contract ``sandbox.wire``); the supervisor checks that a worker
never claims any other (``engine.protocol.parse_worker_message``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from scriptvisor.sandbox.wire import WORKER_CODES as _WORKER_CODES

__all__ = [
    "CODES",
    "WORKER_CODES",
    "BadRequest",
    "Crash",
    "CompileError",
    "ConfinementUnavailable",
    "ContractViolation",
    "DoubleCallback",
    "EngineUnavailable",
    "InvalidResult",
    "InvocationError",
    "NotFound",
    "Overloaded",
    "ProtocolError",
    "ScriptError",
    "Stall",
    "Timeout",
]


class InvocationError(Exception):
    """Base class. ``details`` are JSON-safe keyword context (field, signal, line...)."""

    code: ClassVar[str] = "engine_error"
    http_status: ClassVar[int] = 200
    default_name: ClassVar[str] = "Error"

    def __init__(self, message: str, *, name: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.name = name or self.default_name
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "name": self.name, "message": self.message}
        for key, value in self.details.items():
            if key not in out:
                out[key] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.details!r})"


class ScriptError(InvocationError):
    """The script reported an error through ``callback(err)`` or raised one.

    ``name`` is the error's class name (``WrongUsernameOrPasswordError``...);
    details carry its fields (``validation_code``, ``user_known``, ``traceback``).
    """

    code = "script_error"


class CompileError(InvocationError):
    """The source did not compile under the sandbox policy (details: line, column)."""

    code = "compile_error"
    default_name = "CompileError"


class NotFound(InvocationError):
    """The script file, or the function inside it, does not exist."""

    code = "not_found"
    default_name = "NotFound"


class Stall(InvocationError):
    """The function returned without ever calling ``callback``. Reported at once."""

    code = "stall"
    default_name = "Stall"


class DoubleCallback(InvocationError):
    """``callback`` was called more than once; ``first`` holds the first call's outcome."""

    code = "double_callback"
    default_name = "DoubleCallback"


class InvalidResult(InvocationError):
    """The value passed to ``callback`` cannot travel as JSON, or is too large."""

    code = "invalid_result"
    default_name = "InvalidResult"


class ContractViolation(InvocationError):
    """A script's result breaks the action-script contract (details: field)."""

    code = "contract_violation"
    default_name = "ContractViolation"


class Timeout(InvocationError):
    """The wall clock ran out. The worker was killed; its ``global_`` is gone."""

    code = "timeout"
    default_name = "Timeout"


class Crash(InvocationError):
    """The worker died on its own (details: signal or exit_code). It was replaced."""

    code = "crash"
    default_name = "Crash"


class ProtocolError(InvocationError):
    """The worker broke the wire protocol (malformed/oversized frame). It was killed."""

    code = "protocol_error"
    default_name = "ProtocolError"


class BadRequest(InvocationError):
    """The call itself is malformed (not JSON, wrong shape). Nothing was run."""

    code = "bad_request"
    http_status = 400
    default_name = "BadRequest"


class Overloaded(InvocationError):
    """The tenant's queue is full. Retry after ``retry_after`` seconds."""

    code = "overloaded"
    http_status = 429
    default_name = "Overloaded"


class EngineUnavailable(InvocationError):
    """The engine is shutting down or cannot start workers."""

    code = "engine_unavailable"
    http_status = 503
    default_name = "EngineUnavailable"


class ConfinementUnavailable(InvocationError):
    """The operator required an OS confinement layer that this host cannot provide."""

    code = "confinement_unavailable"
    http_status = 503
    default_name = "ConfinementUnavailable"


_ALL = [
    ScriptError, CompileError, NotFound, Stall, DoubleCallback, InvalidResult,
    ContractViolation, Timeout, Crash, ProtocolError, BadRequest, Overloaded, EngineUnavailable,
    ConfinementUnavailable,
]
CODES: dict[str, type[InvocationError]] = {cls.code: cls for cls in _ALL}

#: Codes a worker may report about its own invocation (the wire contract's copy).
WORKER_CODES = _WORKER_CODES
