"""Per-tenant uid/gid allocation for workers of a root supervisor.

Each tenant gets its own uid (and a gid of the same number) from the range
``EngineConfig.uid_base .. uid_base + uid_count - 1``, in order of first use,
recorded in ``<uid_dir>/uids.json`` (``uid_dir`` defaults to ``state_dir``)
under a key naming the tenant's data dir (its real path; the tenant name when
it has none).  So a tenant keeps its uid across restarts (files in its data
dir stay its own), two servers of one tenants folder agree on it, and no two
tenant folders ever share one, however many servers of the host allocate:
allocation happens under an exclusive ``flock`` on ``<uid_dir>/uids.lock``
and the map is replaced atomically (write to a temp file, fsync, rename).

Uids that belong to an account in the host's passwd database are skipped:
a tenant must never become ``nobody`` or a daemon.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import grp
from typing import Any

__all__ = ["UidMap", "UidRangeExhausted", "tenant_ids"]

MAP_FILE = "uids.json"
LOCK_FILE = "uids.lock"


class UidRangeExhausted(RuntimeError):
    """Every uid in the configured range is taken; raise ``uid_count``."""


class UidMap:
    """The persisted tenant -> uid map of one state dir."""

    def __init__(self, state_dir: str, uid_base: int, uid_count: int) -> None:
        if uid_base < 1000 or uid_count < 1:
            raise ValueError(f"unsafe uid range: base={uid_base} count={uid_count}")
        self.state_dir = state_dir
        self.uid_base = uid_base
        self.uid_count = uid_count
        self._cache: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: Any) -> "UidMap":
        return cls(getattr(config, "uid_dir", None) or config.state_dir, config.uid_base, config.uid_count)

    @property
    def path(self) -> str:
        return os.path.join(self.state_dir, MAP_FILE)

    def uid_for(self, tenant: str) -> int:
        """The uid of ``tenant`` (a data dir path or a tenant name), allocating
        the lowest free one on first use."""
        if tenant in self._cache:
            return self._cache[tenant]
        os.makedirs(self.state_dir, mode=0o711, exist_ok=True)
        lock_fd = os.open(os.path.join(self.state_dir, LOCK_FILE),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            mapping = self._read()
            if tenant not in mapping:
                try:
                    mapping[tenant] = self._next_free(set(mapping.values()))
                except UidRangeExhausted:
                    # only when the range is full: data dirs whose tenant folder
                    # is gone give their uids back (never earlier, so a uid is
                    # not handed on while a removed tenant's workers may still run)
                    for key in [k for k in mapping if k.startswith("/") and not os.path.isdir(os.path.dirname(k))]:
                        del mapping[key]
                    mapping[tenant] = self._next_free(set(mapping.values()))
                self._write(mapping)
            self._cache = dict(mapping)
        finally:
            os.close(lock_fd)  # releases the flock
        return self._cache[tenant]

    def _read(self) -> dict[str, int]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in data.items()):
            raise ValueError(f"{self.path}: not a tenant -> uid map")
        if len(set(data.values())) != len(data):
            raise ValueError(f"{self.path}: two tenants share a uid")
        return data

    def _write(self, mapping: dict[str, int]) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(mapping, fh, indent=0, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def _next_free(self, taken: set[int]) -> int:
        for uid in range(self.uid_base, self.uid_base + self.uid_count):
            if uid in taken or _is_account(uid):
                continue
            return uid
        raise UidRangeExhausted(
            f"no free uid in {self.uid_base}..{self.uid_base + self.uid_count - 1}")


def _is_account(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def tenant_ids(config: Any, tenant: str, uid_map: UidMap | None = None) -> tuple[int | None, int | None]:
    """``(uid, gid)`` for a tenant's workers, or ``(None, None)`` when the
    supervisor is not root (workers then keep its uid; doctor says so)."""
    if os.geteuid() != 0 or not getattr(config, "confine", True):
        return None, None
    uid = (uid_map or UidMap.from_config(config)).uid_for(tenant)
    return uid, uid
