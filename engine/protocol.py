"""Wire protocol between the supervisor, the zygote and the workers.

Every message is one frame on a per-process stream socket::

     0      1      2      3      4      5      6      7      8
    +------+------+------+------+------+------+------+------+----- - -
    | 'S'  | 'V'  | ver  | kind |   payload length (uint32 BE)  | payload
    +------+------+------+------+------+------+------+------+----- - -

* ``ver`` is ``VERSION``; a frame of any other version is refused.
* ``kind`` is ``KIND_JSON`` (``b"J"``): the payload is one UTF-8 JSON object.
  There is no other kind.  Nothing crossing the boundary is ever unpickled.
* The length is checked against the receiver's cap *before* any payload is
  buffered, so a hostile worker cannot make the supervisor allocate more than
  ``max_frame`` bytes per channel.

A worker is never trusted: ``FrameDecoder`` raises ``FrameError`` on bad
magic, version, kind, size, UTF-8 or JSON, and ``parse_worker_message``
validates the shape of every message before the supervisor acts on it.  Any
``FrameError`` from a worker means: kill it, report ``protocol_error``.

Messages (``t`` is the type):

    supervisor -> worker   invoke  {id, path, hash, source|null, fn, args, config, timeout}
                           exit    {}                        planned recycle, graceful
    worker -> supervisor   ready   {pid}                     confined and waiting
                           result  {id, ok, result, error, logs, stats}
                           need_source {id}                  source hash not cached: resend with source
    supervisor -> zygote   spawn   {worker, tenant, policy}  + the worker's socket (SCM_RIGHTS)
                           stop    {}
    zygote -> supervisor   spawned {worker, pid} | failed {worker, reason}
                           exited  {pid, status}
                           log     {level, message}
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from .errors import WORKER_CODES

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "VERSION",
    "FrameDecoder",
    "FrameError",
    "NeedSource",
    "Ready",
    "WorkerResult",
    "encode",
    "parse_worker_message",
]

MAGIC = b"SV"
VERSION = 1
KIND_JSON = ord("J")
HEADER = struct.Struct(">2sBBI")
DEFAULT_MAX_FRAME = 4 * 1024 * 1024  # bytes of JSON payload per frame

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
_pack = HEADER.pack
_HSIZE = HEADER.size


class FrameError(Exception):
    """A frame that breaks the protocol. ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def encode(message: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame for ``message``. Raises ``FrameError('too_large')`` / ``('not_json')``."""
    try:
        payload = _dumps(message).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise FrameError("not_json", f"message is not JSON-serialisable: {exc}") from None
    if len(payload) > max_frame:
        raise FrameError("too_large", f"frame of {len(payload)} bytes exceeds {max_frame}")
    return _pack(MAGIC, VERSION, KIND_JSON, len(payload)) + payload


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
            payload = bytes(buf[_HSIZE:end])
            del buf[:end]
            self._need = 0
            try:
                message = _loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise FrameError("bad_json", "frame payload is not valid UTF-8 JSON") from None
            if type(message) is not dict or type(message.get("t")) is not str:
                raise FrameError("bad_message", "frame payload is not a typed message object")
            out.append(message)


# --------------------------------------------------------------------------
# Typed messages from workers.  Validation lives here so the supervisor only
# ever handles objects whose shape has been checked.

MAX_LOG_LINES = 10_000
MAX_ERROR_TEXT = 64 * 1024


@dataclass(slots=True)
class Ready:
    pid: int


@dataclass(slots=True)
class NeedSource:
    id: int


@dataclass(slots=True)
class WorkerResult:
    id: int
    ok: bool
    result: Any
    error: dict[str, Any] | None
    logs: list[str]
    stats: dict[str, float]


def _is_text(value: Any, limit: int = MAX_ERROR_TEXT) -> bool:
    return type(value) is str and len(value) <= limit


def parse_worker_message(msg: dict[str, Any]) -> Ready | WorkerResult | NeedSource:
    """Validate one decoded message from a worker. Raises ``FrameError``."""
    kind = msg["t"]
    if kind == "result":
        job_id = msg.get("id")
        ok = msg.get("ok")
        error = msg.get("error")
        logs = msg.get("logs", [])
        stats = msg.get("stats", {})
        if type(job_id) is not int or type(ok) is not bool:
            raise FrameError("bad_message", "result needs an integer id and a boolean ok")
        if type(logs) is not list or len(logs) > MAX_LOG_LINES or not all(type(x) is str for x in logs):
            raise FrameError("bad_message", "result logs must be a list of strings")
        if type(stats) is not dict or not all(
            type(k) is str and type(v) in (int, float) for k, v in stats.items()
        ):
            raise FrameError("bad_message", "result stats must map names to numbers")
        if ok:
            if error is not None:
                raise FrameError("bad_message", "an ok result carries no error")
        else:
            if type(error) is not dict:
                raise FrameError("bad_message", "a failed result needs an error object")
            if error.get("code") not in WORKER_CODES:
                raise FrameError("bad_message", f"worker may not report code {error.get('code')!r}")
            if not _is_text(error.get("name"), 256) or not _is_text(error.get("message")):
                raise FrameError("bad_message", "error name and message must be strings")
            if msg.get("result") is not None:
                raise FrameError("bad_message", "a failed result carries no value")
        return WorkerResult(job_id, ok, msg.get("result"), error, logs, stats)
    if kind == "need_source":
        job_id = msg.get("id")
        if type(job_id) is not int:
            raise FrameError("bad_message", "need_source needs an integer id")
        return NeedSource(job_id)
    if kind == "ready":
        pid = msg.get("pid")
        if type(pid) is not int:
            raise FrameError("bad_message", "ready needs an integer pid")
        return Ready(pid)
    raise FrameError("bad_message", f"unknown message type from worker: {kind[:40]!r}")
