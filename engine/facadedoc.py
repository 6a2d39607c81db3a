"""The facade reference (``docs/facades.md``, ``scriptvisor facades``), generated from the code.

Everything a script can name is listed, one line each, read from the same
objects the worker hands to scripts:

* the globals the runner injects (``callback``, ``configuration``, ``global_``
  and the error classes of ``sandbox.errors.INJECTED_ERRORS``);
* the builtins of ``sandbox.policy.BUILTINS`` (with the reason each is there);
* every facade of the registry ``sandbox.facades.FACADES``, each public member
  with its signature and the first line of its docstring; a method whose
  return annotation is a class of the sandbox (a database connection, a regex
  match) gets that class documented too.

A new facade appears here by being added to ``FACADES``; its one-line
summary is the class docstring of the facade object (or, for a
``SimpleNamespace``, the entry in ``SUMMARIES`` below), and each member's line
is its docstring's first line.  ``missing_descriptions()`` lists what has none
(tests/test_facade_reference.py fails on it, and when the page differs from
``generate()``).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

__all__ = ["SUMMARIES", "generate", "missing_descriptions", "reference"]

#: One line per facade whose object has no class docstring of its own (a ``SimpleNamespace``)
#: or whose class docstring speaks to maintainers rather than script authors.
SUMMARIES: dict[str, str] = {
    "json": "JSON text <-> values (`dumps`, `loads`), with size limits.",
    "datetime": "The standard `datetime` types (date, datetime, time, timedelta, timezone).",
    "time": "Clocks, UTC formatting, and `remaining()`: seconds left before this invocation's deadline.",
    "math": "The standard math functions and constants; `fsum`/`prod` iterate through the guard.",
    "re": "Regular expressions (the `regex` engine) with a match-time timeout taken from the invocation's time left.",
    "hashlib": "Message digests (sha256, sha512, blake2b, ...) and `pbkdf2_hmac`.",
    "hmac": "Keyed hashes and a constant-time `compare_digest`.",
    "secrets": "Random tokens and numbers from the OS's CSPRNG (sizes capped).",
    "uuid": "UUIDs: `uuid4`, name-based `uuid3`/`uuid5`, the `UUID` type and namespaces.",
    "base64": "base64/base32/base16 encoding and decoding of bytes.",
    "bcrypt": "bcrypt password hashes: `hash(password, rounds=10)` and `check(password, hashed)`.",
    "log": "Log lines for the caller's `logs` and the live log stream: `debug`, `info`, `warning`, `error`.",
}

_PREAMBLE = """\
# Facade reference

What a tenant's script can use: its globals, the builtins, and every module it
can `import` (nothing else can be imported).  Generated from the code by
`scriptvisor facades`; `tests/test_facade_reference.py` fails when this page
and the code disagree (regenerate: `scriptvisor facades > docs/facades.md`).
How scripts are called and what they return: [action-scripts.md](action-scripts.md).
"""

_GLOBALS = [
    ("callback(err, result)", "Report the outcome exactly once: `callback(None, value)` on success, "
                              "`callback(error)` on failure (the last parameter of every script function)."),
    ("configuration", "The tenant's `[configuration]` from tenant.toml, read-only (secrets resolved from the "
                      "server's environment)."),
    ("global_", "A dict that lives as long as the worker (one tenant): caches between invocations; "
                "gone when the worker is recycled."),
    ("print(...)", "Adds a line to the invocation's `logs` (as `log.info` does)."),
]


_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)( -> .*)?$")


def _first_line(doc: str | None) -> str:
    """The first line of a docstring (skipping a C function's signature line), Markdown quoting."""
    if not doc:
        return ""
    paragraphs = [" ".join(line.strip() for line in block.splitlines())
                  for block in inspect.cleandoc(doc).split("\n\n") if block.strip()]
    if len(paragraphs) > 1 and _SIGNATURE_LINE.match(paragraphs[0]):
        paragraphs = paragraphs[1:]
    return paragraphs[0].replace("``", "`") if paragraphs else ""


def _signature(obj: Any, name: str, *, method: bool = False) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params = []
    for p in sig.parameters.values():
        if method and p.name == "self":
            continue
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text = "*" + text
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.default is not p.empty:
            text += "=" + repr(p.default)
        params.append(text)
    kinds = [p.kind for p in sig.parameters.values() if not (method and p.name == "self")]
    if inspect.Parameter.KEYWORD_ONLY in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds:
        first_kw = kinds.index(inspect.Parameter.KEYWORD_ONLY)
        params.insert(first_kw, "*")
    return f"{name}({', '.join(params)})"


def _sandbox_class(annotation: Any) -> type | None:
    if isinstance(annotation, type) and annotation.__module__.startswith("scriptvisor.sandbox"):
        return annotation
    return None


def _return_class(fn: Any) -> type | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    return _sandbox_class(hints.get("return"))


def _members(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, types.SimpleNamespace):
        items = list(vars(obj).items())
    else:
        items = []
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                items.append((name, inspect.getattr_static(obj, name)))
            except AttributeError:
                continue
    return sorted((n, v) for n, v in items if not n.startswith("_"))


def _describe(name: str, value: Any, owner: str, classes: dict[str, type],
              *, method: bool = False) -> tuple[str, str, str]:
    """(kind, shown name, one line) for one member."""
    if isinstance(value, property):
        return "attribute", name, _first_line(value.fget.__doc__ if value.fget else None)
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, type):
        kind = "error" if issubclass(value, BaseException) else "class"
        doc = _first_line(value.__doc__)
        shown = name if kind == "error" else _signature(value, name)
        if kind == "class" and _sandbox_class(value):
            classes.setdefault(f"{owner}.{name}", value)
        return kind, shown, doc
    if callable(value):
        ret = _return_class(value)
        if ret is not None:
            classes.setdefault(ret.__name__, ret)
        doc = _first_line(getattr(value, "__doc__", None))
        if ret is not None and doc:
            doc += f" Returns a `{ret.__name__}`."
        return "function", _signature(value, name, method=method), doc
    text = repr(value)
    return "constant", f"{name} = {text if len(text) <= 40 else text[:37] + '...'}", ""


