"""Run-time guards that RestrictedPython's compiled code calls.

The compiler (``sandbox.policy.ScriptPolicy``) rewrites every attribute
read into ``_getattr_(obj, name)``, every subscript into ``_getitem_``, every
store target into ``_write_(obj)``, every iteration into ``_getiter_``, and
so on.  This module holds those hooks.  Three ideas run through them:

* **Names are checked as exact ``str``.**  A script may subclass ``str`` and
  make ``startswith`` lie; every name is first turned into a plain ``str``.
* **A value firewall.**  Whatever crosses into the script through an
  attribute, an item or an iteration passes ``check_value``, which refuses
  the object types that lead back to the interpreter (modules, frames, code,
  tracebacks, cells) and ``mappingproxy`` (whose reflected comparison hands
  out the mutable dict behind it).  The facades never return such things
  (tests/security/test_reachability.py walks them); this is the second wall.
* **Writes only to what the script made.**  ``_write_`` lets a script mutate
  plain ``dict``/``list``/``set``/``bytearray`` objects and instances of
  classes it defined itself, never facades, configuration or injected objects.

Builtins that iterate in C (``tuple``, ``sorted``, ``zip``...) would skip
``_getiter_``; ``guarded_builtins()`` returns versions that iterate through
it.  ``str.join``/``bytes.join`` are wrapped the same way in ``_getattr_``.
"""

from __future__ import annotations

import _string  # the C parser behind str.format; host-side only
import builtins
import operator
import sys
import types
import weakref
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

__all__ = [
    "DENIED_ATTRIBUTES",
    "ReadOnlyMapping",
    "check_value",
    "freeze",
    "guarded_apply",
    "guarded_builtins",
    "guarded_contains",
    "guarded_getattr",
    "guarded_getitem",
    "guarded_getiter",
    "guarded_hasattr",
    "guarded_import",
    "guarded_inplacevar",
    "guarded_iter_unpack",
    "guarded_mapping",
    "guarded_unpack",
    "guarded_write",
    "guarded_yield_from",
    "script_class",
]

# --------------------------------------------------------------------------
# attribute names a script may never read (besides every name starting "_")

#: Each entry: the object it is found on and why it is denied.
DENIED_ATTRIBUTES: frozenset[str] = frozenset({
    # generator / coroutine / async generator internals -> frames and code
    "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "gi_suspended",
    "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running", "cr_suspended",
    "ag_frame", "ag_code", "ag_await", "ag_running",
    # frames: caller frames, their globals (the host's modules) and builtins
    "f_back", "f_globals", "f_builtins", "f_locals", "f_code", "f_trace",
    "f_generator", "f_lasti", "f_lineno",
    # tracebacks: the way from an exception to the frames that raised it
    "tb_frame", "tb_next", "tb_lasti", "tb_lineno",
    # code objects (bytecode, constants holding other code objects)
    "co_code", "co_consts", "co_names", "co_varnames", "co_filename",
    # AttributeError.obj: the object a failed lookup was made on (a host object)
    "obj",
    # type.mro(): the class hierarchy, the start of every subclass walk
    "mro",
    # property construction from a descriptor found on a facade class
    # (re.Pattern.pattern.getter(f)): ``property`` is not a builtin, so these
    # would be the back door to running script code inside host attribute reads
    "getter", "setter", "deleter", "fget", "fset", "fdel",
    # format-string mini language can read attributes: checked wrappers instead
    # (see _checked_format); listed so that other types' versions stay closed
    "format_field", "get_field", "get_value", "vformat",
    # dict views: .mapping is a mappingproxy of the dict behind the view
    "mapping",
})

#: ``format``/``format_map`` are served by checked wrappers on ``str``.
_FORMAT_NAMES = frozenset({"format", "format_map"})

#: Object types that must never reach a script, whatever the route.
FORBIDDEN_VALUE_TYPES: frozenset[type] = frozenset({
    types.ModuleType,       # a module's public attributes reach os/sys
    types.FrameType,        # f_globals / f_builtins of host code
    types.CodeType,         # bytecode; with a function constructor, arbitrary code
    types.TracebackType,    # tb_frame
    types.CellType,         # closure cells of host functions
    types.MappingProxyType, # reflected __eq__ leaks the mutable dict behind it
})

#: Types a script may mutate in place (besides classes it defined).
WRITABLE_TYPES: frozenset[type] = frozenset({dict, list, set, bytearray})

_SCRIPT_CLASSES: "weakref.WeakSet[type]" = weakref.WeakSet()


class SandboxError(Exception):
    """Base of the guard refusals a script sees (an ordinary, catchable Exception)."""


