"""Resource limits of a worker, derived from the tenant's limits.

Soft and hard limits are equal (a script cannot raise them back) except for
CPU, where hard = soft + 1: the soft limit delivers SIGXCPU, which the
supervisor can tell apart from the SIGKILL the kernel sends at the hard one
and from its own wall-clock SIGKILL.
"""

from __future__ import annotations

import resource

from scriptvisor.sandbox.wire import WorkerLimits

__all__ = ["MiB", "limits_for", "apply"]

MiB = 1024 * 1024


def limits_for(limits: WorkerLimits, *, per_uid: bool) -> list[tuple[str, int, int, int]]:
    """``(name, resource, soft, hard)`` for every limit a worker gets.

    ``per_uid``: RLIMIT_NPROC counts every process/thread of the real uid, so
    it is only meaningful (and only safe: it would count the supervisor's own
    threads) when the worker runs under its tenant's own uid.
    """
    cpu = max(1, int(limits.cpu_seconds))
    memory = int(limits.memory_mb) * MiB
    files = int(limits.open_files)
    file_size = int(limits.file_size_mb) * MiB
    out = [
        ("RLIMIT_AS", resource.RLIMIT_AS, memory, memory),
        ("RLIMIT_CPU", resource.RLIMIT_CPU, cpu, cpu + 1),
        ("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, files, files),
        ("RLIMIT_FSIZE", resource.RLIMIT_FSIZE, file_size, file_size),
        ("RLIMIT_CORE", resource.RLIMIT_CORE, 0, 0),
        ("RLIMIT_MEMLOCK", resource.RLIMIT_MEMLOCK, 0, 0),
    ]
    if per_uid:
        n = int(limits.processes)
        out.append(("RLIMIT_NPROC", resource.RLIMIT_NPROC, n, n))
    return out


def apply(limits: WorkerLimits, *, per_uid: bool) -> None:
    """Set every limit; a refused one raises ``RlimitError`` (name, values, cause)."""
    for name, res, soft, hard in limits_for(limits, per_uid=per_uid):
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as exc:
            raise RlimitError(name, soft, hard, exc) from exc


class RlimitError(Exception):
    def __init__(self, name: str, soft: int, hard: int, cause: Exception) -> None:
        super().__init__(f"{name}=({soft}, {hard}): {cause}")
        self.name = name
