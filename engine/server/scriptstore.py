"""Saving a tenant's scripts through the API: atomic writes, kept versions, rollback.

Only when the operator enabled it for the tenant (``tenant.toml``)::

    [editing]
    enabled = true     # PUT /v1/tenants/{t}/scripts/{s} may write scripts/ (default: false)
    versions = 20      # previous versions kept per script for rollback (default 20, at most 200)

Layout, beside ``scripts/`` (never inside it: a ``.py`` there is a script,
and never in ``data/``, which the tenant's workers can write)::

    TENANT/versions/<script>/<n>.py     the content that version <n> replaced

A save (the caller has already checked the new source under the sandbox
policy) copies the current file to the next version number, then writes the
new content to a temporary file in ``scripts/``, fsyncs it and renames it over
the script: a reader (the engine reads a script on every invocation) sees the
old or the new file, never half of one.  A rollback is a save of an old
version's content, so it is itself kept and can be undone.

Nothing here is shared between nodes: see docs/scaling.md ("Editing scripts
on several nodes") for what an operator does about it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from scriptvisor.engine.tenants import SCRIPT_NAME, Tenant

from .files import write_atomic

__all__ = ["ScriptStore", "VersionNotFound", "digest"]


class VersionNotFound(Exception):
    pass


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ScriptStore:
    """Scripts and kept versions of one tenant folder."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.scripts = tenant.scripts_dir
        self.versions_root = tenant.root / "versions"

    # -- reading -------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(p.stem for p in self.scripts.glob("*.py") if p.is_file() and SCRIPT_NAME.match(p.stem))

    def read(self, script: str) -> str | None:
        path = self.tenant.script_path(script)
        if path is None:
            return None
        return path.read_bytes().decode("utf-8", "replace")

    def _version_dir(self, script: str) -> Path:
        return self.versions_root / script

    def _numbers(self, script: str) -> list[int]:
        folder = self._version_dir(script)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.py") if p.stem.isdigit())

    def versions(self, script: str) -> list[dict[str, Any]]:
        """Kept versions, newest first."""
        out = []
        for n in reversed(self._numbers(script)):
            path = self._version_dir(script) / f"{n}.py"
            try:
                data = path.read_bytes()
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            text = data.decode("utf-8", "replace")
            out.append({"version": n, "sha256": digest(text), "bytes": len(data),
                        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))})
        return out

    def read_version(self, script: str, version: int) -> str:
        path = self._version_dir(script) / f"{int(version)}.py"
        try:
            return path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            raise VersionNotFound(f"script {script!r} has no kept version {version}") from None

    # -- writing -------------------------------------------------------------
    def save(self, script: str, source: str) -> int | None:
        """Make ``source`` the script's content; returns the version number the old content got.

        ``None`` when there was no previous content (a new script) or it was
        identical (nothing to keep).
        """
        assert SCRIPT_NAME.match(script)
        target = self.scripts / f"{script}.py"
        kept: int | None = None
        try:
            old = target.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            old = None
        mode = 0o644
        if old is not None:
            mode = target.stat().st_mode & 0o777
            if old != source:
                folder = self._version_dir(script)
                folder.mkdir(parents=True, exist_ok=True)
                numbers = self._numbers(script)
                kept = (numbers[-1] + 1) if numbers else 1
                write_atomic(folder / f"{kept}.py", old, 0o600)
                self._prune(script)
        if old != source:
            write_atomic(target, source, mode)
        return kept

    def _prune(self, script: str) -> None:
        numbers = self._numbers(script)
        for n in numbers[: max(0, len(numbers) - self.tenant.editing_versions)]:
            try:
                (self._version_dir(script) / f"{n}.py").unlink()
            except FileNotFoundError:
                pass
