"""The ``http`` facade: requests to the HTTP endpoints the operator declared.

A script gets this object from ``import http``; never httpx, a client, a
transport, a response or a socket.  Every call returns a plain dict::

    r = http.get(url, params=None, headers=None, timeout=None)
    r = http.post(url, json=None, data=None, params=None, headers=None, timeout=None)
    # also put, patch, delete, head and request(method, url, ...)
    r == {"status": 200, "headers": {"content-type": "..."}, "text": "...",
          "json": <decoded value or None>, "url": "<final url>"}

A status of 400 or more raises ``HttpError`` unless the call passes
``raise_for_status=False``.  The exception classes a script catches by name
(``except http.HttpError as e: e.status, e.body``)::

    HttpFailure                  any failure of this facade
    ├── NotAllowed               the URL (or a redirect's target) is not a declared endpoint
    ├── HttpTimeout              no answer within the invocation's remaining time
    ├── ConnectError             could not connect / the connection broke / TLS failed
    ├── ResponseTooLarge         the body is over MAX_RESPONSE_BYTES
    └── HttpError                the server answered 4xx/5xx (.status, .body excerpt, .url)

Rules, and why:
- Only URLs under a base URL declared in the tenant's ``tenant.toml``
  (``[[http]]``: scheme, host, port, path prefix) are requested; redirects are
  followed by hand (at most ``MAX_REDIRECTS``) and every hop is checked the
  same way.  The declared endpoints reach the worker in its policy.
- Names are resolved when the tenant is loaded (server side), and the worker
  connects only to those addresses: it never resolves a name itself, so a
  name that resolves elsewhere later is not followed (the OS egress rules are
  built from the same addresses).  TLS still verifies the certificate against
  the declared host name (SNI), with the operator's per-endpoint CA bundle if
  one is set.
- Time: one deadline per call, derived from ``sandbox.context`` (the time
  left minus a margin, as for the database facades); connect, every socket
  read and write and the whole body share it, so a slow or drip-feeding API
  ends as a catchable ``HttpTimeout`` before the supervisor kills the worker.
- Size: request bodies up to ``MAX_REQUEST_BYTES``, response bodies up to
  ``MAX_RESPONSE_BYTES`` (after decompression; ``Content-Length`` over the cap
  is refused before reading).  JSON is decoded into plain values.
"""

from __future__ import annotations

import importlib
import ipaddress
import json as _json
import math
import socket
import ssl
import time
import urllib.parse
import zlib
from typing import Any, Iterable

from scriptvisor.sandbox import context
from scriptvisor.sandbox.wire import HttpEndpoint

# The socket module encodes host names with the "idna" codec, imported lazily
# on first use; workers never import after confinement (the zygote imports us).
"localhost".encode("idna")

__all__ = [
    "ConnectError",
    "Endpoint",
    "HttpError",
    "HttpFailure",
    "HttpTimeout",
    "NotAllowed",
    "ResponseTooLarge",
    "http",
    "parse_base_url",
]

# --------------------------------------------------------------------------
# limits (documented data)

#: Largest response body a script receives (bytes, after decompression).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
#: Largest request body a script may send.
MAX_REQUEST_BYTES = 1024 * 1024
#: Redirect hops followed (each one checked against the declared endpoints).
MAX_REDIRECTS = 5
#: Longest URL accepted.
MAX_URL_CHARS = 8192
#: Headers a script may send per request, and their size.
MAX_HEADERS, MAX_HEADER_CHARS = 64, 8192
#: Characters of the body kept in ``HttpError.body``.
ERROR_BODY_CHARS = 1000
#: Only for ``remaining()`` outside an invocation (requests are refused there).
NO_INVOCATION_BUDGET = 30.0
#: Part of the remaining time kept back for the script (same rule as the database facades).
MARGIN_FRACTION, MARGIN_MIN, MARGIN_MAX = 0.10, 0.05, 0.5
#: Below this many seconds of budget a request is not even sent.
MIN_BUDGET = 0.02
#: Largest CA bundle an operator may declare for one endpoint (it travels in the worker's policy).
MAX_CA_BUNDLE_BYTES = 256 * 1024
#: Most [[http]] endpoints one tenant may declare.
MAX_ENDPOINTS = 16
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Headers the facade sets itself (a script setting Host could reach another virtual host).
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                              "accept-encoding", "upgrade", "te", "trailer", "proxy-authorization"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --------------------------------------------------------------------------
# exceptions scripts can catch


