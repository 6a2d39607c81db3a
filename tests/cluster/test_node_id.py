"""The node id a server puts in ``X-Scriptvisor-Node`` (engine.server.node)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scriptvisor.engine.server.node import HEADER, NODE_ID_ENV, NodeHeader, NodeIdError, node_id


def test_node_id_from_environment() -> None:
    assert node_id(8080, {NODE_ID_ENV: "node-a"}) == "node-a"


def test_node_id_defaults_to_hostname_and_port() -> None:
    host = socket.gethostname()
    assert node_id(8081, {}) == f"{host}:8081"


@pytest.mark.parametrize("bad", ["a b", "x\r\nSet-Cookie: y", "é", "n" * 129])
def test_cant_set_a_node_id_that_breaks_the_header(bad: str) -> None:
    with pytest.raises(NodeIdError, match=NODE_ID_ENV):
        node_id(8080, {NODE_ID_ENV: bad})


def test_header_added_to_http_responses_only() -> None:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    mw = NodeHeader(app, "node-a")
    asyncio.run(mw({"type": "http"}, receive, send))
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (HEADER.lower().encode(), b"node-a")]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
