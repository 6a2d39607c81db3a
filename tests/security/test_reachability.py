"""Walk everything a script can reach and fail on anything that leads to the host.

Starting points: the public names of a script's globals (injected objects and
builtins), every facade in ``sandbox.facades.FACADES``, and sample objects the
facades return.  From each object the walk follows exactly what a script can
follow: every public name in ``dir()`` that the guard's name check allows
(read with a plain getattr, so the value firewall is not relied upon), plus
the items of containers.

It fails on: modules, frames, code objects, tracebacks, cells; a module's
globals dict (a function's ``__globals__``); anything whose ``__module__`` is
os/sys/subprocess/ctypes/gc/operator/functools/importlib/pickle/socket; and
mutable host containers (dict/list/set/bytearray/mappingproxy) hanging off a
facade or a class, which a script could change under other code's feet.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections import deque
from typing import Any, Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scriptvisor.sandbox import facades, guards  # noqa: E402
from scriptvisor.sandbox.runner import Callback, OutputCapture  # noqa: E402
from tests.sandbox.helpers import make_runner  # noqa: E402

FORBIDDEN_MODULES = frozenset({
    "os", "posix", "sys", "subprocess", "_posixsubprocess", "ctypes", "_ctypes", "gc",
    "operator", "_operator", "functools", "_functools", "importlib", "pickle", "_pickle",
    "socket", "_socket",
})
FORBIDDEN_TYPES = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType,
                   types.CellType)
MUTABLE_CONTAINERS = (dict, list, set, bytearray, types.MappingProxyType)
#: Values whose attributes are methods of builtin scalar types: nothing to find there.
LEAVES = (type(None), bool, int, float, complex, str, bytes, range, slice, type(Ellipsis),
          type(NotImplemented))
MAX_NODES = 200_000


def _module_globals_ids() -> set[int]:
    return {id(vars(m)) for m in list(sys.modules.values()) if m is not None and hasattr(m, "__dict__")}


def _origin(obj: Any) -> str:
    """The module an object comes from (its own __module__ for classes/functions, else its type's)."""
    try:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            mod = obj.__module__
        else:
            mod = type(obj).__module__
    except Exception:
        return ""
    return (mod or "").split(".")[0]


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, (dict, types.MappingProxyType, guards.ReadOnlyMapping)):
        for key, value in list(obj.items()):
            yield f"[{key!r}]", key
            yield f"[{key!r}]", value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, item in enumerate(list(obj)):
            yield f"[{i}]", item
    try:
        names = dir(obj)
    except Exception:
        return
    for name in names:
        if name.startswith("_"):
            continue
        if name in guards.DENIED_ATTRIBUTES:  # the guard refuses the name itself
            continue
        try:
            # the name check only: what lies behind it must be clean without
            # relying on the value firewall (that is the second wall)
            value = getattr(obj, name)
        except Exception:  # a property that fails without state
            continue
        yield f".{name}", value


def walk(roots: dict[str, Any], allowed_mutables: tuple[int, ...] = ()) -> list[str]:
    """Paths to forbidden objects reachable from ``roots`` (empty list: clean)."""
    module_dicts = _module_globals_ids()
    problems: list[str] = []
    seen: set[int] = set()
    keep_alive: list[Any] = []  # ids stay unique while the walk runs
    queue: deque[tuple[str, Any, bool]] = deque((path, obj, True) for path, obj in roots.items())
    nodes = 0
    while queue:
        path, obj, is_root = queue.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        keep_alive.append(obj)
        nodes += 1
        assert nodes < MAX_NODES, f"walk did not converge (at {path})"
        if isinstance(obj, FORBIDDEN_TYPES):
            problems.append(f"{path}: {type(obj).__name__}")
            continue
        if id(obj) in module_dicts:
            problems.append(f"{path}: a module's globals")
            continue
        origin = _origin(obj)
        if origin in FORBIDDEN_MODULES:
            problems.append(f"{path}: object from module {origin!r} ({type(obj).__name__})")
            continue
        if (isinstance(obj, MUTABLE_CONTAINERS) and not is_root and id(obj) not in allowed_mutables):
            problems.append(f"{path}: mutable host container {type(obj).__name__}")
            continue
        if isinstance(obj, LEAVES):
            continue
        for suffix, child in _children(obj):
            if id(child) not in seen:
                queue.append((path + suffix, child, False))
    return problems


# --------------------------------------------------------------------------- roots


def _script_globals() -> dict[str, Any]:
    runner = make_runner()
    scope = runner._globals("script", Callback(1024), {"K": {"nested": [1, {"x": 2}]}},
                            OutputCapture(1024))
    roots = {name: value for name, value in scope.items() if not name.startswith("_")}
    roots.update({f"builtins.{name}": value for name, value in scope["__builtins__"].items()
                  if not name.startswith("_")})
    return roots


def _load_facade(name: str) -> Any:
    target = facades.FACADES[name]
    module_name = target.partition(":")[0]
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            # a facade scripts may import but whose module is missing is a defect, not a skip
            pytest.fail(f"facade {name!r} points at module {module_name}, which does not exist")
        raise
    return facades.load(name)


