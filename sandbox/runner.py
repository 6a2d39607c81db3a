"""Run one action-script invocation inside a worker and describe its outcome.

``Runner.invoke`` compiles (cached per path and content hash), executes the
module in fresh globals, calls the function with the arguments plus a
one-shot ``callback``, and turns whatever happened into the result dict of
the worker protocol: ``{"ok", "result", "error", "logs"}``.  It never
raises: an unexpected failure is a structured ``script_error`` too.

The wall clock is not enforced here: the supervisor SIGKILLs the worker at
the deadline.  The runner only publishes the deadline (``sandbox.context``)
so facades can shrink their own timeouts.  That is also why nothing in this
module raises a "deadline" exception a script could swallow.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import types
from collections import OrderedDict
from typing import Any

from scriptvisor.sandbox import context, errors, guards, policy, wire

__all__ = ["Callback", "OutputCapture", "Runner"]


class OutputCapture:
    """Printed text and log lines of one invocation, capped at ``limit`` bytes (UTF-8)."""

    __slots__ = ("_parts", "_used", "_limit", "_dropped", "_dropped_lines")

    def __init__(self, limit: int) -> None:
        self._parts: list[str] = []
        self._used = 0
        self._limit = limit
        self._dropped = 0
        #: line ends among the dropped bytes: each is a line the caller does not see
        self._dropped_lines = 0

    def write(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        room = self._limit - self._used
        if size <= room:
            self._parts.append(text)
            self._used += size
            return
        kept = ""
        if room > 0:
            kept = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            self._parts.append(kept)
            kept_size = len(kept.encode("utf-8"))
            self._used += kept_size
            size -= kept_size
        self._dropped += size
        self._dropped_lines += text.count("\n") - kept.count("\n")

    def line(self, text: str) -> None:
        """Append ``text`` as a line of its own (log facade)."""
        if self._parts and not self._parts[-1].endswith("\n"):
            self.write("\n")
        self.write(text if text.endswith("\n") else text + "\n")

    def lines(self) -> list[str]:
        if not self._parts and not self._dropped:
            return []  # the common case: the script printed and logged nothing
        text = "".join(self._parts)
        out = text.splitlines()
        # The byte cap alone allows ~64k empty lines; the supervisor refuses a
        # result frame with more than sandbox.wire.MAX_LOG_LINES of them.
        cut = max(0, len(out) - (policy.MAX_LOG_LINES - 2))
        if cut:
            out = out[:policy.MAX_LOG_LINES - 2]
        # one marker counting every line not shown: those over the line cap
        # and those whose bytes were over the byte cap
        lines = cut + self._dropped_lines
        if self._dropped_lines and text and not text.endswith("\n"):
            lines -= 1  # the line cut mid-way is shown (its start), not dropped
        if cut or self._dropped:
            marker = f"[scriptvisor: output truncated, {lines} lines dropped"
            if self._dropped:
                marker += f" ({self._dropped} bytes over the {self._limit}-byte limit)"
            out.append(marker + "]")
        return out


class _PrintCollector:
    """What RestrictedPython's ``print`` rewrite calls (``_print._call_print``).

    ``printed`` (the text printed in the current function) is kept as the
    RestrictedPython contract says; everything also goes to the capture.
    """

    __slots__ = ("_capture", "_text", "_size")

    def __init__(self, capture: OutputCapture) -> None:
        self._capture = capture
        self._text: list[str] = []
        self._size = 0

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None,
                    flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available to scripts")
        sep = " " if sep is None else guards._exact_name(sep)
        end = "\n" if end is None else guards._exact_name(end)
        text = sep.join(str(obj) for obj in objects) + end
        # ``printed`` is capped like the captured output: a print loop must not
        # grow an unbounded buffer behind the script's back.
        room = self._capture._limit - self._size
        if room > 0:
            self._text.append(text[:room])
            self._size += min(len(text), room)
        self._capture.write(text)

    def __call__(self) -> str:
        return "".join(self._text)


class Callback:
    """The one-shot ``callback`` a script receives; a fresh one per invocation.

    It records the first call's outcome and counts the calls.  Once the
    invocation is over (``_close()``), further calls -- from a reference kept in
    ``global_`` -- raise ``RuntimeError`` in the calling script instead of
    touching the finished result.
    """

    __slots__ = ("_calls", "_first", "_open", "_result_bytes")

    def __init__(self, result_bytes: int) -> None:
        self._calls = 0
        self._first: dict[str, Any] | None = None
        self._open = True
        self._result_bytes = result_bytes

    def __call__(self, err: Any = None, value: Any = None) -> None:
        if not self._open:
            raise RuntimeError("callback of an invocation that has already finished")
        self._calls += 1
        if self._calls == 1:
            try:
                self._first = self._outcome(err, value)
            except Exception as exc:
                # Script code can run inside _outcome (a property of the error
                # read by errors.describe, a RecursionError at the stack limit).
                # Letting it escape would leave a counted call with no outcome:
                # the runner would then report ok=False with error=None, a frame
                # the supervisor treats as hostile (protocol_error, worker killed).
                self._first = _invalid_result(
                    f"callback arguments could not be read: {type(exc).__name__}: {errors._text(exc)}")

    def _outcome(self, err: Any, value: Any) -> dict[str, Any]:
        if err is not None:
            described = errors.describe(err)
            error = wire.worker_error("script_error", described.pop("name"), described.pop("message"),
                                      **described, source="callback")
            return {"ok": False, "result": None, "error": error}
        try:
            # An immutable scalar (the common case) is its own copy; its text is
            # what the encoder would write, without the encoder's entry cost.
            text = wire.scalar_json(value)
            scalar = text is not None
            if not scalar:
                text = _value_json(value)
            # Strict UTF-8, inside the try: a lone surrogate ("\ud800") is valid
            # JSON text but not UTF-8, and frames to the supervisor are UTF-8.
            size = len(text) if text.isascii() else len(text.encode("utf-8"))
        except (TypeError, ValueError, RecursionError, OverflowError) as exc:
            return _invalid_result(f"callback value is not JSON-serialisable: {errors._text(exc)}")
        if size > self._result_bytes:
            return _invalid_result(
                f"callback value is {size} bytes of JSON; the limit is {self._result_bytes}",
                size=size, limit=self._result_bytes)
        # A container is copied through its JSON text: later changes by the
        # script (it may keep a reference) do not reach the result.
        return {"ok": True, "result": value if scalar else json.loads(text), "error": None}

    def _close(self) -> None:
        self._open = False


def _json_default(obj: Any) -> Any:
    if isinstance(obj, guards.ReadOnlyMapping):
        return guards.thaw(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: ``json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"),
#: default=_json_default)``, with the encoder built once instead of per call.
_value_json = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"),
                               default=_json_default).encode


def _invalid_result(message: str, **details: Any) -> dict[str, Any]:
    error = wire.worker_error("invalid_result", "InvalidResult", message, **details)
    return {"ok": False, "result": None, "error": error}


#: Traceback entries kept in an error (first and last halves of the script's frames).
TRACEBACK_FRAMES = 20


def _script_frames(tb: types.TracebackType | None, filename: str) -> list[dict[str, Any]]:
    """Frames of the tenant's file only, outermost first (no host paths, no facades).

    Runs of the same frame (deep recursion) collapse into one entry with
    ``repeat``; at most ``TRACEBACK_FRAMES`` entries are kept, with an
    ``{"omitted": n}`` entry between the outer and inner halves.
    """
    shown = os.path.basename(filename)
    frames: list[dict[str, Any]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            frame = {"file": shown, "line": tb.tb_lineno, "function": code.co_name}
            last = frames[-1] if frames else None
            if last is not None and all(last[k] == frame[k] for k in frame):
                last["repeat"] = last.get("repeat", 1) + 1
            else:
                frames.append(frame)
        tb = tb.tb_next
    if len(frames) > TRACEBACK_FRAMES:
        half = TRACEBACK_FRAMES // 2
        frames = frames[:half] + [{"omitted": len(frames) - 2 * half}] + frames[-half:]
    return frames


def _arity_problem(fn: types.FunctionType, name: str, given: int) -> str | None:
    """Why ``fn(*args, callback)`` cannot bind ``given`` arguments, in the caller's terms.

    Python's own message would count the callback the engine appends
    ("missing 2 required positional arguments: 'password' and 'callback'").
    """
    code = fn.__code__
    if code.co_flags & 0x04:  # *args: any number binds
        return None
    argcount = code.co_argcount
    if argcount and argcount - 1 - len(fn.__defaults__ or ()) <= given < argcount:
        return None  # binds (the per-call path: no lists built)
    params = list(code.co_varnames[:argcount])
    if not params:
        return f"{name}() takes no parameters, but every script function takes callback as its last one"
    required = code.co_argcount - len(fn.__defaults__ or ())
    user = params[:-1]
    if required - 1 <= given <= len(user):
        return None
    wanted = f"{len(user)}" if required - 1 == len(user) else f"{max(required - 1, 0)} to {len(user)}"
    return (f"{name}() takes {wanted} argument(s) ({', '.join(user) or 'none'}) before callback, "
            f"but {given} {'was' if given == 1 else 'were'} given")


def _exception_error(exc: BaseException, filename: str) -> dict[str, Any]:
    described = errors.describe(exc)
    return wire.worker_error("script_error", described.pop("name"), described.pop("message"),
                             **described, source="exception",
                             traceback=_script_frames(exc.__traceback__, filename))


def _clean_text(text: str, limit: int | None = None) -> str:
    """``text`` as strict UTF-8-encodable text of at most ``limit`` characters."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} characters cut]"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the supervisor decodes frames strictly
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_error(value: Any, depth: int = 0) -> Any:
    """An error value (built here from script-controlled text) made fit for a result frame."""
    if type(value) is str:
        return _clean_text(value, policy.ERROR_TEXT_CHARS)
    if value is None or type(value) in (int, bool):
        return value
    if type(value) is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if depth < 6 and type(value) is dict:
        # "result" (double_callback's first outcome) was checked by Callback already
        return {_clean_text(str(k), policy.ERROR_NAME_CHARS): v if k == "result" else _clean_error(v, depth + 1)
                for k, v in value.items()}
    if depth < 6 and type(value) is list:
        items = [_clean_error(v, depth + 1) for v in value[:policy.ERROR_LIST_ITEMS]]
        if len(value) > policy.ERROR_LIST_ITEMS:
            items.append(f"[{len(value) - policy.ERROR_LIST_ITEMS} more cut]")
        return items
    return errors._text(value)


