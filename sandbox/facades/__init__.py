"""The only things a script can ``import``: curated facade objects.

``FACADES`` maps the name a script imports to ``"module:attribute"`` of the
object it receives.  A facade is an instance of a plain class (or a
``types.SimpleNamespace``) exposing selected functions; never a module, never
an object from which a module, frame, code object or function ``__globals__``
is reachable through a public attribute.  Names not listed here cannot be
imported.  Facades are loaded lazily and cached; the zygote preloads all of
them so forked workers never import after confinement.  The network database
drivers behind ``postgres`` and ``mysql`` and the HTTP client behind ``http``
are not part of a facade's import: they are ``wire.EXTRAS``, preloaded only by
the zygote of tenants that declare such a database or an ``[[http]]``
endpoint (``preload(extras)``); the facade objects themselves are always
there, so an undeclared database or URL is the same ``NotAllowed`` anywhere.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FACADES", "load", "preload"]

FACADES: dict[str, str] = {
    # standard library, narrowed
    "json": "scriptvisor.sandbox.facades.stdlib:json",
    "datetime": "scriptvisor.sandbox.facades.stdlib:datetime",
    "time": "scriptvisor.sandbox.facades.stdlib:time",
    "math": "scriptvisor.sandbox.facades.stdlib:math",
    "re": "scriptvisor.sandbox.facades.stdlib:re",
    "hashlib": "scriptvisor.sandbox.facades.stdlib:hashlib",
    "hmac": "scriptvisor.sandbox.facades.stdlib:hmac",
    "secrets": "scriptvisor.sandbox.facades.stdlib:secrets",
    "uuid": "scriptvisor.sandbox.facades.stdlib:uuid",
    "base64": "scriptvisor.sandbox.facades.stdlib:base64",
    "log": "scriptvisor.sandbox.facades.stdlib:log",
    # password hashing (bcrypt; every legacy scheme) and databases (custom database connections)
    "bcrypt": "scriptvisor.sandbox.facades.crypto:bcrypt",
    "passwords": "scriptvisor.sandbox.facades.passwords:passwords",
    "sqlite": "scriptvisor.sandbox.facades.db:sqlite",
    "postgres": "scriptvisor.sandbox.facades.db:postgres",
    "mysql": "scriptvisor.sandbox.facades.db:mysql",
    # HTTP requests to the endpoints the operator declared ([[http]] in tenant.toml)
    "http": "scriptvisor.sandbox.facades.web:http",
}

_cache: dict[str, Any] = {}


def load(name: str) -> Any:
    """The facade object for ``name``. Raises ``KeyError`` for anything not allowlisted."""
    try:
        return _cache[name]
    except KeyError:
        pass
    target = FACADES[name]
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    _cache[name] = obj
    return obj


def preload(extras: tuple[str, ...] = ()) -> list[str]:
    """Import every facade now (in the zygote), and the drivers named in ``extras``
    (``wire.EXTRAS``). Returns names that failed to load."""
    failed = []
    for name in FACADES:
        try:
            load(name)
        except Exception:
            failed.append(name)
    for kind in extras:
        try:
            if kind == "http":
                importlib.import_module("scriptvisor.sandbox.facades.web").load_client()
            else:
                importlib.import_module("scriptvisor.sandbox.facades.db").load_driver(kind)
        except Exception:
            failed.append(f"{kind} client" if kind == "http" else f"{kind} driver")
    return failed
