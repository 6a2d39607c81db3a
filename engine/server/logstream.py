"""Live per-tenant event fan-out for ``GET /v1/tenants/{tenant}/logs`` (SSE).

Each subscriber owns a bounded ``asyncio.Queue``.  Publishing never blocks
and never waits for a slow reader: when a subscriber's queue is full the event
is dropped for that subscriber and counted, and the next event it receives
carries ``dropped`` so the reader knows it missed some.  Everything runs on
the server's one event loop, so no locks are needed.

Events (``event:`` field of the SSE frame, JSON ``data:``):

* ``start``   ``{invocation_id, script|operation}``           an invocation began
* ``result``  ``{invocation_id, script|operation, ok, error, logs, duration_ms}``

``close()`` ends every stream (graceful shutdown must not wait for readers
that never disconnect).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

__all__ = ["LogHub", "format_sse"]

#: Events buffered per subscriber before events are dropped for it.
SUBSCRIBER_BUFFER = 256
_CLOSED = object()


def format_sse(event: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    # json.dumps never emits raw newlines, so one data: line is always enough
    return f"event: {event}\ndata: {payload}\n\n".encode()


class _Subscriber:
    __slots__ = ("queue", "dropped")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.dropped = 0


class LogHub:
    def __init__(self) -> None:
        self._subs: dict[str, set[_Subscriber]] = {}
        self.closed = False

    def subscribers(self, tenant: str) -> int:
        return len(self._subs.get(tenant, ()))

    def publish(self, tenant: str, event: str, data: dict[str, Any]) -> None:
        for sub in self._subs.get(tenant, ()):
            item = {**data, "dropped": sub.dropped} if sub.dropped else data
            try:
                sub.queue.put_nowait((event, item))
                sub.dropped = 0
            except asyncio.QueueFull:
                sub.dropped += 1

    async def stream(self, tenant: str) -> AsyncIterator[bytes]:
        """SSE frames for ``tenant`` until ``close()`` or the reader goes away."""
        sub = _Subscriber()
        self._subs.setdefault(tenant, set()).add(sub)
        try:
            # a comment first, so clients see the stream open before any event
            yield b": subscribed\n\n"
            while not self.closed:
                item = await sub.queue.get()
                if item is _CLOSED:
                    break
                event, data = item
                yield format_sse(event, data)
        finally:
            subs = self._subs.get(tenant)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[tenant]

    def close(self) -> None:
        """End every open stream (called when the server starts draining)."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                while True:
                    try:
                        sub.queue.put_nowait(_CLOSED)
                        break
                    except asyncio.QueueFull:
                        sub.queue.get_nowait()  # make room: the stream is ending anyway
