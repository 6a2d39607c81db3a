"""Every tunable of the engine, in one place, each with the reason for its default.

``EngineConfig`` holds process-wide settings; ``TenantLimits`` the per-tenant
limits (an engine-wide default, overridable per tenant and, for the wall
clock, per call).  Both are frozen dataclasses: change them with
``dataclasses.replace``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from scriptvisor.sandbox.wire import DEFAULT_MAX_FRAME, WorkerLimits

_W = WorkerLimits()  # the one copy of the per-worker defaults

__all__ = ["EngineConfig", "TenantLimits"]


@dataclass(frozen=True)
class TenantLimits:
    #: Wall clock per invocation, seconds (fractional allowed). The worker is
    #: SIGKILLed at this deadline and replaced; the caller gets ``timeout``.
    timeout: float = 20.0
    #: Address-space cap per worker (RLIMIT_AS). CPython with the preloaded
    #: facades maps ~120 MiB of address space before any script runs.
    memory_mb: int = _W.memory_mb
    #: CPU seconds per worker (RLIMIT_CPU soft); a backstop below the wall clock
    #: for workers that run many invocations. Hard limit is soft + 1 so the
    #: soft one arrives as SIGXCPU, recognisable in the ``crash`` details.
    cpu_seconds: int = _W.cpu_seconds
    #: Open file descriptors per worker (RLIMIT_NOFILE).
    open_files: int = _W.open_files
    #: Processes/threads for the tenant's uid (RLIMIT_NPROC); only meaningful
    #: with a per-tenant uid (root supervisor).
    processes: int = _W.processes
    #: Largest file a script may write in its scratch directory (RLIMIT_FSIZE).
    file_size_mb: int = _W.file_size_mb
    #: Total scratch space per worker (tmpfs size when the supervisor is root).
    scratch_mb: int = _W.scratch_mb
    #: Printed output and log lines per invocation; excess is dropped and a
    #: truncation marker appended.
    output_bytes: int = _W.output_bytes
    #: Largest JSON result a script may return.
    result_bytes: int = _W.result_bytes
    #: TCP ports scripts may connect to (Landlock ABI >= 4). Empty: no egress.
    allowed_ports: tuple[int, ...] = ()
    #: Database connections a worker may hold open at once (sqlite, postgres,
    #: mysql together); one more is ``NotAllowed`` naming this limit.
    db_connections: int = _W.db_connections
    #: Connections the tenant's database role may hold on its server at once,
    #: over all its workers: ``scriptvisor db setup`` creates the role with it
    #: (PostgreSQL CONNECTION LIMIT, MySQL MAX_USER_CONNECTIONS); one more is
    #: ``NotAllowed`` naming this limit.
    db_connections_per_tenant: int = 16
    #: Data-directory quota, MiB: a sqlite file may grow (max_page_count) to
    #: this minus the other files of the directory; a full database fails
    #: with ``DataQuotaExceeded``.
    data_mb: int = _W.data_mb
    #: Files a tenant's scripts may create in its data directory (sqlite
    #: databases; their -wal/-shm/-journal companions do not count).
    data_files: int = _W.data_files
    #: Invocations that may run at once for this tenant (one per worker).
    max_concurrency: int = 4
    #: Invocations that may wait for a worker; beyond it: ``overloaded``.
    max_queue: int = 64
    #: Work-factor caps of the ``passwords`` facade: a stored hash above any of
    #: them is refused before any work (the cost is read from the hash, and
    #: the C code that computes it runs no deadline check).  Defaults and
    #: reasons: ``sandbox.wire.WorkerLimits``.
    hash_bcrypt_max_cost: int = _W.hash_bcrypt_max_cost
    hash_pbkdf2_max_rounds: int = _W.hash_pbkdf2_max_rounds
    hash_sha_crypt_max_rounds: int = _W.hash_sha_crypt_max_rounds
    hash_phpass_max_cost: int = _W.hash_phpass_max_cost
    hash_argon2_max_memory_kib: int = _W.hash_argon2_max_memory_kib
    hash_argon2_max_time_cost: int = _W.hash_argon2_max_time_cost
    hash_argon2_max_parallelism: int = _W.hash_argon2_max_parallelism
    hash_scrypt_max_memory_mb: int = _W.hash_scrypt_max_memory_mb
    hash_scrypt_max_parallelism: int = _W.hash_scrypt_max_parallelism

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["allowed_ports"] = list(self.allowed_ports)
        return d

    def worker_limits(self) -> WorkerLimits:
        """The part of these limits a worker enforces itself (the wire contract's type)."""
        return WorkerLimits(**{f.name: getattr(self, f.name) for f in fields(WorkerLimits)})


def _default_state_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"scriptvisor-{os.getuid()}")


