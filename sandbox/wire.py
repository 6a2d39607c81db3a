"""The wire contract between the supervisor, the zygote and the workers.

One leaf module (it imports only the standard library) that both sides use:
the engine imports it, the sandbox imports it, and the sandbox never imports
the engine.  It holds everything the two sides must agree on:

* the **frame** format and its caps (``encode``/``FrameDecoder``; every frame
  that crosses a process boundary is built by ``encode`` or ``invoke_frame``,
  both of which enforce the cap, so nothing oversized is ever written);
* the **messages** and their fields (below);
* the **exit codes** a worker leaves with, and the **error codes** a worker may
  report about its own invocation;
* the **worker policy**, a typed dataclass (``WorkerPolicy``, ``WorkerLimits``)
  that travels in ``spawn`` frames as ``to_wire()`` and is rebuilt by
  ``from_wire()`` (an unknown field, or a missing one that has no default, is
  refused).

Frame layout, one frame per message on a per-process stream socket::

     0      1      2      3      4      5      6      7      8
    +------+------+------+------+------+------+------+------+----- - -
    | 'S'  | 'V'  | ver  | kind |   payload length (uint32 BE)  | payload
    +------+------+------+------+------+------+------+------+----- - -

``ver`` is ``VERSION``; ``kind`` is ``KIND_JSON``: the payload is one strict
UTF-8 JSON object with a string ``t`` (its type).  Nothing is ever unpickled.
The receiver checks the length against its cap before buffering the payload.

Messages (``t``):

    supervisor -> worker   invoke      {id, path, hash, source|null, fn, args, config, timeout}
                           debug_exec  {id, code}              test-only (policy.debug_exec)
                           exit        {}                      planned recycle, graceful
    worker -> supervisor   ready       {pid}                   confined and waiting
                           result      {id, ok, result, error, logs, stats}
                           need_source {id}                    hash not cached: resend with source
                           db_session  {driver, name, session, started}  a database session it opened
                                                               (engine.dbsessions ends it if the worker dies)
    supervisor -> zygote   preload     {extras}                first frame: what to preload beyond
                                                               the facades (``EXTRAS``)
                           spawn       {worker, policy}        + the worker's socket (SCM_RIGHTS)
                           drop_standby {tenant}               the tenant lost its last worker
                           stop        {}
    zygote -> supervisor   hello       {pid, layers, extras, modules, rss_kb}  preloaded, ready to fork
                           spawned     {worker, pid} | failed {worker, reason}
                           exited      {pid, status}           raw wait status
                           log         {level, message}

Order is part of the contract.  A worker handles its frames one at a time, in
the order received, and writes a call's ``result`` before it reads or starts
the next one; the supervisor may send up to a few ``invoke`` frames ahead
(pipelining) and relies on this: when a worker dies, every call after the
first one without a result provably never started.  A worker keeps the last
``SOURCE_CACHE`` sources it was sent, dropping the least recently used; the
supervisor mirrors that cache, so it never sends ``source: null`` for a hash
the worker no longer has (``need_source`` is a fallback, not a path).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from json.encoder import encode_basestring as _encode_str
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MAX_FRAME", "EXIT_BOOT_ERROR", "EXIT_CONFINEMENT_FAILED", "EXIT_NAMES", "EXIT_OK",
    "EXIT_PROTOCOL", "FrameDecoder", "FrameError", "HEADER", "MAX_ERROR_NAME", "MAX_ERROR_TEXT",
    "MAX_INBOUND_FRAME", "MAX_LOG_LINES", "VERSION", "WORKER_CODES", "ArgumentError",
    "EXTRAS", "HttpEndpoint", "WorkerLimits", "WorkerPolicy", "encode", "encode_arguments", "extras_for",
    "invoke_frame", "scalar_json",
]

MAGIC = b"SV"
VERSION = 1
KIND_JSON = ord("J")
HEADER = struct.Struct(">2sBBI")

# -- caps ---------------------------------------------------------------------
#: Largest frame (bytes of JSON payload) the supervisor accepts from a worker
#: or the zygote, unless ``EngineConfig.max_frame`` says otherwise.
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
#: Largest frame a worker accepts from the supervisor: an invocation with its
#: source, arguments and configuration.  The supervisor refuses a call that
#: cannot fit *before* anything is sent (``encode_arguments``).
MAX_INBOUND_FRAME = 16 * 1024 * 1024
#: What the supervisor accepts in a result frame; the runner clips well inside.
MAX_LOG_LINES = 10_000
#: Script sources a worker keeps by hash (least recently used goes first), so
#: warm calls send none; the supervisor mirrors this cache exactly.
SOURCE_CACHE = 64
MAX_ERROR_NAME = 256
MAX_ERROR_TEXT = 64 * 1024
#: Room in an invoke frame for everything but the source, args and config.
_INVOKE_OVERHEAD = 1024

# -- exit codes ---------------------------------------------------------------
EXIT_OK = 0                  # asked to exit, or the supervisor went away
EXIT_BOOT_ERROR = 3          # could not build the runner
EXIT_CONFINEMENT_FAILED = 4  # an available OS layer failed to apply
EXIT_PROTOCOL = 5            # the supervisor sent something the worker cannot parse

EXIT_NAMES = {
    EXIT_BOOT_ERROR: "worker boot error",
    EXIT_CONFINEMENT_FAILED: "confinement failed",
    EXIT_PROTOCOL: "protocol error from supervisor",
}

#: Codes a worker may report about its own invocation.  Anything else from a
#: worker is a protocol error: a worker cannot claim a timeout or a crash.
WORKER_CODES = frozenset(
    {"script_error", "compile_error", "not_found", "stall", "double_callback", "invalid_result"}
)

# -- frames -------------------------------------------------------------------
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
_scan_once = json.JSONDecoder().scan_once
_pack = HEADER.pack
_HSIZE = HEADER.size


def _parse(text: str) -> Any:
    """``json.loads(text)``: the C scanner directly when the text is one bare
    value (what every encoder here writes), ``json.loads`` for anything else
    (surrounding whitespace, or the error it raises)."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _loads(text)
    if end != len(text):
        return _loads(text)
    return value