def reference() -> dict[str, Any]:
    """The structured reference: globals, builtins, facades (with members) and classes."""
    from scriptvisor.sandbox import errors, policy
    from scriptvisor.sandbox.facades import FACADES, load

    globals_ = [(n, d) for n, d in _GLOBALS]
    for name, cls in errors.INJECTED_ERRORS.items():
        globals_.append((_signature(cls, name), _first_line(cls.__doc__)))
    builtins = sorted(policy.BUILTINS.items())
    facades = []
    classes: dict[str, type] = {}
    for fname in FACADES:  # registry order
        obj = load(fname)
        summary = SUMMARIES.get(fname) or (
            "" if isinstance(obj, types.SimpleNamespace) else _first_line(type(obj).__doc__))
        rows = [_describe(n, v, fname, classes, method=not isinstance(obj, types.SimpleNamespace))
                for n, v in _members(obj)]
        facades.append({"name": fname, "summary": summary, "members": rows})
    documented: list[dict[str, Any]] = []
    seen: set[type] = set()
    queue = list(classes.items())
    while queue:
        title, cls = queue.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        more: dict[str, type] = {}
        rows = [_describe(n, v, cls.__name__, more, method=True) for n, v in _members(cls)
                if not isinstance(v, type) or _sandbox_class(v)]
        documented.append({"name": cls.__name__, "summary": _first_line(cls.__doc__), "members": rows})
        queue.extend((k, v) for k, v in more.items() if v not in seen)
    return {"globals": globals_, "builtins": builtins, "facades": facades, "classes": documented}


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    out = ["| name | kind | what |", "|---|---|---|"]
    for kind, shown, doc in rows:
        cell = doc.replace("|", "\\|")
        out.append(f"| `{shown}` | {kind} | {cell} |")
    return out


def generate() -> str:
    """The Markdown page (what docs/facades.md holds)."""
    ref = reference()
    lines = [_PREAMBLE, "## Globals of every script", "", "| name | what |", "|---|---|"]
    lines += [f"| `{n}` | {d} |" for n, d in ref["globals"]]
    lines += ["", "## Modules (`import NAME`)", ""]
    lines += [f"- [`{f['name']}`](#{f['name']}): {f['summary']}" for f in ref["facades"]]
    for f in ref["facades"]:
        lines += ["", f"### {f['name']}", "", f["summary"], ""] + _table(f["members"])
    if ref["classes"]:
        lines += ["", "## Objects the modules return", ""]
        for c in ref["classes"]:
            lines += [f"### {c['name']}", "", c["summary"], ""] + _table(c["members"]) + [""]
    lines += ["", "## Builtins", "", "Every other builtin name (`open`, `eval`, `type`, ...) is absent.", "",
              "| name | why it is safe |", "|---|---|"]
    lines += [f"| `{n}` | {why} |" for n, why in ref["builtins"]]
    return "\n".join(lines).rstrip() + "\n"


def missing_descriptions() -> list[str]:
    """Facades and members (functions, classes, errors) that have no one-line description."""
    ref = reference()
    missing = []
    for f in ref["facades"] + ref["classes"]:
        if not f["summary"]:
            missing.append(f["name"])
        for kind, shown, doc in f["members"]:
            if kind != "constant" and not doc:
                missing.append(f"{f['name']}.{shown}")
    return missing