class HttpFailure(Exception):
    """Any failure of the ``http`` facade. Catch this to handle them all."""


class NotAllowed(HttpFailure):
    """The URL, or a redirect's target, is not under a declared endpoint."""


class HttpTimeout(HttpFailure):
    """No complete answer within the invocation's remaining time."""


class ConnectError(HttpFailure):
    """The endpoint could not be reached, the connection broke, or TLS verification failed."""


class ResponseTooLarge(HttpFailure):
    """The response body is larger than the facade accepts."""


class HttpError(HttpFailure):
    """The server answered with a status of 400 or more.

    ``status`` (int), ``body`` (the first ``ERROR_BODY_CHARS`` characters of
    the response text) and ``url`` (the URL that answered).
    """

    def __init__(self, status: int, body: str, url: str) -> None:
        self.status = status
        self.body = body
        self.url = url
        excerpt = " ".join(body.split())[:200]
        super().__init__(f"HTTP {status} from {url}" + (f": {excerpt}" if excerpt else ""))


# --------------------------------------------------------------------------
# declared endpoints


#: One declared endpoint (a typed part of the worker policy, ``sandbox.wire``).
Endpoint = HttpEndpoint


def _covers(ep: Endpoint, scheme: str, host: str, port: int, path: str) -> bool:
    if (scheme, host, port) != (ep.scheme, ep.host, ep.port):
        return False
    return path.startswith(ep.prefix) or path == ep.prefix[:-1] or ep.prefix == "/"


def _split(url: str) -> tuple[str, str, int, str, urllib.parse.SplitResult]:
    """(scheme, host, port, decoded path, parts) of an absolute http(s) URL; ValueError if it is not one."""
    if any(c in url for c in "\r\n\t\x00 ") or not url.isprintable():
        raise ValueError("URL contains whitespace or control characters")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("only http:// and https:// URLs")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("user:password@ in a URL is not accepted (send an Authorization header)")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("URL has no host")
    port = parts.port or _DEFAULT_PORTS[scheme]  # ValueError for a bad port
    path = urllib.parse.unquote(parts.path or "/")
    segments = path.split("/")
    if "." in segments or ".." in segments or "\\" in path or "\x00" in path:
        raise ValueError("URL path with '.' or '..' segments or backslashes")
    return scheme, host, port, path or "/", parts


def parse_base_url(base_url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, prefix) of a declared base URL. ValueError says what is wrong."""
    if type(base_url) is not str or not base_url:
        raise ValueError("must be a URL string like 'https://api.example.com/v1/'")
    scheme, host, port, path, parts = _split(base_url)
    if parts.query or parts.fragment:
        raise ValueError("a base URL has no query or fragment")
    prefix = path if path.endswith("/") else path + "/"
    return scheme, host, port, prefix


def resolve_host(host: str, port: int) -> tuple[str, ...]:
    """The addresses ``host`` resolves to now (an IP literal is itself). OSError when it does not resolve."""
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        if sockaddr[0] not in out:
            out.append(sockaddr[0])
    if not out:
        raise OSError(f"{host} resolves to no address")
    return tuple(out)


def check_ca_pem(pem: str) -> None:
    """ValueError unless ``pem`` holds at least one certificate OpenSSL can load."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"not a PEM CA bundle OpenSSL can load ({exc})") from None


# --------------------------------------------------------------------------
# time budget


def _remaining() -> float:
    try:
        return context.current().remaining()
    except RuntimeError:
        return NO_INVOCATION_BUDGET


def _budget() -> float:
    left = _remaining()
    margin = min(MARGIN_MAX, max(MARGIN_MIN, left * MARGIN_FRACTION))
    budget = left - margin
    if budget < MIN_BUDGET:
        raise HttpTimeout(f"no time left for an HTTP request ({left:.2f} s left in this invocation)")
    return budget


