"""The server's tenants: every folder under ``TENANTS/``, hot-reloaded.

One folder is loaded and validated by the engine's core (``engine/tenants.py``:
``load_tenant``, ``Tenant``, ``TenantConfigError``, the tenant.toml format);
this module keeps what only the HTTP server needs on top of it.

A broken tenant is recorded in ``TenantRegistry.errors`` and never prevents
the others from loading; while its file is broken it is not served (the server
answers 503 for it) rather than kept on a stale configuration, so that a token
removed in the same edit as a typo is not left working.

Hot reload: the registry re-stats ``tenant.toml`` whenever a tenant is looked up
(one ``stat`` per request, no watcher thread, no polling) and reloads it when the
file changed.  Scripts need nothing: the engine reads a script's content on each
invocation and caches compiled code by content hash, so a changed file takes
effect on the next call and in-flight calls keep the code they started with.

The core's names are re-exported here for code written against the old path
(``from scriptvisor.engine.server.tenants import load_tenant``); new code
outside ``engine/server/`` imports ``scriptvisor.engine.tenants``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Callable, Mapping

from scriptvisor.engine.config import TenantLimits
from scriptvisor.engine.tenants import (
    SCRIPT_NAME,
    TENANT_NAME,
    TOKEN_HASH,
    Tenant,
    TenantConfigError,
    file_stamp,
    load_tenant,
)

__all__ = [
    "SCRIPT_NAME",
    "TENANT_NAME",
    "Tenant",
    "TenantConfigError",
    "TenantRegistry",
    "load_tenant",
    "recover_token_hashes",
]

_HASH_LINE = re.compile(r'^\s*(?:hash\s*=\s*)?"(sha256:[0-9a-f]{64})"', re.MULTILINE)


def recover_token_hashes(file: Path) -> tuple[str, ...]:
    """Token hashes of a tenant.toml that does not validate (or does not even parse).

    Used only to tell a tenant's own caller *why* its tenant is down (503 with
    the failing key) instead of a misleading 401; such a token runs nothing.
    When the TOML parses, the ``tokens`` entries that are well formed count;
    otherwise every uncommented ``hash = "sha256:..."`` line does.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ()
    try:
        raw = tomllib.loads(text).get("tokens")
    except tomllib.TOMLDecodeError:
        return tuple(dict.fromkeys(_HASH_LINE.findall(text)))
    found = []
    for item in raw if isinstance(raw, list) else ():
        value = item.get("hash") if isinstance(item, dict) else item
        if isinstance(value, str) and TOKEN_HASH.match(value):
            found.append(value)
    return tuple(found)


class TenantRegistry:
    """All tenants under one folder, reloaded lazily when their file changes.

    ``on_load(tenant)`` is called for every (re)load that succeeds, so the
    engine can be reconfigured with the new limits and data directory;
    ``on_error(name, error)`` for every load that fails; ``on_remove(name)``
    once when a known tenant's folder is gone (its workers can be retired).
    """

    def __init__(
        self,
        tenants_dir: str | os.PathLike[str],
        *,
        defaults: TenantLimits | None = None,
        environ: Mapping[str, str] | None = None,
        on_load: Callable[[Tenant], None] | None = None,
        on_error: Callable[[str, TenantConfigError], None] | None = None,
        on_remove: Callable[[str], None] | None = None,
    ) -> None:
        self.tenants_dir = Path(tenants_dir)
        self.defaults = defaults or TenantLimits()
        self.environ = environ
        self.on_load = on_load
        self.on_error = on_error
        self.on_remove = on_remove
        self._tenants: dict[str, Tenant] = {}
        #: name -> (error, stamp of the file that produced it or None)
        self._errors: dict[str, tuple[TenantConfigError, tuple[int, int, int] | None]] = {}
        #: name -> token hashes still readable in a broken tenant.toml: they may
        #: learn why their tenant is down (503 with the key), never run anything
        self._broken_tokens: dict[str, tuple[str, ...]] = {}

    # -- loading ----------------------------------------------------------
    def scan(self) -> None:
        """Load every tenant folder. Never raises for one tenant's problems."""
        if not self.tenants_dir.is_dir():
            raise TenantConfigError(self.tenants_dir, None, "tenants folder does not exist")
        for entry in sorted(self.tenants_dir.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                self._load(entry.name)

    def scan_new(self) -> None:
        """Load tenant folders created since the last scan (for listings)."""
        try:
            entries = sorted(self.tenants_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if (entry.is_dir() and not name.startswith(".") and name not in self._tenants
                    and name not in self._errors):
                self._load(name)

    def _load(self, name: str) -> Tenant | None:
        root = self.tenants_dir / name
        try:
            tenant = load_tenant(root, defaults=self.defaults, environ=self.environ)
        except TenantConfigError as exc:
            self._tenants.pop(name, None)
            try:
                stamp: tuple[int, int, int] | None = file_stamp(root / "tenant.toml")
            except OSError:
                stamp = None
            self._errors[name] = (exc, stamp)
            self._broken_tokens[name] = recover_token_hashes(root / "tenant.toml")
            if self.on_error:
                self.on_error(name, exc)
            return None
        self._errors.pop(name, None)
        self._broken_tokens.pop(name, None)
        self._tenants[name] = tenant
        if self.on_load:
            self.on_load(tenant)
        return tenant

    def get(self, name: str) -> Tenant | None:
        """The current tenant ``name``, reloaded if its tenant.toml changed.

        ``None`` if there is no such tenant or its folder is broken (see
        ``is_broken``).
        """
        if not TENANT_NAME.match(name):
            return None
        file = self.tenants_dir / name / "tenant.toml"
        try:
            stamp = file_stamp(file)
        except OSError:
            stamp = None
        tenant = self._tenants.get(name)
        if tenant is not None and tenant.stamp == stamp:
            return tenant
        failed = self._errors.get(name)
        if stamp is None and (tenant is not None or failed is not None) and not file.parent.is_dir():
            # the folder was removed: forget the tenant instead of listing it as
            # broken forever (and keeping its workers alive)
            self._tenants.pop(name, None)
            self._errors.pop(name, None)
            self._broken_tokens.pop(name, None)
            if self.on_remove:
                self.on_remove(name)
            return None
        if failed is not None and failed[1] == stamp:
            return None
        if stamp is None and tenant is None and failed is None:
            return None  # never existed: do not record an error for every stray URL
        return self._load(name)

    # -- queries ----------------------------------------------------------
    def is_broken(self, name: str) -> bool:
        return name in self._errors and name not in self._tenants

    def error(self, name: str) -> TenantConfigError | None:
        """Why tenant ``name`` cannot be served (None when it loads or never existed)."""
        failed = self._errors.get(name)
        return failed[0] if failed is not None and name not in self._tenants else None

    def broken_token_hashes(self) -> dict[str, tuple[str, ...]]:
        """Token hashes of broken tenants, as far as their files can still be read."""
        return {n: h for n, h in self._broken_tokens.items() if n in self._errors and n not in self._tenants}

    @property
    def tenants(self) -> dict[str, Tenant]:
        return dict(self._tenants)

    @property
    def errors(self) -> dict[str, str]:
        return {name: str(err) for name, (err, _) in self._errors.items()}