def _exact_name(name: Any) -> str:
    """``name`` as an exact ``str`` (a subclass could lie in startswith/__eq__/__hash__)."""
    if type(name) is str:
        return name
    if isinstance(name, str):
        return str.__str__(name)  # the C slot: always returns an exact str copy
    raise TypeError("attribute name must be a string")


def check_value(value: Any) -> Any:
    """Return ``value`` unless its type is one that leads back into the interpreter."""
    if type(value) in FORBIDDEN_VALUE_TYPES:
        raise SandboxError(f"{type(value).__name__} objects are not available to scripts")
    return value


# --------------------------------------------------------------------------
# _getattr_


def _check_format_template(template: str, depth: int = 0) -> None:
    """Refuse replacement fields that index or read attributes (``{0.__class__}``, ``{0[x]}``)."""
    if depth > 2:  # str.format itself refuses deeper nesting of format specs
        raise ValueError("Max string recursion exceeded")
    for _literal, field, spec, _conversion in _string.formatter_parser(template):
        if field is None:
            continue
        _first, rest = _string.formatter_field_name_split(field)
        for _is_attr, _key in rest:
            raise SandboxError(
                "format fields may only name an argument, not read its attributes or items")
        if spec:
            _check_format_template(spec, depth + 1)


def _checked_format(template: str) -> Callable[..., str]:
    template = _exact_name(template)

    def format(*args: Any, **kwargs: Any) -> str:  # noqa: A001 - mirrors str.format
        _check_format_template(template)
        return str.format(template, *args, **kwargs)

    return format


def _checked_format_map(template: str) -> Callable[[Any], str]:
    template = _exact_name(template)

    def format_map(mapping: Any) -> str:
        _check_format_template(template)
        return str.format_map(template, mapping)

    return format_map


def _unbound_format(template: Any, *args: Any, **kwargs: Any) -> str:
    return _checked_format(template)(*args, **kwargs)


def _unbound_format_map(template: Any, mapping: Any) -> str:
    return _checked_format_map(template)(mapping)


def _guarded_join(method: Callable[[Iterable[Any]], Any]) -> Callable[[Iterable[Any]], Any]:
    def join(iterable: Iterable[Any]) -> Any:
        return method(guarded_getiter(iterable))

    return join


def _guarded_unbound_join(cls: type) -> Callable[[Any, Iterable[Any]], Any]:
    def join(separator: Any, iterable: Iterable[Any]) -> Any:
        return cls.join(separator, guarded_getiter(iterable))

    return join


_JOINABLE = (str, bytes, bytearray)


