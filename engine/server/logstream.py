"""Live per-tenant event fan-out for ``GET /v1/tenants/{tenant}/logs`` (SSE).

Events (``event:`` field of the SSE frame, JSON ``data:``, and an ``id:``):

* ``start``   ``{invocation_id, script|operation}``           an invocation began
* ``result``  ``{invocation_id, script|operation, ok, status, error, logs, duration_ms}``
* ``gap``     ``{last_event_id, first_available}``            a resumed stream missed events

plus a ``: heartbeat`` comment after ``heartbeat`` seconds (15 by default) without
an event, so idle proxies (nginx ``proxy_read_timeout``, cloud load balancers)
keep the stream open.

**Ids and resume.**  Every event of a tenant gets the id ``<epoch>-<n>``: ``epoch``
names this server process, ``n`` counts the tenant's events.  A client that
reconnects with ``Last-Event-ID`` first gets the events it missed, from a
bounded per-tenant replay buffer (``replay_events`` events and ``replay_bytes``
bytes, kept only for tenants somebody has subscribed to).  When they are no
longer all there (too old, or the id is from another server process) a ``gap``
event says so before the stream goes on.

**Bounds (issue 10).**  At most ``max_subscribers`` streams per tenant and
``max_total`` per server (more: 429 ``too_many_subscribers``).  Every subscriber
has a byte budget (``max_buffer_bytes``) of frames waiting for it; one frame is
at most ``MAX_EVENT_BYTES`` (larger results lose their logs, with
``logs_truncated`` saying how many lines).  A subscriber whose budget is
exhausted -- a client that stopped reading -- is *dropped*: its frames are
freed and its response is cancelled, so it costs the server nothing more than
the socket until the connection closes.  Publishing never blocks and never
waits for a reader.  Everything runs on the server's one event loop: no locks.

**Drain (issue 14).**  ``close()`` does not cut the streams: each tenant's
streams end as soon as that tenant has no call in flight, so subscribers get
the ``result`` events of the calls that were still running when the server
began to drain.  (New subscriptions are refused by the server while draining.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any, Callable

__all__ = ["LogHub", "SSEResponse", "TooManySubscribers", "format_sse"]

#: Defaults (``serve`` options override them).
HEARTBEAT_SECONDS = 15.0
MAX_SUBSCRIBERS_PER_TENANT = 8
MAX_SUBSCRIBERS_TOTAL = 256
SUBSCRIBER_BUFFER_BYTES = 1024 * 1024
REPLAY_EVENTS = 256
REPLAY_BYTES = 256 * 1024
#: Largest single frame; a result with more logs than this is sent without them.
MAX_EVENT_BYTES = 64 * 1024


class TooManySubscribers(Exception):
    """The tenant (or the server) already has its maximum of open log streams."""


def format_sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    # json.dumps never emits raw newlines, so one data: line is always enough
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {payload}\n\n".encode()


def _bounded_frame(event: str, data: dict[str, Any], event_id: str) -> bytes:
    frame = format_sse(event, data, event_id)
    if len(frame) <= MAX_EVENT_BYTES:
        return frame
    slim = dict(data)
    logs = slim.get("logs")
    if isinstance(logs, list) and logs:
        slim["logs"] = []
        slim["logs_truncated"] = len(logs)
    error = slim.get("error")
    if isinstance(error, dict):
        slim["error"] = {k: (v[:2000] if isinstance(v, str) else v) for k, v in error.items()
                         if k in ("code", "name", "message")}
    frame = format_sse(event, slim, event_id)
    if len(frame) <= MAX_EVENT_BYTES:
        return frame
    keep = {k: slim[k] for k in ("invocation_id", "script", "operation", "ok", "status", "duration_ms") if k in slim}
    return format_sse(event, {**keep, "truncated": True}, event_id)


class _Subscriber:
    __slots__ = ("tenant", "frames", "bytes", "wake", "ended", "dropped", "task")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.frames: deque[bytes] = deque()
        self.bytes = 0
        self.wake = asyncio.Event()
        self.ended = False
        self.dropped: str | None = None
        self.task: asyncio.Future[Any] | None = None

    def push(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.bytes += len(frame)
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class _Replay:
    __slots__ = ("frames", "bytes")

    def __init__(self) -> None:
        self.frames: deque[tuple[int, bytes]] = deque()
        self.bytes = 0


class LogHub:
    def __init__(
        self,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        max_subscribers: int = MAX_SUBSCRIBERS_PER_TENANT,
        max_total: int = MAX_SUBSCRIBERS_TOTAL,
        max_buffer_bytes: int = SUBSCRIBER_BUFFER_BYTES,
        replay_events: int = REPLAY_EVENTS,
        replay_bytes: int = REPLAY_BYTES,
        on_drop: Callable[[str, str], None] | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.max_subscribers = max_subscribers
        self.max_total = max_total
        self.max_buffer_bytes = max_buffer_bytes
        self.replay_events = replay_events
        self.replay_bytes = replay_bytes
        self.on_drop = on_drop
        self.epoch = format(int(time.time() * 1000), "x")
        self._subs: dict[str, set[_Subscriber]] = {}
        self._seq: dict[str, int] = {}
        self._replay: dict[str, _Replay] = {}
        self._running: dict[str, int] = {}
        self.closed = False

    # -- counts ----------------------------------------------------------------
    def subscribers(self, tenant: str) -> int:
        return len(self._subs.get(tenant, ()))

    def total_subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # -- calls in flight (what a draining stream waits for) ---------------------
    def call_started(self, tenant: str) -> None:
        self._running[tenant] = self._running.get(tenant, 0) + 1

    def call_ended(self, tenant: str) -> None:
        left = self._running.get(tenant, 1) - 1
        if left > 0:
            self._running[tenant] = left
            return
        self._running.pop(tenant, None)
        if self.closed:
            self._end_tenant(tenant)

    # -- publishing ----------------------------------------------------------------
    def publish(self, tenant: str, event: str, data: dict[str, Any]) -> None:
        subs = self._subs.get(tenant)
        replay = self._replay.get(tenant)
        if not subs and replay is None:
            return  # nobody follows this tenant: no id needed, nothing kept
        seq = self._seq.get(tenant, 0) + 1
        self._seq[tenant] = seq
        frame = _bounded_frame(event, data, f"{self.epoch}-{seq}")
        if replay is not None:
            replay.frames.append((seq, frame))
            replay.bytes += len(frame)
            while replay.frames and (len(replay.frames) > self.replay_events or replay.bytes > self.replay_bytes):
                replay.bytes -= len(replay.frames.popleft()[1])
        for sub in list(subs or ()):
            if sub.bytes + len(frame) > self.max_buffer_bytes:
                self._drop(sub, "slow")
            else:
                sub.push(frame)

    def _drop(self, sub: _Subscriber, reason: str) -> None:
        """End a subscriber now, freeing its frames (it stopped reading)."""
        sub.dropped = reason
        sub.frames.clear()
        sub.bytes = 0
        self._remove(sub)
        sub.end()
        if sub.task is not None:
            sub.task.cancel()  # it may be blocked writing to a client that never reads
        if self.on_drop is not None:
            self.on_drop(sub.tenant, reason)

    def _remove(self, sub: _Subscriber) -> None:
        subs = self._subs.get(sub.tenant)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.tenant]

    # -- subscribing ----------------------------------------------------------------
    def subscribe(self, tenant: str, last_event_id: str | None = None) -> _Subscriber:
        """A new subscriber, with the missed events queued when ``last_event_id`` is given.

        Raises ``TooManySubscribers`` when a cap is reached.
        """
        if self.subscribers(tenant) >= self.max_subscribers:
            raise TooManySubscribers(
                f"tenant {tenant!r} already has {self.max_subscribers} open log streams (the limit)")
        if self.total_subscribers() >= self.max_total:
            raise TooManySubscribers(f"the server already has {self.max_total} open log streams (the limit)")
        sub = _Subscriber(tenant)
        replay = self._replay.setdefault(tenant, _Replay())
        if last_event_id is not None:
            self._queue_missed(sub, replay, last_event_id.strip())
        self._subs.setdefault(tenant, set()).add(sub)
        if self.closed and not self._running.get(tenant):
            sub.end()
        return sub

    def _queue_missed(self, sub: _Subscriber, replay: _Replay, last: str) -> None:
        epoch, _, num = last.partition("-")
        seq = int(num) if num.isdigit() else -1
        current = self._seq.get(sub.tenant, 0)
        first = replay.frames[0][0] if replay.frames else current + 1
        if epoch != self.epoch or seq < 0 or seq > current:
            after = 0  # another server process (or nonsense): everything kept is new to it
            complete = False
        else:
            after = seq
            complete = seq + 1 >= first
        if not complete:
            sub.push(format_sse("gap", {"last_event_id": last,
                                        "first_available": f"{self.epoch}-{first}" if replay.frames else None}))
        for n, frame in replay.frames:
            if n > after:
                sub.push(frame)

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._remove(sub)
        sub.frames.clear()
        sub.bytes = 0

    # -- ending ------------------------------------------------------------------------
    def _end_tenant(self, tenant: str) -> None:
        for sub in list(self._subs.get(tenant, ())):
            sub.end()

    def close(self) -> None:
        """The server is draining: end each tenant's streams once its calls in flight are done."""
        self.closed = True
        for tenant in list(self._subs):
            if not self._running.get(tenant):
                self._end_tenant(tenant)

    # -- an async iterator (tests and in-process readers) -------------------------------
    async def stream(self, tenant: str, last_event_id: str | None = None) -> Any:
        sub = self.subscribe(tenant, last_event_id)
        try:
            yield b": subscribed\n\n"
            async for frame in self._frames(sub):
                yield frame
        finally:
            self.unsubscribe(sub)

    async def _frames(self, sub: _Subscriber) -> Any:
        while True:
            while sub.frames:
                frame = sub.frames.popleft()
                sub.bytes -= len(frame)
                yield frame
            if sub.ended:
                return
            sub.wake.clear()
            try:
                await asyncio.wait_for(sub.wake.wait(), self.heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"


class SSEResponse:
    """An ASGI response that streams one subscriber and can be cut off by the hub.

    Unlike Starlette's StreamingResponse, the task writing to the client is
    known to the hub, which cancels it to drop a reader that stopped reading
    (the write would otherwise wait forever for the client's window).
    """

    def __init__(self, hub: LogHub, sub: _Subscriber, headers: dict[str, str]) -> None:
        self.hub = hub
        self.sub = sub
        self.headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        sub = self.sub

        async def pump() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            # a comment first, so clients see the stream open before any event
            await send({"type": "http.response.body", "body": b": subscribed\n\n", "more_body": True})
            async for frame in self.hub._frames(sub):
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        writer = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(disconnected())
        sub.task = writer
        try:
            await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.cancel()
            watcher.cancel()
            self.hub.unsubscribe(sub)
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            exc = writer.exception()
            if not isinstance(exc, OSError):
                raise exc