def _stdlib_samples() -> dict[str, Any]:
    """Objects scripts get back from the stdlib facades (the walk never calls anything)."""
    from scriptvisor.sandbox.facades import stdlib as s

    pattern = s.re.compile(r"(?P<a>a)(b)?")
    samples = {
        "hashlib.sha256()": s.hashlib.sha256(b"x"),
        "hashlib.blake2b()": s.hashlib.blake2b(b"x"),
        "hmac.new()": s.hmac.new(b"k", b"m", "sha256"),
        "re.compile()": pattern,
        "re.match()": pattern.match("ab"),
        "re.finditer()": pattern.finditer("abab"),
        "uuid.uuid4()": s.uuid.uuid4(),
        "uuid.uuid5()": s.uuid.uuid5(s.uuid.NAMESPACE_DNS, "x"),
        "datetime.now()": s.datetime.datetime.now(s.datetime.timezone.utc),
        "datetime.timedelta()": s.datetime.timedelta(seconds=1),
        "datetime.date.today()": s.datetime.date.today(),
        "time.gmtime()": s.time.gmtime(0),
    }
    try:
        s.json.loads("{bad")
    except Exception as exc:  # the decode error a script can catch
        samples["json.JSONDecodeError()"] = exc
    try:
        s.re.compile("(")
    except Exception as exc:
        samples["re.error()"] = exc
    return samples


def _fresh_containers(value: Any, out: set[int]) -> set[int]:
    """ids of the dicts/lists inside a facade's answer: fresh copies the script owns."""
    if isinstance(value, (dict, list)):
        out.add(id(value))
        for item in (value.values() if isinstance(value, dict) else value):
            _fresh_containers(item, out)
    return out


def _http_samples(tmp_path) -> tuple[dict[str, Any], set[int]]:
    """What the http facade hands a script: answers and the exceptions it raises, from a real API."""
    import time

    from scriptvisor.engine.tenants import load_tenant
    from scriptvisor.sandbox import context
    from scriptvisor.sandbox.facades.web import http
    from tests.web.legacy_server import start_legacy_server

    server = start_legacy_server()
    root = tmp_path / "reach"
    (root / "scripts").mkdir(parents=True)
    (root / "tenant.toml").write_text(f'[[http]]\nname = "api"\nbase_url = "{server.base_url}"\n')
    ctx = context.WorkerContext(tenant="reach", http=load_tenant(root).http_policy())
    context.set_worker(ctx)
    context.set_current(context.Invocation(worker=ctx, deadline=time.monotonic() + 5, log=lambda s: None))
    headers = {"Authorization": f"Bearer {server.api_key}"}
    samples: dict[str, Any] = {}
    try:
        samples["http.get()"] = http.get(server.base_url + "users?email=alice@example.com", headers=headers)
        samples["http.endpoints()"] = http.endpoints()
        for name, call in (
            ("HttpError", lambda: http.get(server.base_url + "users?email=nobody@example.com", headers=headers)),
            ("NotAllowed", lambda: http.get("http://127.0.0.2/")),
            ("ResponseTooLarge", lambda: http.get(server.base_url + "_big?bytes=3000000", headers=headers)),
            ("HttpTimeout", lambda: http.get(server.base_url + "_slow?seconds=5", headers=headers, timeout=0.1)),
        ):
            try:
                call()
            except http.HttpFailure as exc:
                samples[f"http.{name}()"] = exc
        assert sorted(samples) == sorted(["http.get()", "http.endpoints()", "http.HttpError()", "http.NotAllowed()",
                                          "http.ResponseTooLarge()", "http.HttpTimeout()"])
    finally:
        ctx.run_cleanups()
        context.set_current(None)
        context.set_worker(None)
        server.stop()
    fresh = _fresh_containers(samples["http.get()"], set())
    fresh |= _fresh_containers(samples["http.endpoints()"], set())
    return samples, fresh


# --------------------------------------------------------------------------- tests


def test_walker_finds_planted_leaks():
    """The walk itself must catch each kind of leak (else a clean result means nothing)."""
    import json as real_json
    import operator as real_operator

    def host_function():
        return None

    planted = types.SimpleNamespace(
        module=real_json, frame=sys._getframe(), code=host_function.__code__,
        op=real_operator.attrgetter("x"), state={"k": 1}, proxy=types.MappingProxyType({}),
        nested=types.SimpleNamespace(deeper=(1, [os])),
    )
    found = "\n".join(walk({"planted": planted}))
    for fragment in ("planted.module: module", "planted.frame: frame", "planted.code: code",
                     "planted.op: object from module 'operator'",
                     "planted.state: mutable host container dict",
                     "planted.proxy: mutable host container mappingproxy",
                     "planted.nested.deeper[1]: mutable host container list"):
        assert fragment in found, found


def test_cant_reach_host_objects_from_script_globals():
    roots = _script_globals()
    global_ = roots["global_"]
    assert walk(roots, allowed_mutables=(id(global_),)) == []


def test_cant_reach_host_objects_from_stdlib_return_values():
    assert walk(_stdlib_samples()) == []


def test_cant_reach_host_objects_from_http_answers(tmp_path):
    """Answers are plain dicts (their containers are the script's own copies); exceptions carry plain values."""
    samples, fresh = _http_samples(tmp_path)
    assert walk(samples, allowed_mutables=tuple(fresh)) == []
    err = samples["http.HttpError()"]
    assert (type(err.status), type(err.body), type(err.url)) == (int, str, str)


@pytest.mark.parametrize("name", sorted(facades.FACADES))
def test_cant_reach_host_objects_from_facade(name):
    facade = _load_facade(name)
    assert not isinstance(facade, types.ModuleType), f"{name} is a raw module"
    assert walk({name: facade}) == []


@pytest.mark.parametrize("name", sorted(facades.FACADES))
def test_cant_import_facade_as_module(name):
    """The import hook hands out exactly the facade object, never a module."""
    _load_facade(name)
    assert not isinstance(guards.guarded_import(name), types.ModuleType)
