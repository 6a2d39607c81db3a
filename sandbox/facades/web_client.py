"""The network layer under the ``http`` facade: httpx over pinned addresses, one deadline.

Imported only by ``web.load_client`` (the zygote of tenants that declare
``[[http]]`` endpoints preloads it; ``wire.EXTRAS``): httpx and httpcore are
~190 modules that no other worker needs.  Scripts never see anything here.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterable

import certifi
import h11  # noqa: F401 - preloaded: httpcore imports it lazily per connection
import httpcore
import httpcore._backends.sync as _hc_sync
import httpx

from scriptvisor.sandbox.facades.web import Endpoint, _clip

__all__ = ["DEFAULT_SSL", "Transport", "httpx"]


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write waits at most until the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        t = _clip(timeout)
        if t <= 0:
            raise httpcore.ReadTimeout("the invocation's deadline passed while reading")
        return self._inner.read(max_bytes, t)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        t = _clip(timeout)
        if t <= 0:
            raise httpcore.WriteTimeout("the invocation's deadline passed while writing")
        self._inner.write(buffer, t)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        t = _clip(timeout)
        if t <= 0:
            raise httpcore.ConnectTimeout("the invocation's deadline passed during the TLS handshake")
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, t))

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":  # nothing above us needs the raw socket
            return None
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects a declared (host, port) to the addresses resolved at load, and nothing else."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._sync = _hc_sync.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        ep = self._endpoint
        if (host.lower().strip("[]"), port) != (ep.host, ep.port) or not ep.addresses:
            raise httpcore.ConnectError(f"{host}:{port} is not the declared endpoint {ep.name}")
        last: Exception | None = None
        for address in ep.addresses:
            t = _clip(timeout)
            if t <= 0:
                raise httpcore.ConnectTimeout("the invocation's deadline passed while connecting")
            try:
                return DeadlineStream(self._sync.connect_tcp(address, port, t, None, socket_options))
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError("no address")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not available")

    def sleep(self, seconds: float) -> None:  # httpcore's retries (we use none)
        raise httpcore.ConnectError("retries are not available")


class Transport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses the pinned backend."""

    def __init__(self, endpoint: Endpoint, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=4, max_keepalive_connections=2,
            keepalive_expiry=5.0, retries=0, network_backend=PinnedBackend(endpoint))


#: Verification against the CA bundle httpx uses (certifi), built once in the zygote.
DEFAULT_SSL = ssl.create_default_context(cafile=certifi.where())