def _wire_safe(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome clipped to what the supervisor accepts in a result frame.

    Script-controlled text ends up in logs and errors: a lone surrogate, 64k
    empty printed lines, a 300-character exception class name or a compile
    error quoting a 100k-character identifier each used to make the frame
    invalid, and the supervisor kills a worker that sends an invalid frame
    (``protocol_error``), losing ``global_`` and the script's real error.
    """
    # log lines: already capped in number and bytes by OutputCapture
    outcome["logs"] = [_clean_text(line) for line in outcome["logs"]]
    if outcome.get("ok"):
        outcome["error"] = None
        return outcome
    error = outcome.get("error")
    if type(error) is not dict:
        error = wire.worker_error("invalid_result", "InvalidResult",
                                  "the invocation ended without a result or an error")
    error = _clean_error(error)
    error["name"] = _clean_text(str(error.get("name") or "Error"), policy.ERROR_NAME_CHARS)
    if type(error.get("message")) is not str:  # a str was clipped by _clean_error already
        error["message"] = _clean_text(str(error.get("message") or ""), policy.ERROR_TEXT_CHARS)
    outcome["ok"], outcome["result"], outcome["error"] = False, None, error
    return outcome


class Runner:
    """Runs invocations for one worker (one tenant), keeping ``global_`` and compiled code."""

    def __init__(self, ctx: context.WorkerContext) -> None:
        self.ctx = ctx
        #: The per-worker dict scripts see as ``global_``: lives as long as this Runner.
        self.global_: dict[str, Any] = {}
        self._codes: OrderedDict[tuple[str, str], Any] = OrderedDict()
        #: ms the last cache miss spent compiling (0 after a hit); the worker reports it.
        self.compile_ms = 0.0
        self._builtins = policy.make_builtins()
        #: Globals every invocation gets unchanged: the guard hooks and the injected errors.
        self._fixed_globals: dict[str, Any] = {
            **{name: hook for name, (hook, _reason) in policy.GUARDS.items()},
            **errors.INJECTED_ERRORS,
        }
        #: What ``_globals`` copies each call: the per-call names (set after the
        #: copy) first, then the fixed ones; one dict copy instead of building
        #: the dict and merging the fixed names into it.
        self._scope_template: dict[str, Any] = {
            "__builtins__": self._builtins, "__name__": None, "_print_": None, "callback": None,
            "configuration": None, "global_": None, **self._fixed_globals,
        }
        #: Module ``__name__`` per script path (the file's stem).
        self._stems: dict[str, str] = {}
        self._output_bytes = ctx.limits.output_bytes
        self._result_bytes = ctx.limits.result_bytes
        if sys.getrecursionlimit() > policy.RECURSION_LIMIT:
            sys.setrecursionlimit(policy.RECURSION_LIMIT)

    # compile cache ---------------------------------------------------------
    def compiled(self, path: str, source: str, source_hash: str = "") -> Any:
        """Code object or ``CompileFailure`` for ``source``, cached per (path, hash)."""
        if not source_hash:
            source_hash = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        key = (path, source_hash)
        try:
            self._codes.move_to_end(key)
            return self._codes[key]
        except KeyError:
            pass
        t0 = time.perf_counter()
        code = policy.compile_script(source, path)
        self.compile_ms = (time.perf_counter() - t0) * 1000.0
        self._codes[key] = code
        while len(self._codes) > policy.COMPILE_CACHE_SIZE:
            self._codes.popitem(last=False)
        return code

    # invocation --------------------------------------------------------------
    def invoke(self, path: str, source: str, source_hash: str = "", function: str | None = "",
               args: list[Any] | None = None, configuration: dict[str, Any] | None = None,
               timeout: float = 20.0) -> dict[str, Any]:
        """Run ``function(*args, callback)`` from ``source``. Returns the protocol result dict."""
        capture = OutputCapture(self._output_bytes)
        callback = Callback(self._result_bytes)
        inv = context.Invocation(worker=self.ctx, deadline=time.monotonic() + float(timeout),
                                 log=capture.line)
        context.set_current(inv)
        try:
            outcome = self._run(path, source, source_hash, function, args, configuration,
                                callback, capture)
        except (KeyboardInterrupt, SystemExit):
            raise  # the worker's own signals, not the script's
        except BaseException as exc:  # never raise: the worker must answer
            outcome = {"ok": False, "result": None, "error": wire.worker_error(
                "script_error", type(exc).__name__, errors._text(exc), source="runner")}
        finally:
            callback._close()
            context.set_current(None)
        outcome["logs"] = capture.lines()
        return _wire_safe(outcome)

    def _run(self, path: str, source: str, source_hash: str, function: str | None,
             args: list[Any] | None, configuration: dict[str, Any] | None,
             callback: Callback, capture: OutputCapture) -> dict[str, Any]:
        path = str(path)
        stem = self._stems.get(path)
        if stem is None:
            if len(self._stems) >= policy.COMPILE_CACHE_SIZE:
                self._stems.clear()
            stem = self._stems[path] = os.path.splitext(os.path.basename(path))[0]
        function = function or stem
        code = self.compiled(path, source, source_hash)
        if isinstance(code, policy.CompileFailure):
            return {"ok": False, "result": None, "error": code.to_error()}

        scope = self._globals(stem, callback, configuration, capture)
        try:
            exec(code, scope)
            fn = scope.get(function)
            if type(fn) is not types.FunctionType or fn.__code__.co_filename != path:
                return {"ok": False, "result": None, "error": wire.worker_error(
                    "not_found", "NotFound",
                    f"function {function!r} is not defined in {os.path.basename(path)}",
                    function=function)}
            arity = _arity_problem(fn, function, len(args or ()))
            if arity is not None:
                return {"ok": False, "result": None, "error": wire.worker_error(
                    "script_error", "TypeError", arity, source="runner")}
            fn(*(args or ()), callback)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raised = _exception_error(exc, path)
            if isinstance(exc, MemoryError) and not str(exc):
                # CPython's MemoryError says nothing: name the limit that was hit
                raised["message"] = (f"out of memory: this worker's memory limit is "
                                     f"{self.ctx.limits.memory_mb} MiB (limits.memory_mb in tenant.toml)")
            if callback._calls == 1:
                # The result was already given; the late exception is only reported.
                capture.line(f"[scriptvisor: exception after callback: {raised['name']}: {raised['message']}]")
            elif callback._calls == 0:
                return {"ok": False, "result": None, "error": raised}
        return self._callback_outcome(callback)

    @staticmethod
    def _callback_outcome(callback: Callback) -> dict[str, Any]:
        if callback._calls == 0:
            return {"ok": False, "result": None, "error": wire.worker_error(
                "stall", "Stall", "the function returned without calling callback")}
        first = callback._first or {}
        if callback._calls > 1:
            return {"ok": False, "result": None, "error": wire.worker_error(
                "double_callback", "DoubleCallback",
                f"callback was called {callback._calls} times; it must be called exactly once",
                calls=callback._calls, first=first)}
        return {"ok": first.get("ok", False), "result": first.get("result"), "error": first.get("error")}

    def _globals(self, stem: str, callback: Callback, configuration: dict[str, Any] | None,
                 capture: OutputCapture) -> dict[str, Any]:
        # Fresh for every invocation: module-level names never outlive a call
        # (only global_ does), and configuration is a new frozen copy.
        scope = self._scope_template.copy()
        scope["__name__"] = stem
        scope["_print_"] = lambda _getattr_=None: _PrintCollector(capture)
        scope["callback"] = callback
        scope["configuration"] = guards.freeze(
            configuration if type(configuration) is dict else dict(configuration or {}))
        scope["global_"] = self.global_
        return scope
