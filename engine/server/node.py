"""This server's node identity, sent on every response as ``X-Scriptvisor-Node``.

When several nodes run behind a load balancer (``deploy/``, ``docs/scaling.md``)
an operator needs to see which node answered: to check that a tenant sticks to
one node (its warm workers and ``global_`` live there), and to find the node
whose log holds an invocation.  The id is

* ``SCRIPTVISOR_NODE_ID`` from the environment when set (the systemd unit sets
  it per instance), else
* ``<hostname>:<port>``, which is unique per listening server on a machine.

The header is added by a pure ASGI middleware, so it also lands on streamed
responses (the server-sent log stream) and on the server's own error answers.
It names a node, never a tenant or anything secret.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any, Awaitable, Callable, Mapping

__all__ = ["HEADER", "NODE_ID_ENV", "NodeHeader", "node_id"]

HEADER = "X-Scriptvisor-Node"
NODE_ID_ENV = "SCRIPTVISOR_NODE_ID"
#: What a node id may look like (it goes into an HTTP header verbatim).
_VALID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class NodeIdError(ValueError):
    """``SCRIPTVISOR_NODE_ID`` is set to something that cannot be a header value."""


def node_id(port: int, environ: Mapping[str, str] | None = None) -> str:
    """The id of a node listening on ``port`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    configured = env.get(NODE_ID_ENV, "").strip()
    if configured:
        if not _VALID.match(configured):
            raise NodeIdError(
                f"{NODE_ID_ENV}={configured!r} is not a valid node id "
                "(1-128 characters of letters, digits and . _ : @ -)"
            )
        return configured
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "node"
    return f"{host[:100]}:{port}"


class NodeHeader:
    """ASGI middleware: add ``X-Scriptvisor-Node: <id>`` to every HTTP response."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], node: str) -> None:
        if not _VALID.match(node):
            raise NodeIdError(f"invalid node id {node!r}")
        self.app = app
        self.node = node
        self._header = (HEADER.lower().encode("latin-1"), node.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_node(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), self._header]
            await send(message)

        await self.app(scope, receive, send_with_node)
