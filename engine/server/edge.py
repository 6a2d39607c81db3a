"""The HTTP edge of a node: bounds on slow and idle clients (issue 10, "slow clients").

Stock uvicorn holds a connection that sends half a request line or half its
headers for as long as the client likes (its keep-alive timer only runs
*between* requests, and any byte cancels it), and it accepts every connection
the kernel hands it.  ``BoundedH11Protocol`` adds, per connection:

* a **header deadline**: the request line and headers must be complete within
  ``EdgeLimits.header_timeout`` seconds of the connection opening or of the
  previous response ending; a byte arriving does not extend it.  Past it the
  connection is closed without an answer (a half-sent request has no framing
  to answer into);
* a **connection cap**: beyond ``EdgeLimits.max_connections`` open
  connections a new one gets ``503 too_many_connections`` (JSON, with
  ``Connection: close`` and ``Retry-After``) and is closed at once, before
  its request is read.

The body deadline (``EdgeLimits.body_timeout``) is enforced where the body is
read, in ``app._read_json_body``, so that it can answer a clear
``408 request_timeout`` with ``Connection: close``; whatever the client
still trickles after that answer is cut by the header deadline, which is
re-armed when each response ends.

Timers are loop timers (``call_later``), one per connection; nothing polls.
nginx in front (``deploy/nginx/scriptvisor.conf``) applies the same bounds to
clients with its own ``client_header_timeout``/``client_body_timeout``; these
are the node's own, for traffic that reaches it directly.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["EdgeLimits", "protocol_class"]


@dataclass(frozen=True)
class EdgeLimits:
    #: Seconds for the request line and headers, from the connection opening
    #: (or the previous response ending) to the blank line that ends them.
    header_timeout: float = 10.0
    #: Seconds for the whole body once the server starts reading it.
    body_timeout: float = 10.0
    #: Open connections (idle keep-alive ones included) the node accepts;
    #: one more is answered 503 and closed.
    max_connections: int = 1024
    #: Seconds an idle keep-alive connection stays open between requests.
    #: Keep it above the load balancer's own upstream keep-alive timeout
    #: (nginx: ``keepalive_timeout 4s`` in the upstream block) so the node
    #: never closes a connection the balancer is about to reuse.
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 3600):
                raise ValueError(f"{name} must be a number of seconds in (0, 3600), got {value!r}")
        if not (isinstance(self.max_connections, int) and self.max_connections >= 1):
            raise ValueError(f"max_connections must be a positive integer, got {self.max_connections!r}")


def _refusal(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap."""

    limits: EdgeLimits = EdgeLimits()
    #: what a refused connection is told (bytes written before closing)
    REFUSAL = _refusal(503, "Service Unavailable", "too_many_connections",
                       "this node has too many open connections; retry shortly")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._draining = False

    # -- header deadline ----------------------------------------------------
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # a request whose headers are complete is the app's (or the body
        # deadline's) business; only a connection still in its header phase
        # is cut here
        if self.conn.their_state in (h11.IDLE, h11.DONE, h11.SEND_BODY) and (
                self.cycle is None or self.cycle.response_complete):
            self.transport.abort()

    # -- uvicorn hooks ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(self.REFUSAL)
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete
            self._cancel_header_timer()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False  # answered, then closed

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # the next request's headers (or the rest of an unread body) get
            # the same deadline as the first request's
            self._arm_header_timer()

    def shutdown(self) -> None:
        self._cancel_header_timer()
        super().shutdown()

    # -- drain (run._Server.stop_accepting) ---------------------------------
    def drain(self) -> None:
        """The server is draining: a call running here ends the connection after
        its answer; an idle connection stays open for the next request (answered,
        with ``Connection: close``) until uvicorn's shutdown closes it."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False


def protocol_class(limits: EdgeLimits) -> type[BoundedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to ``limits``."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"limits": limits})