#: monotonic() time at which the request in progress must be over (one request at a time per worker).
_deadline = 0.0


def _clip(timeout: float | None) -> float:
    left = _deadline - time.monotonic()
    return left if timeout is None else min(timeout, left)


# --------------------------------------------------------------------------
# the HTTP client, loaded where it is needed

#: httpx and the network layer under it (``web_client``): ~190 modules and
#: ~11 MiB with the CA bundle.  Only the zygote of tenants that declare
#: ``[[http]]`` endpoints preloads it (``wire.EXTRAS``); every other worker
#: refuses every URL before any client would be needed (no endpoint is
#: declared), exactly as when the client was loaded everywhere.
httpx: Any = None
_client: Any = None


def load_client() -> None:
    """Import the HTTP client now (in the zygote of tenants that declare endpoints)."""
    global httpx, _client
    if _client is None:
        mod = importlib.import_module("scriptvisor.sandbox.facades.web_client")
        httpx = mod.httpx
        _client = mod


def _require_client() -> Any:
    if _client is None:
        try:
            load_client()
        except Exception as exc:  # confined: imports may be refused
            raise ConnectError(f"the HTTP client is not loaded in this worker ({_short(exc)}); its zygote "
                               "preloads it only for tenants that declare [[http]] endpoints") from None
    return _client



class _WorkerState:
    """Per-worker: the declared endpoints (from the policy) and one client per endpoint."""

    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = endpoints
        self.clients: dict[str, httpx.Client] = {}

    def client(self, ep: Endpoint) -> httpx.Client:
        client = self.clients.get(ep.name)
        if client is None:
            lib = _require_client()
            ctx = lib.DEFAULT_SSL
            if ep.ca_pem:
                ctx = ssl.create_default_context(cadata=ep.ca_pem)
            client = httpx.Client(transport=lib.Transport(ep, ctx), trust_env=False,
                                  follow_redirects=False, headers={"User-Agent": "scriptvisor-http"})
            self.clients[ep.name] = client
        return client

    def close(self) -> None:
        for client in self.clients.values():
            try:
                client.close()
            except Exception:
                pass
        self.clients.clear()


_no_worker_state = _WorkerState(())
#: (worker context, its state): one worker context per process; host-side tests swap it.
_current_state: "tuple[Any, _WorkerState] | None" = None


def _state() -> _WorkerState:
    """The endpoints of this worker's policy, and its clients (closed on recycle)."""
    global _current_state
    try:
        ctx = context.worker()
    except RuntimeError:
        return _no_worker_state
    if _current_state is None or _current_state[0] is not ctx:
        if _current_state is not None:
            _current_state[1].close()
        state = _WorkerState(tuple(ctx.http))
        ctx.on_recycle(state.close)
        _current_state = (ctx, state)
    return _current_state[1]


def _declared(state: _WorkerState) -> str:
    if not state.endpoints:
        return "this tenant declares no HTTP endpoints ([[http]] in tenant.toml)"
    return "declared: " + ", ".join(f"{e.name} = {e.base_url}" for e in state.endpoints)


def _endpoint_for(state: _WorkerState, url: str, what: str) -> Endpoint:
    try:
        scheme, host, port, path, _parts = _split(url)
    except ValueError as exc:
        raise NotAllowed(f"{what} {_show(url)} refused: {exc}; {_declared(state)}") from None
    for ep in state.endpoints:
        if _covers(ep, scheme, host, port, path):
            return ep
    raise NotAllowed(f"{what} {_show(url)} is not under an HTTP endpoint declared for this tenant; "
                     f"{_declared(state)}")


def _show(url: str) -> str:
    return repr(url if len(url) <= 200 else url[:200] + "...")