def _guarded_dict_update(method: Callable[..., Any]) -> Callable[..., None]:
    def update(*args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        method(guarded_mapping(args[0]) if args else {}, **kwargs)

    return update


def _guarded_one_iterable(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(iterable: Any, *rest: Any) -> Any:
        return method(guarded_getiter(iterable), *rest)

    call.__name__ = call.__qualname__ = method.__name__
    return call


def _guarded_set_operation(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*others: Any) -> Any:
        return method(*[other if type(other) in (set, frozenset) else guarded_getiter(other)
                        for other in others])

    call.__name__ = call.__qualname__ = method.__name__
    return call


_SET_OPERATIONS = ("update", "union", "intersection", "difference", "symmetric_difference",
                   "intersection_update", "difference_update", "symmetric_difference_update")

#: Methods of the builtin containers that iterate (or read as a mapping) a
#: foreign argument in C and keep its items: ``d.update(x)``, ``l.extend(x)``,
#: ``{}.fromkeys(x)``, ``s.union(x)``... would put items into a container the
#: script reads with ``.get()``/``.pop()`` without passing ``_getiter_`` (the
#: methods-level twin of the C-iterating builtins). name -> (types, wrapper).
_ITERATING_METHODS: dict[str, tuple[tuple[type, ...], Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
    "extend": ((list,), _guarded_one_iterable),
    "fromkeys": ((dict,), _guarded_one_iterable),
    **{name: ((set, frozenset), _guarded_set_operation) for name in _SET_OPERATIONS},
}
_MISSING = object()


def guarded_getattr(obj: Any, name: Any, default: Any = _MISSING) -> Any:
    """``obj.name`` for public, non-introspective names; the result passes the value firewall.

    Also the script's ``getattr`` builtin (so ``getattr(x, "__class__")`` is
    refused the same way as ``x.__class__`` is at compile time).
    """
    name = _exact_name(name)
    if name[:1] == "_" or name in DENIED_ATTRIBUTES:
        raise AttributeError(f"access to attribute {name!r} is not allowed in scripts")
    if name in _FORMAT_NAMES:
        if isinstance(obj, str):
            return _checked_format(obj) if name == "format" else _checked_format_map(obj)
        if isinstance(obj, type) and issubclass(obj, str):
            return _unbound_format if name == "format" else _unbound_format_map
    if name in _SEARCH_METHODS and isinstance(obj, (list, tuple)):
        return _guarded_search(getattr(obj, name), obj)
    if name == "update" and isinstance(obj, dict):
        return _guarded_dict_update(getattr(obj, "update"))
    if name in _ITERATING_METHODS:
        kinds, wrap = _ITERATING_METHODS[name]
        if isinstance(obj, kinds):
            return wrap(getattr(obj, name))
    if name == "join":
        if isinstance(obj, _JOINABLE):
            return _guarded_join(getattr(obj, "join"))
        if isinstance(obj, type) and issubclass(obj, _JOINABLE):
            return _guarded_unbound_join(obj)
    if default is _MISSING:
        value = getattr(obj, name)
    else:
        value = getattr(obj, name, default)
    return check_value(value)


def guarded_hasattr(obj: Any, name: Any) -> bool:
    """``hasattr`` that answers False for every name the script could not read."""
    try:
        guarded_getattr(obj, name)
    except (AttributeError, SandboxError):
        return False
    return True


# --------------------------------------------------------------------------
# _getitem_, _getiter_, unpacking, _write_, _inplacevar_, _apply_


def guarded_getitem(obj: Any, key: Any) -> Any:
    return check_value(obj[key])


#: Iterating these yields only str/bytes/int: no per-item check needed.
_PLAIN_ITERABLES = (str, bytes, bytearray, range)


def _checked_items(iterator: Iterator[Any]) -> Iterator[Any]:
    for item in iterator:
        yield check_value(item)


def guarded_getiter(obj: Any) -> Iterator[Any]:
    """``iter(obj)`` whose items pass the value firewall."""
    if type(obj) in _PLAIN_ITERABLES:
        return iter(obj)
    return _checked_items(iter(obj))


#: Containers whose ``in`` never hands an element to the item's ``__eq__``:
#: substring search, and hash lookups (a class whose ``__eq__`` the script
#: defined is unhashable, so it cannot be looked up at all).
_HASHED_OR_TEXT = (str, bytes, bytearray, dict, set, frozenset, type({}.keys()))


def guarded_contains(container: Any, item: Any) -> bool:
    """``item in container``.

    A script class may define ``__eq__``; ``in`` compares every element of a
    list, tuple or iterable with the item, and when the element's own
    ``__eq__`` declines, Python calls the item's reflected ``__eq__`` with the
    element: the script would see each element without ``_getiter_``. So for
    items of script classes the elements are read through the firewall.
    """
    if type(item) not in _SCRIPT_CLASSES or isinstance(container, _HASHED_OR_TEXT) \
            or type(container) in _SCRIPT_CLASSES:
        return item in container
    for element in guarded_getiter(container):
        if element is item or element == item:
            return True
    return False


def _guarded_search(method: Callable[..., Any], container: Any) -> Callable[..., Any]:
    """``list.index/count/remove`` and ``tuple.index/count``: ``==`` on every element, as ``in``."""
    def call(value: Any, *rest: Any) -> Any:
        if type(value) in _SCRIPT_CLASSES:
            for element in container:
                check_value(element)
        return method(value, *rest)

    call.__name__ = call.__qualname__ = method.__name__
    return call


_SEARCH_METHODS = frozenset({"index", "count", "remove"})


def guarded_yield_from(obj: Any) -> Any:
    """What ``yield from obj`` delegates to: ``obj``'s items through the value firewall.

    Generators running script code (their own ``yield from`` is guarded the
    same way) and the firewall's own checked iterators are delegated to as
    they are, so ``send()``/``throw()`` keep reaching a script's
    sub-generator; anything else is iterated through ``guarded_getiter``.
    """
    if type(obj) is types.GeneratorType:
        frame = obj.gi_frame
        if (frame is None  # finished: yields nothing more
                or obj.gi_code is _checked_items.__code__
                or frame.f_globals.get("_getiter_") is guarded_getiter):  # compiled script code
            return obj
    return guarded_getiter(obj)


def guarded_iter_unpack(it: Any, spec: Any, _getiter_: Any = guarded_getiter) -> Any:
    return guarded_iter_unpack_sequence(it, spec, guarded_getiter)


def guarded_unpack(it: Any, spec: Any, _getiter_: Any = guarded_getiter) -> Any:
    return guarded_unpack_sequence(it, spec, guarded_getiter)


def guarded_mapping(obj: Any) -> dict[Any, Any]:
    """A fresh dict of ``obj``'s items, read through the guards (for ``**obj`` and ``dict(obj)``)."""
    if type(obj) is dict:
        return {key: check_value(value) for key, value in obj.items()}
    if isinstance(obj, Mapping) or guarded_hasattr(obj, "keys"):
        keys = guarded_getattr(obj, "keys")()
        return {key: guarded_getitem(obj, key) for key in guarded_getiter(keys)}
    return builtins.dict(guarded_getiter(obj))


def script_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
    """The ``__metaclass__`` of every class a script defines: records it as script-made."""
    cls = builtins.type(name, bases, namespace)
    _SCRIPT_CLASSES.add(cls)
    return cls


def guarded_write(obj: Any) -> Any:
    """Allow item/attribute stores only on containers and class instances the script owns."""
    cls = type(obj)
    if cls in WRITABLE_TYPES or cls in _SCRIPT_CLASSES:
        return obj
    if isinstance(obj, type) and obj in _SCRIPT_CLASSES:
        return obj
    raise TypeError(f"{cls.__name__} objects cannot be modified by scripts")


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul,
    "/=": operator.itruediv, "//=": operator.ifloordiv, "%=": operator.imod,
    "**=": operator.ipow, "<<=": operator.ilshift, ">>=": operator.irshift,
    "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``target op= value`` for names; ``list +=`` and ``dict |=`` iterate through the guards."""
    if op == "+=" and isinstance(target, list) and not isinstance(value, list):
        value = builtins.list(guarded_getiter(value))
    elif op == "|=" and isinstance(target, dict) and type(value) is not dict:
        value = guarded_mapping(value)
    return _INPLACE[op](target, value)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``; the compiler already wrapped starred arguments."""
    return func(*args, **kwargs)


# --------------------------------------------------------------------------
# builtins that iterate in C, re-expressed over guarded_getiter


def _wrapped_builtins() -> dict[str, Callable[..., Any]]:
    gi = guarded_getiter

    def list(iterable: Iterable[Any] = ()) -> builtins.list[Any]:  # noqa: A001
        return builtins.list(gi(iterable))

    def tuple(iterable: Iterable[Any] = ()) -> builtins.tuple[Any, ...]:  # noqa: A001
        return builtins.tuple(gi(iterable))

    def set(iterable: Iterable[Any] = ()) -> builtins.set[Any]:  # noqa: A001
        return builtins.set(gi(iterable))

    def frozenset(iterable: Iterable[Any] = ()) -> builtins.frozenset[Any]:  # noqa: A001
        return builtins.frozenset(gi(iterable))

    def dict(*args: Any, **kwargs: Any) -> builtins.dict[Any, Any]:  # noqa: A001
        if len(args) > 1:
            raise TypeError(f"dict expected at most 1 argument, got {len(args)}")
        out = guarded_mapping(args[0]) if args else {}
        out.update(kwargs)
        return out

    def sorted(iterable: Iterable[Any], *, key: Any = None, reverse: bool = False) -> builtins.list[Any]:  # noqa: A001
        return builtins.sorted(gi(iterable), key=key, reverse=reverse)

    def reversed(sequence: Any) -> Iterator[Any]:  # noqa: A001
        return builtins.reversed(builtins.list(gi(sequence)))

    def enumerate(iterable: Iterable[Any], start: int = 0) -> Iterator[Any]:  # noqa: A001
        return builtins.enumerate(gi(iterable), start)

    def zip(*iterables: Iterable[Any], strict: bool = False) -> Iterator[Any]:  # noqa: A001
        return builtins.zip(*[gi(it) for it in iterables], strict=strict)

    def map(function: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:  # noqa: A001
        return builtins.map(function, *[gi(it) for it in iterables])

    def filter(function: Any, iterable: Iterable[Any]) -> Iterator[Any]:  # noqa: A001
        return builtins.filter(function, gi(iterable))

    def sum(iterable: Iterable[Any], start: Any = 0) -> Any:  # noqa: A001
        return builtins.sum(gi(iterable), start)

    def any(iterable: Iterable[Any]) -> bool:  # noqa: A001
        return builtins.any(gi(iterable))

    def all(iterable: Iterable[Any]) -> bool:  # noqa: A001
        return builtins.all(gi(iterable))

    def _extreme(real: Callable[..., Any]) -> Callable[..., Any]:
        def extreme(*args: Any, **kwargs: Any) -> Any:
            if len(args) == 1:
                return real(gi(args[0]), **kwargs)
            return real(*args, **kwargs)  # several positional values: no iteration of a foreign object
        extreme.__name__ = real.__name__
        return extreme

    def iter(obj: Any, *sentinel: Any) -> Iterator[Any]:  # noqa: A001
        if sentinel:
            return _checked_items(builtins.iter(obj, *sentinel))
        return gi(obj)

    def bytes(source: Any = b"", *args: Any) -> builtins.bytes:  # noqa: A001
        if args or isinstance(source, (int, str, builtins.bytes, bytearray)):
            return builtins.bytes(source, *args)
        return builtins.bytes(gi(source))

    def bytearray_(source: Any = b"", *args: Any) -> builtins.bytearray:
        if args or isinstance(source, (int, str, builtins.bytes, builtins.bytearray)):
            return builtins.bytearray(source, *args)
        return builtins.bytearray(gi(source))

    bytearray_.__name__ = bytearray_.__qualname__ = "bytearray"

    def getattr(obj: Any, name: Any, *default: Any) -> Any:  # noqa: A001
        return guarded_getattr(obj, name, *default)

    def hasattr(obj: Any, name: Any) -> bool:  # noqa: A001
        return guarded_hasattr(obj, name)

    return {
        "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "dict": dict,
        "sorted": sorted, "reversed": reversed, "enumerate": enumerate, "zip": zip,
        "map": map, "filter": filter, "sum": sum, "any": any, "all": all,
        "min": _extreme(builtins.min), "max": _extreme(builtins.max), "iter": iter,
        "bytes": bytes, "bytearray": bytearray_, "getattr": getattr, "hasattr": hasattr,
    }


def guarded_builtins() -> dict[str, Callable[..., Any]]:
    """Fresh guarded replacements for the builtins that iterate or look up attributes."""
    return _wrapped_builtins()


# --------------------------------------------------------------------------
# read-only configuration


class ReadOnlyMapping(Mapping):
    """A JSON object a script can read but not change (``configuration``).

    Not a ``dict`` subclass (``dict.update(proxy, ...)`` would bypass it) and
    not a ``mappingproxy`` (its reflected ``__eq__`` hands out the dict).
    Nested objects are frozen too: dicts become ``ReadOnlyMapping``, lists
    become tuples.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", data)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("configuration is read-only")

    def __repr__(self) -> str:
        return f"configuration({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A mutable deep copy (lists again lists), e.g. to return it as JSON."""
        return thaw(self)


def freeze(value: Any) -> Any:
    """Deep read-only copy of a JSON value."""
    if isinstance(value, dict):
        return ReadOnlyMapping({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of ``freeze`` (used when a script returns configuration values)."""
    if isinstance(value, ReadOnlyMapping):
        return {k: thaw(v) for k, v in value._data.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------
# import


#: Stdlib modules that C code imports lazily *through the calling frame's
#: ``__import__``* (``PyImport_Import``), i.e. through this hook when a script
#: calls that C function directly: on Python 3.13 ``datetime.strptime``
#: imports ``_strptime`` on every call.  ``facades/stdlib.py`` imports them in
#: the zygote, before confinement; this hook then only has to let the
#: interpreter find them in ``sys.modules``, and returns ``None``, never the
#: module (``PyImport_Import`` discards the result and reads ``sys.modules``
#: itself).  A script cannot ask for them: RestrictedPython refuses ``import``
#: of ``_`` names at compile time.
HOST_LAZY_IMPORTS: frozenset[str] = frozenset({"_strptime"})


def guarded_import(name: Any, globals: Any = None, locals: Any = None,
                   fromlist: Any = (), level: int = 0) -> Any:
    """The script's ``__import__``: allowlisted facade objects only, never a module.

    ``from json import dumps`` makes the interpreter read ``dumps`` from the
    returned object with a plain getattr, and fall back to ``sys.modules``
    lookups for names it lacks; so every name in ``fromlist`` must be a
    public attribute of the facade, checked here, before that happens.
    """
    from scriptvisor.sandbox import facades  # late: facades import this module's helpers

    name = _exact_name(name)
    if level == 0 and name in HOST_LAZY_IMPORTS and name in sys.modules:
        return None
    if level != 0 or name not in facades.FACADES:
        raise ImportError(f"module {name!r} is not available to scripts "
                          f"(allowed: {', '.join(sorted(facades.FACADES))})")
    try:
        facade = facades.load(name)
    except Exception as exc:
        raise ImportError(f"module {name!r} is not available on this host: {exc}") from None
    for item in fromlist or ():
        item = _exact_name(item)
        if item == "*" or not guarded_hasattr(facade, item):
            raise ImportError(f"cannot import name {item!r} from {name!r}")
    return facade
