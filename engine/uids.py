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

Engines with different uid maps (their own state dir or uid_dir) never
hand out the same uid either: every uid in use is claimed in a host-wide
registry, ``/run/scriptvisor/uids/<uid>`` (a symlink to the claiming map's directory),
under ``/run/scriptvisor/uids.lock``.  Two tenants of different instances
sharing a uid could signal each other's workers, and the per-uid egress
rules (``engine.egress``) of one would police the other's tenant.  A claim
whose state dir no longer maps that uid (deleted, reassigned) is stale and
may be taken over; a tenant whose recorded uid is claimed by a live state
dir gets a new one (its data dir is re-chowned at the next spawn).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import pwd
import grp
from typing import Any

__all__ = ["UidMap", "UidRangeExhausted", "tenant_ids"]

MAP_FILE = "uids.json"
LOCK_FILE = "uids.lock"
#: Host-wide claims of uids in use (tmpfs: empty after a reboot, re-claimed on first use).
REGISTRY_DIR = "/run/scriptvisor/uids"


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
        #: (registry directory mtime, uids other maps claimed) from the last scan
        self._claims: tuple[int, frozenset[int]] | None = None
        #: where the next search for a free uid starts (see ``_next_free``)
        self._free_from = uid_base

    @classmethod
    def from_config(cls, config: Any) -> "UidMap":
        return cls(getattr(config, "uid_dir", None) or config.state_dir, config.uid_base, config.uid_count)

    @property
    def path(self) -> str:
        return os.path.join(self.state_dir, MAP_FILE)

    def uid_for(self, tenant: str) -> int:
        """The uid of ``tenant`` (a data dir path or a tenant name), allocating
        a free one on first use."""
        if tenant in self._cache:
            return self._cache[tenant]
        os.makedirs(self.state_dir, mode=0o711, exist_ok=True)
        lock_fd = os.open(os.path.join(self.state_dir, LOCK_FILE),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.makedirs(REGISTRY_DIR, mode=0o700, exist_ok=True)
        host_fd = os.open(REGISTRY_DIR + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            fcntl.flock(host_fd, fcntl.LOCK_EX)
            mapping = self._read()
            uid = mapping.get(tenant)
            if uid is None or not self._claim(uid):
                others = set(v for k, v in mapping.items() if k != tenant)
                try:
                    uid = self._next_free(others)
                except UidRangeExhausted:
                    # only when the range is full: data dirs whose tenant folder
                    # is gone give their uids back (never earlier, so a uid is
                    # not handed on while a removed tenant's workers may still run)
                    for key in [k for k in mapping if k.startswith("/") and not os.path.isdir(os.path.dirname(k))]:
                        del mapping[key]
                    uid = self._next_free(set(v for k, v in mapping.items() if k != tenant))
                self._claim(uid)
                self._note_own_change()
                mapping[tenant] = uid
                self._write(mapping)
            self._cache = dict(mapping)
        finally:
            os.close(host_fd)
            os.close(lock_fd)  # releases the flocks
        return self._cache[tenant]

    # -- host-wide registry (callers hold the registry lock) ---------------
    def _claimed_elsewhere(self, uid: int) -> bool:
        """Is ``uid`` claimed by another uid map that still holds it?

        A claim is a symlink ``<REGISTRY_DIR>/<uid>`` -> the claiming map's
        directory; it is stale when that directory is gone or no longer maps
        the uid.
        """
        try:
            owner = os.readlink(os.path.join(REGISTRY_DIR, str(uid)))
        except OSError:  # no claim (or not a symlink: not ours to honour)
            return False
        if owner == os.path.realpath(self.state_dir):
            return False
        try:
            with open(os.path.join(owner, MAP_FILE), encoding="utf-8") as fh:
                return uid in json.load(fh).values()
        except (OSError, ValueError, AttributeError):
            return False  # stale: its directory is gone or unreadable

    def _claimed_uids(self) -> frozenset[int]:
        """Uids other live maps claim: one readlink per claim, one stat per claiming
        directory (a registry holds a claim per tenant of every engine of the host, and
        a new tenant's first spawn waits for this), rescanned only when the registry
        changed since our last scan or claim.  Only an accelerator: ``_next_free``
        checks each candidate with ``_claimed_elsewhere`` before taking it."""
        try:
            mtime = os.stat(REGISTRY_DIR).st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and self._claims is not None and self._claims[0] == mtime:
            return self._claims[1]
        me = os.path.realpath(self.state_dir)
        live: dict[str, bool] = {me: False}
        out = set()
        with os.scandir(REGISTRY_DIR) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    owner = os.readlink(entry.path)
                except OSError:
                    continue
                alive = live.get(owner)
                if alive is None:
                    alive = live[owner] = os.path.isdir(owner)
                if alive:
                    out.add(int(entry.name))
        claims = frozenset(out)
        if mtime is not None:
            self._claims = (mtime, claims)
        return claims

    def _note_own_change(self) -> None:
        """Our claim changed the registry (under its lock): others' claims did not."""
        if self._claims is not None:
            try:
                self._claims = (os.stat(REGISTRY_DIR).st_mtime_ns, self._claims[1])
            except OSError:
                self._claims = None

    def _claim(self, uid: int) -> bool:
        if self._claimed_elsewhere(uid):
            return False
        path = os.path.join(REGISTRY_DIR, str(uid))
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.realpath(self.state_dir), tmp)
        os.replace(tmp, path)
        return True

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
        """A free uid: the first one from where the last allocation left off
        (every uid below it was taken then, so a host with thousands of
        claims is not walked from the start for each new tenant), then from
        the range's start."""
        claimed = self._claimed_uids()
        end = self.uid_base + self.uid_count
        start = min(max(self._free_from, self.uid_base), end)
        for uid in itertools.chain(range(start, end), range(self.uid_base, start)):
            if uid in taken or uid in claimed or _is_account(uid) or self._claimed_elsewhere(uid):
                continue
            self._free_from = uid + 1
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