# --------------------------------------------------------------------------
# input checks


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-ready plain values only (what the script's json facade accepts)."""
    if depth > 64:
        raise ValueError("json value nested too deeply")
    t = type(value)
    if value is None or t in (str, bool, int):
        return value
    if t is float:
        if not math.isfinite(value):
            raise ValueError("NaN and infinite floats cannot be sent as JSON")
        return value
    if t in (list, tuple):
        return [_plain(v, depth + 1) for v in value]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError("json object keys must be str")
            out[k] = _plain(v, depth + 1)
        return out
    raise TypeError(f"cannot send a {t.__name__} as JSON (plain str, int, float, bool, None, list, dict)")


def _scalar_text(value: Any, what: str) -> str:
    t = type(value)
    if t is str:
        return value
    if t in (int, float, bool):
        return str(value)
    raise TypeError(f"{what} must be a str or a number, not {t.__name__}")


def _check_headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if type(headers) is not dict:
        raise TypeError("headers must be a dict of str to str")
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"more than {MAX_HEADERS} headers")
    out = {}
    for name, value in headers.items():
        if type(name) is not str or not name or not all(33 <= ord(c) < 127 and c != ":" for c in name):
            raise ValueError(f"invalid header name {name!r}")
        value = _scalar_text(value, f"header {name}")
        if len(value) > MAX_HEADER_CHARS or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"header {name} is too long or contains a line break")
        if name.lower() in RESERVED_HEADERS:
            raise NotAllowed(f"header {name} is set by the http facade, not by scripts")
        out[name] = value
    return out


def _check_params(params: Any) -> list[tuple[str, str]]:
    if params is None:
        return []
    if type(params) is not dict:
        raise TypeError("params must be a dict of str to str/number (or a list of them)")
    out = []
    for key, value in params.items():
        if type(key) is not str:
            raise TypeError("params keys must be str")
        values = value if type(value) in (list, tuple) else [value]
        for v in values:
            out.append((key, _scalar_text(v, f"param {key}")))
    return out