@dataclass(frozen=True)
class EngineConfig:
    #: Limits applied to tenants that have none of their own.
    limits: TenantLimits = field(default_factory=TenantLimits)
    #: Idle, ready workers kept per active tenant so the next call after a
    #: timeout or crash does not wait for a fork.
    spares_per_tenant: int = 1
    #: Keep one pre-forked, confined, booted standby per active tenant in the
    #: zygote, so a replacement after a kill costs one message instead of a
    #: fork + confinement + boot (~3 ms here). Costs one idle process
    #: (a few MiB of unique memory) per tenant with workers.
    standby: bool = True
    #: Upper bound on live workers over all tenants; idle workers of the least
    #: recently used tenant are stopped to make room.
    max_workers: int = 64
    #: Zygotes to start with the engine besides the slim one, each a set of
    #: ``wire.EXTRAS`` (e.g. ``(("postgres",),)``). A tenant that declares a
    #: postgres/mysql database or ``[[http]]`` endpoints is forked by the
    #: zygote of its set, which otherwise boots (~250 ms) when the first such
    #: tenant is configured; ``scriptvisor run`` names its tenant's set here.
    zygote_extras: tuple[tuple[str, ...], ...] = ()
    #: Pipelining: while a worker runs a call whose script usually finishes in
    #: under this many milliseconds (its recent average, per script), the next
    #: queued call of the tenant is sent behind it, so the worker starts it
    #: without waiting for a round trip through the supervisor. Calls of
    #: slower scripts are never queued inside a worker (a call stuck behind a
    #: slow one could have run on another worker). 0 turns pipelining off.
    pipeline_below_ms: float = 2.0
    #: Pipelining for tenants whose ``max_concurrency`` is above 1 too. Off by
    #: default: with one call at a time a queued call waits for that worker
    #: anyway, but with several, a call queued behind one that hangs this once
    #: waits for its deadline even if another worker frees up meanwhile (no
    #: call is taken back from a worker: it may have started it). On, such
    #: tenants get the throughput of pipelining for short calls at that risk.
    pipeline_concurrent: bool = False
    #: Planned recycle after this many invocations (0: never).
    max_invocations_per_worker: int = 10_000
    #: Planned recycle of an idle worker older than this, seconds (0: never).
    max_worker_age: float = 3600.0
    #: Largest frame the supervisor accepts from a worker (bytes of JSON).
    max_frame: int = DEFAULT_MAX_FRAME
    #: Where scratch directories live (and the uid map, unless ``uid_dir``
    #: says otherwise).  ``scriptvisor serve`` gives each server a directory
    #: of its own under this one (``servers/<host>-<port>``, locked while it
    #: runs), see ``engine.server.statedir``.
    state_dir: str = field(default_factory=_default_state_dir)
    #: Where the tenant -> uid map lives (None: ``state_dir``).  One map per
    #: host: every server of the host allocates from it, so no two tenant
    #: folders ever get the same uid.
    uid_dir: str | None = None
    #: First uid/gid of the per-tenant range (root only). Tenants get
    #: ``uid_base + n`` in order of first use, recorded in ``state_dir``.
    uid_base: int = 300_000
    uid_count: int = 50_000
    #: Root supervisor: nftables rules let each tenant's uid open TCP only to
    #: its declared host:port pairs (``engine.egress``). Off or unavailable:
    #: Landlock ports only.
    egress: bool = True
    #: Refuse to start when an OS confinement layer is unavailable.
    require_all_layers: bool = False
    #: Apply OS confinement at all (tests of the language layer alone may turn it off).
    confine: bool = True
    #: Test-only: workers accept ``debug_exec`` frames (plain Python after
    #: confinement) so OS layers can be tested as if the language layer were
    #: broken. Never enabled by the CLI or the server.
    debug_exec: bool = False
    #: Grace period for a worker asked to exit (planned recycle) before SIGKILL.
    exit_grace: float = 1.0