class FrameError(Exception):
    """A frame that breaks the protocol, or a message that cannot become one.

    ``reason`` is a short machine word (``too_large``, ``not_json``, ``bad_json``...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def frame(payload: bytes, max_frame: int) -> bytes:
    """Header + ``payload``; refuses a payload over ``max_frame`` bytes."""
    if len(payload) > max_frame:
        raise FrameError("too_large", f"frame of {len(payload)} bytes exceeds {max_frame}")
    return _pack(MAGIC, VERSION, KIND_JSON, len(payload)) + payload


def encode(message: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame for ``message``: strict UTF-8 JSON, at most ``max_frame`` bytes."""
    try:
        payload = _dumps(message).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise FrameError("not_json", f"message is not JSON-serialisable: {exc}") from None
    return frame(payload, max_frame)


class ArgumentError(ValueError):
    """A call's input that no frame can carry. ``argument`` names it (``args[1]``, ``configuration``)."""

    def __init__(self, argument: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument
        self.reason = reason
        self.message = message


def _value_bytes(value: Any, what: str) -> bytes:
    try:
        return _dumps(value).encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(what, "not_unicode", f"{what} contains text that is not valid Unicode "
                            "(a lone surrogate); it cannot be sent to a script") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise ArgumentError(what, "not_json", f"{what} is not a JSON value: {exc}") from None


def encode_arguments(args: list[Any], configuration: dict[str, Any], *,
                     source_bytes: int = 0, max_frame: int = MAX_INBOUND_FRAME) -> tuple[bytes, bytes]:
    """The JSON bytes of a call's ``args`` and ``configuration``, or ``ArgumentError``.

    Checked before a call is queued: strict UTF-8 (no lone surrogates), JSON
    values only (no NaN), and the whole invoke frame, with ``source_bytes`` of
    source, within the worker's inbound cap.  The error names the argument.
    """
    try:
        args_b = _dumps(args).encode("utf-8") if args else b"[]"
    except (TypeError, ValueError, RecursionError):
        for i, value in enumerate(args):
            _value_bytes(value, f"args[{i}]")
        raise
    config_b = _value_bytes(configuration, "configuration") if configuration else b"{}"
    room = max_frame - _INVOKE_OVERHEAD - source_bytes
    if len(args_b) + len(config_b) > room:
        sizes = [(len(_dumps(v).encode("utf-8")), f"args[{i}]") for i, v in enumerate(args)]
        sizes.append((len(config_b), "configuration"))
        size, what = max(sizes)
        raise ArgumentError(what, "too_large", f"{what} is {size} bytes of JSON; a call's arguments, "
                            f"configuration and source may total at most {room + source_bytes} bytes")
    return args_b, config_b


def invoke_frame(job_id: int, timeout: float, digest: str, path_json: bytes, fn_json: bytes,
                 source_json: bytes | None, args_json: bytes, config_json: bytes,
                 max_frame: int = MAX_INBOUND_FRAME) -> bytes:
    """The ``invoke`` frame from pre-encoded JSON parts (the per-call hot path)."""
    payload = b"".join((
        b'{"t":"invoke","id":', str(job_id).encode(), b',"timeout":', repr(timeout).encode(),
        b',"hash":"', digest.encode("ascii"), b'","path":', path_json, b',"fn":', fn_json,
        b',"source":', b"null" if source_json is None else source_json,
        b',"args":', args_json, b',"config":', config_json, b"}",
    ))
    return frame(payload, max_frame)


def scalar_json(value: Any) -> str | None:
    """The JSON text ``encode`` writes for ``value`` when it is an exact ``str``,
    ``int``, ``bool``, ``None`` or finite ``float``; ``None`` for anything else.

    The worker's per-call fast path (a callback value, a result frame): the
    encoder's Python entry costs more than the text of a scalar.  The text is
    what the C encoder writes for these types (``encode_basestring``, the
    ``int``/``float`` reprs), so a frame built from it is the same bytes.
    """
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float and value - value == 0.0:  # finite: inf - inf and nan - nan are nan
        return float.__repr__(value)
    return None


def json_bytes(value: Any) -> bytes:
    """Strict UTF-8 JSON of ``value`` (``FrameError('not_json')`` otherwise)."""
    try:
        return _dumps(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise FrameError("not_json", f"value is not JSON-serialisable: {exc}") from None


class FrameDecoder:
    """Incremental decoder for one channel. ``feed`` returns complete messages."""

    __slots__ = ("_buf", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._need = 0  # payload length of the frame being read, 0 = reading a header
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        while True:
            if not self._need:
                if len(buf) < _HSIZE:
                    return out
                magic, version, kind, length = HEADER.unpack_from(buf)
                if magic != MAGIC:
                    raise FrameError("bad_magic", f"bad frame magic {bytes(magic)!r}")
                if version != VERSION:
                    raise FrameError("bad_version", f"unsupported protocol version {version}")
                if kind != KIND_JSON:
                    raise FrameError("bad_kind", f"unsupported frame kind {kind}")
                if length > self.max_frame:
                    raise FrameError("too_large", f"frame of {length} bytes exceeds {self.max_frame}")
                if length == 0:
                    raise FrameError("empty", "empty frame")
                self._need = length
            end = _HSIZE + self._need
            if len(buf) < end:
                return out
            payload = buf[_HSIZE:end]
            del buf[:end]
            self._need = 0
            try:
                message = _parse(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise FrameError("bad_json", "frame payload is not valid UTF-8 JSON") from None
            if type(message) is not dict or type(message.get("t")) is not str:
                raise FrameError("bad_message", "frame payload is not a typed message object")
            out.append(message)


# -- the worker policy ----------------------------------------------------------

@dataclass(frozen=True)
class WorkerLimits:
    """The per-worker part of a tenant's limits: what the sandbox enforces itself.

    The defaults here are the only copy: ``engine.config.TenantLimits`` takes
    its defaults for these fields from this class.
    """

    #: Address-space cap per worker (RLIMIT_AS).
    memory_mb: int = 512
    #: CPU seconds per worker (RLIMIT_CPU soft; hard = soft + 1).
    cpu_seconds: int = 60
    #: Open file descriptors per worker (RLIMIT_NOFILE).
    open_files: int = 64
    #: Processes/threads for the tenant's uid (RLIMIT_NPROC, per-tenant uid only).
    processes: int = 16
    #: Largest file a script may write (RLIMIT_FSIZE).
    file_size_mb: int = 16
    #: Scratch space per worker (tmpfs size when the supervisor is root).
    scratch_mb: int = 32
    #: Printed output and log lines per invocation.
    output_bytes: int = 64 * 1024
    #: Largest JSON result a script may return.
    result_bytes: int = 1024 * 1024
    #: Database connections a worker may hold open at once (sqlite, postgres
    #: and mysql together); one more is ``NotAllowed`` naming this limit.
    db_connections: int = 4
    #: Data-directory quota, MiB: a sqlite file may grow (max_page_count) to
    #: this minus the other files of the directory (``DataQuotaExceeded``).
    data_mb: int = 256
    #: Files scripts may create in the data directory (sqlite databases; their
    #: -wal/-shm/-journal companions do not count).
    data_files: int = 16
    # Work-factor caps of the ``passwords`` facade.  The cost of verifying a
    # stored hash is written in the hash, and the C code that computes it runs
    # no deadline check, so a hash above any cap is refused before any work.
    # The defaults admit what the reference implementations write by default
    # today: bcrypt 10-14, Django 5.x/6.x PBKDF2 (1,000,000-1,200,000 rounds),
    # sha512-crypt 656,000 (libpass) / 5,000 (glibc), phpass (WordPress 8,
    # phpBB 11), argon2-cffi m=64 MiB t=3 p=4 and Django m=100 MiB t=2 p=8,
    # scrypt N=2^16 r=8 p=1.
    #: bcrypt cost (log2 rounds): 16 is about 4 s on one core.
    hash_bcrypt_max_cost: int = 16
    #: PBKDF2 iterations (modular and Django forms): about 1.3 s of SHA-256.
    hash_pbkdf2_max_rounds: int = 2_000_000
    #: sha256-crypt / sha512-crypt ``rounds=``.
    hash_sha_crypt_max_rounds: int = 1_000_000
    #: phpass cost (log2 of its MD5 rounds).
    hash_phpass_max_cost: int = 20
    #: argon2 memory in KiB (taken from the worker's memory_mb).
    hash_argon2_max_memory_kib: int = 131_072
    #: argon2 passes over that memory.
    hash_argon2_max_time_cost: int = 10
    #: argon2 lanes (computed in turn on the worker's one thread).
    hash_argon2_max_parallelism: int = 16
    #: scrypt memory, 128 * N * r bytes, in MiB.
    hash_scrypt_max_memory_mb: int = 128
    #: scrypt p.
    hash_scrypt_max_parallelism: int = 16

    @classmethod
    def from_wire(cls, data: Any) -> "WorkerLimits":
        return _from_wire(cls, data, "limits")


@dataclass(frozen=True)
class HttpEndpoint:
    """One ``[[http]]`` declaration of the tenant, as the worker's http facade receives it.

    Built by the engine when it loads tenant.toml (``engine.tenants``):
    the host name is resolved there, and ``addresses`` are the only addresses
    the worker ever connects to for it.
    """

    name: str
    base_url: str
    scheme: str                      # "http" | "https"
    host: str                        # lowercase, IPv6 without brackets
    port: int
    prefix: str                      # path prefix, always ending in "/"
    addresses: tuple[str, ...] = ()  # resolved at load
    ca_pem: str | None = None        # the operator's CA bundle (PEM text), https only

    @classmethod
    def from_wire(cls, data: Any) -> "HttpEndpoint":
        ep = _from_wire(cls, data, "policy.http[]")
        return dataclasses.replace(ep, addresses=tuple(ep.addresses))


@dataclass(frozen=True)
class WorkerPolicy:
    """Everything a worker is confined and booted with, fixed at spawn."""

    tenant: str
    worker_id: int = 0
    uid: int | None = None          # per-tenant uid/gid (root supervisor), else None
    gid: int | None = None
    scratch_dir: str | None = None  # this worker's private writable directory
    data_dir: str | None = None     # the tenant's data directory
    allowed_ports: tuple[int, ...] = ()
    http: tuple[HttpEndpoint, ...] = ()  # the tenant's declared HTTP endpoints
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    confine: bool = True
    debug_exec: bool = False        # test-only: accept debug_exec frames
    max_frame: int = DEFAULT_MAX_FRAME  # largest frame the worker may send
    standby: bool = True            # the zygote keeps a pre-forked standby for the tenant
    #: Operator-declared databases (engine.databases.DatabaseDecl.to_policy, secrets
    #: included): the only ones the facades open; never handed to a script.
    databases: tuple[dict[str, Any], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: its recursive deep copy was
        # ~0.2 ms of every spawn (a new tenant's first call waits for it).
        out = {name: getattr(self, name) for name in _POLICY_FIELDS}
        out["limits"] = dict(vars(self.limits))
        out["allowed_ports"] = list(self.allowed_ports)
        out["http"] = [dict(vars(ep), addresses=list(ep.addresses)) for ep in self.http]
        out["databases"] = [dict(d) for d in self.databases]
        return out

    @classmethod
    def from_wire(cls, data: Any) -> "WorkerPolicy":
        """Rebuild from ``to_wire()``; ``FrameError`` on an unknown field or a missing required one."""
        policy = _from_wire(cls, data, "policy")
        if type(policy.http) not in (list, tuple):
            raise FrameError("bad_message", "policy.http must be a list")
        return dataclasses.replace(policy, allowed_ports=tuple(policy.allowed_ports),
                                   http=tuple(HttpEndpoint.from_wire(ep) for ep in policy.http),
                                   limits=WorkerLimits.from_wire(policy.limits),
                                   databases=tuple(policy.databases))

    def extras(self) -> tuple[str, ...]:
        """What the zygote forking this worker must hold beyond the facades (``extras_for``)."""
        return extras_for((str(d.get("driver")) for d in self.databases), http=bool(self.http))

    def replace(self, **changes: Any) -> "WorkerPolicy":
        return dataclasses.replace(self, **changes)

    def standby_key(self) -> str:
        """Everything a standby was confined with (not its worker id or scratch dir)."""
        data = self.to_wire()
        del data["worker_id"], data["scratch_dir"]
        return json.dumps(data, sort_keys=True)


#: What a zygote preloads beyond every facade, each only for the workers that
#: need it: the network database drivers of ``sandbox.facades.db`` (psycopg
#: alone is ~120 modules and ~11 MiB) and the HTTP client under the ``http``
#: facade (httpx, ~190 modules).  A zygote holds one set of extras (its
#: "flavour"; the empty set is the slim zygote) and forks only workers whose
#: ``WorkerPolicy.extras()`` it covers: workers cannot import after confinement.
EXTRAS = ("http", "mysql", "postgres")


_POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(WorkerPolicy))


def extras_for(drivers: Any, http: bool = False) -> tuple[str, ...]:
    """The extras (sorted) for declared databases of these drivers (sqlite needs
    none) and, with ``http``, declared ``[[http]]`` endpoints."""
    wanted = set(drivers) | ({"http"} if http else set())
    return tuple(sorted(wanted & set(EXTRAS)))


def _from_wire(cls: Any, data: Any, what: str) -> Any:
    if type(data) is not dict:
        raise FrameError("bad_message", f"{what} must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise FrameError("bad_message", f"{what} has unknown fields {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise FrameError("bad_message", f"{what} is incomplete: {exc}") from None


def worker_error(code: str, name: str, message: str, **details: Any) -> dict[str, Any]:
    """The ``error`` object of a failed result, as a worker reports it.

    The one constructor for it on the sandbox side: it refuses a code the
    supervisor would refuse (``WORKER_CODES``), so a typo is a bug found here,
    not a worker killed for breaking the protocol.
    """
    if code not in WORKER_CODES:
        raise ValueError(f"a worker cannot report {code!r}")
    out: dict[str, Any] = {"code": code, "name": name, "message": message}
    out.update(details)
    return out