def _body(json: Any, data: Any, headers: dict[str, str]) -> bytes | None:
    if json is not None and data is not None:
        raise TypeError("pass json or data, not both")
    lower = {k.lower() for k in headers}
    if json is not None:
        body = _json.dumps(_plain(json), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif data is None:
        return None
    elif type(data) is str:
        body = data.encode("utf-8")
    elif type(data) is bytes:
        body = data
    elif type(data) is dict:
        body = urllib.parse.urlencode(_check_params(data)).encode("ascii")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        raise TypeError("data must be a str, bytes or a dict of form fields")
    if len(body) > MAX_REQUEST_BYTES:
        raise ValueError(f"request body is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES}")
    return body


# --------------------------------------------------------------------------
# reading the answer


def _read_body(resp: httpx.Response, url: str) -> bytes:
    length = resp.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(f"the response from {_show(url)} is {int(length)} bytes; "
                               f"the limit is {MAX_RESPONSE_BYTES}")
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        decoder: Any = zlib.decompressobj(wbits)
    elif encoding in ("identity", ""):
        decoder = None
    else:
        raise HttpFailure(f"the response from {_show(url)} uses content encoding {encoding!r}, "
                          "which the http facade does not decode (it asks for identity)")
    chunks: list[bytes] = []
    size = 0
    for raw in resp.iter_raw():
        if decoder is not None:
            try:
                raw = decoder.decompress(raw, MAX_RESPONSE_BYTES + 1 - size)
            except zlib.error as exc:
                raise HttpFailure(f"the response from {_show(url)} is not valid {encoding}: {exc}") from None
        size += len(raw)
        if size > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(f"the response from {_show(url)} is over {MAX_RESPONSE_BYTES} bytes "
                                   "(the limit); reading stopped")
        chunks.append(raw)
    if decoder is not None:
        tail = decoder.flush()
        if size + len(tail) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(f"the response from {_show(url)} is over {MAX_RESPONSE_BYTES} bytes "
                                   "(the limit); reading stopped")
        chunks.append(tail)
    return b"".join(chunks)


def _text_of(resp: httpx.Response, body: bytes) -> str:
    charset = resp.charset_encoding or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_of(resp: httpx.Response, text: str) -> Any:
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (ctype == "application/json" or ctype.endswith("+json")):
        return None
    try:
        return _json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _headers_of(resp: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in resp.headers.multi_items():
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _next_request(method: str, status: int, body: bytes | None, headers: dict[str, str],
                  same_origin: bool) -> tuple[str, bytes | None, dict[str, str]]:
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, body = ("HEAD" if method == "HEAD" else "GET"), None
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if not same_origin:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
    return method, body, headers


# --------------------------------------------------------------------------
# the request


def request(method: str, url: str, *, params: Any = None, headers: Any = None, json: Any = None,
            data: Any = None, timeout: Any = None, raise_for_status: bool = True,
            follow_redirects: bool = True) -> dict[str, Any]:
    global _deadline
    if type(method) is not str or method.upper() not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    method = method.upper()
    if type(url) is not str:
        raise TypeError("url must be a str")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"URL longer than {MAX_URL_CHARS} characters")
    if timeout is not None and (type(timeout) not in (int, float) or not timeout > 0):
        raise TypeError("timeout must be a positive number of seconds")
    try:
        context.current()
    except RuntimeError:  # e.g. a generator's finally run by the collector after the call ended
        raise NotAllowed("no HTTP requests outside an invocation (the call this code belonged to is over)") from None
    state = _state()
    hdrs = _check_headers(headers)
    query = _check_params(params)
    body = _body(json, data, hdrs)
    if query:
        parts = urllib.parse.urlsplit(url)
        extra = urllib.parse.urlencode(query)
        url = urllib.parse.urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    ep = _endpoint_for(state, url, "URL")
    budget = _budget()
    if timeout is not None:
        budget = min(budget, float(timeout))
    _deadline = time.monotonic() + budget
    hops = 0
    while True:
        resp = _send(state, ep, method, url, hdrs, body, budget)
        try:
            location = resp.headers.get("location")
            if follow_redirects and resp.status_code in (301, 302, 303, 307, 308) and location:
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise HttpFailure(f"more than {MAX_REDIRECTS} redirects from {_show(url)}")
                target = urllib.parse.urljoin(url, location.strip())
                next_ep = _endpoint_for(state, target, f"redirect from {_show(url)} to")
                method, body, hdrs = _next_request(method, resp.status_code, body, hdrs,
                                                   (next_ep.scheme, next_ep.host, next_ep.port)
                                                   == (ep.scheme, ep.host, ep.port))
                url, ep = target, next_ep
                continue
            data_bytes = _read_body(resp, url) if method != "HEAD" else b""
        except httpx.TimeoutException:
            raise HttpTimeout(_timeout_message(url, budget)) from None
        except httpx.HTTPError as exc:
            raise ConnectError(f"reading the response from {_show(url)} failed: {_short(exc)}") from None
        finally:
            resp.close()
        text = _text_of(resp, data_bytes)
        if resp.status_code >= 400 and raise_for_status:
            raise HttpError(resp.status_code, text[:ERROR_BODY_CHARS], url)
        return {"status": resp.status_code, "headers": _headers_of(resp), "text": text,
                "json": _json_of(resp, text), "url": url}


def _timeout_message(url: str, budget: float) -> str:
    return (f"no complete answer from {_show(url)} within {budget:.2f} s, stopped before the "
            f"invocation's deadline ({_remaining():.2f} s left)")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _send(state: _WorkerState, ep: Endpoint, method: str, url: str, headers: dict[str, str],
          body: bytes | None, budget: float) -> httpx.Response:
    client = state.client(ep)
    hdrs = dict(headers)
    hdrs["Accept-Encoding"] = "identity"
    left = _clip(None)
    if left <= 0:
        raise HttpTimeout(_timeout_message(url, budget))
    try:
        req = client.build_request(method, url, headers=hdrs, content=body,
                                   timeout=httpx.Timeout(left))
        return client.send(req, stream=True)
    except httpx.TimeoutException:
        raise HttpTimeout(_timeout_message(url, budget)) from None
    except httpx.InvalidURL as exc:
        raise NotAllowed(f"URL {_show(url)} refused: {_short(exc)}") from None
    except httpx.HTTPError as exc:
        cause = exc.__context__ or exc.__cause__
        if isinstance(cause, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
            raise ConnectError(f"TLS verification of {ep.host} failed: {_short(exc)}") from None
        raise ConnectError(f"cannot reach {ep.name} ({ep.host}:{ep.port}): {_short(exc)}") from None


# --------------------------------------------------------------------------
# the facade object


class _HttpFacade:
    """Requests to the tenant's declared ``[[http]]`` endpoints only; every answer is a plain dict ``{"status", "headers", "text", "json", "url"}``."""

    __slots__ = ()

    HttpFailure = HttpFailure
    NotAllowed = NotAllowed
    HttpTimeout = HttpTimeout
    ConnectError = ConnectError
    ResponseTooLarge = ResponseTooLarge
    HttpError = HttpError
    MAX_RESPONSE_BYTES = MAX_RESPONSE_BYTES
    MAX_REQUEST_BYTES = MAX_REQUEST_BYTES
    MAX_REDIRECTS = MAX_REDIRECTS

    def request(self, method: str, url: str, params: Any = None, headers: Any = None, json: Any = None,
                data: Any = None, timeout: Any = None, raise_for_status: bool = True,
                follow_redirects: bool = True) -> dict[str, Any]:
        """Send ``method`` to ``url`` (under a declared endpoint); the answer as a plain dict."""
        return request(method, url, params=params, headers=headers, json=json, data=data,
                       timeout=timeout, raise_for_status=raise_for_status,
                       follow_redirects=follow_redirects)

    def get(self, url: str, params: Any = None, headers: Any = None, timeout: Any = None,
            raise_for_status: bool = True) -> dict[str, Any]:
        """GET ``url``; the answer as a plain dict (4xx/5xx raise ``HttpError`` unless ``raise_for_status=False``)."""
        return request("GET", url, params=params, headers=headers, timeout=timeout,
                       raise_for_status=raise_for_status)

    def head(self, url: str, params: Any = None, headers: Any = None, timeout: Any = None,
             raise_for_status: bool = True) -> dict[str, Any]:
        """HEAD ``url``: status and headers, empty text."""
        return request("HEAD", url, params=params, headers=headers, timeout=timeout,
                       raise_for_status=raise_for_status)

    def delete(self, url: str, params: Any = None, headers: Any = None, timeout: Any = None,
               raise_for_status: bool = True) -> dict[str, Any]:
        """DELETE ``url``; the answer as a plain dict."""
        return request("DELETE", url, params=params, headers=headers, timeout=timeout,
                       raise_for_status=raise_for_status)

    def post(self, url: str, json: Any = None, data: Any = None, params: Any = None, headers: Any = None,
             timeout: Any = None, raise_for_status: bool = True) -> dict[str, Any]:
        """POST ``json`` (plain values) or ``data`` (str, bytes or form dict) to ``url``."""
        return request("POST", url, params=params, headers=headers, json=json, data=data,
                       timeout=timeout, raise_for_status=raise_for_status)

    def put(self, url: str, json: Any = None, data: Any = None, params: Any = None, headers: Any = None,
            timeout: Any = None, raise_for_status: bool = True) -> dict[str, Any]:
        """PUT ``json`` or ``data`` to ``url``."""
        return request("PUT", url, params=params, headers=headers, json=json, data=data,
                       timeout=timeout, raise_for_status=raise_for_status)

    def patch(self, url: str, json: Any = None, data: Any = None, params: Any = None, headers: Any = None,
              timeout: Any = None, raise_for_status: bool = True) -> dict[str, Any]:
        """PATCH ``json`` or ``data`` to ``url``."""
        return request("PATCH", url, params=params, headers=headers, json=json, data=data,
                       timeout=timeout, raise_for_status=raise_for_status)

    def endpoints(self) -> list:
        """The declared endpoints as ``[{"name", "base_url"}]`` (what a script may request)."""
        return [{"name": e.name, "base_url": e.base_url} for e in _state().endpoints]

    def remaining(self) -> float:
        """Seconds left in this invocation (what the timeouts are derived from)."""
        return _remaining()

    def __repr__(self) -> str:
        return ("<http facade: get/post/put/patch/delete/head/request(url, ...) -> "
                "{status, headers, text, json, url}>")


http = _HttpFacade()
