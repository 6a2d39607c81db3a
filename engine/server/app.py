"""HTTP routes of the operator server (Starlette), documented in ``openapi.json``.

    POST /v1/tenants/{tenant}/scripts/{script}         run scripts/<script>.py
    POST /v1/tenants/{tenant}/connection/{operation}   a custom-database operation
    GET  /v1/tenants/{tenant}/logs                     server-sent events of that tenant
    GET  /v1/admin/tenants                             every tenant: state, workers, last error (admin token)
    GET  /healthz  /readyz  /metrics                   per-tenant detail only with the admin token
    GET  /openapi.json  /docs                          this API's description, and a page rendering it

Status codes are about the request, never about the script: whenever the
engine ran (or tried to run) a script the answer is 200 with the result object
(``ok`` false on failure).  The exceptions are the engine's own request-level
outcomes, ``overloaded`` (429 + Retry-After) and ``engine_unavailable`` (503),
whose HTTP status is declared on the error class itself.

Order of checks, so an anonymous caller learns nothing about tenants and no
body is read before the caller is known: draining (503) -> token (401/403) ->
tenant (404, or 500 if its folder is broken) -> content type (415) -> size (413)
-> body deadline (408) -> JSON (400) -> shape (422) -> script (404) -> run.

503 is kept for node-level refusals (draining, engine or confinement
unavailable, too many connections), which a load balancer may count against
the node; tenant-level ones (broken tenant folder 500, queue full 429) and a
shared user store that did not answer (504) never are (docs/scaling.md, "A
broken tenant never takes a node out").
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scriptvisor.engine.errors import CODES, InvocationError
from scriptvisor.engine.result import public
from scriptvisor.engine.tenants import SCRIPT_NAME, TENANT_NAME, Tenant

from . import auth
from .activity import Activity
from .logstream import LogHub, SSEResponse, TooManySubscribers
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .oplog import CURRENT_INVOCATION, OperatorLog
from .tenants import TenantRegistry

__all__ = ["ServerState", "create_app"]

#: Largest request body accepted, bytes. Arguments are emails, passwords and
#: small profiles; anything near this size is a mistake or an attack.
DEFAULT_MAX_BODY = 1024 * 1024
#: Seconds a client is told to wait after 429 when the engine gives no hint.
DEFAULT_RETRY_AFTER = 1
BODY_KEYS = frozenset({"args", "timeout"})
#: ``engine_unavailable`` errors that name the shared user store, not this node.
SHARED_DEPENDENCY_ERRORS = frozenset({"UserStoreUnavailable", "UserStoreTimeout"})

#: ``run_connection(tenant, operation, args) -> dict`` (the result object plus
#: ``scripts_called``...). Raises ``KeyError`` for an unknown operation.
ConnectionRunner = Callable[[Tenant, str, list[Any]], Awaitable[dict[str, Any]]]


@dataclass
class ServerState:
    engine: Any  # engine.AsyncEngine (duck-typed: invoke(), stats())
    registry: TenantRegistry
    metrics: ServerMetrics
    hub: LogHub
    oplog: OperatorLog
    admin_hash: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    #: seconds for a request body once its reading starts (EdgeLimits.body_timeout)
    body_timeout: float = 10.0
    connection_runner: ConnectionRunner | None = None
    connection_operations: frozenset[str] = frozenset()
    draining: bool = False
    ready: bool = False
    in_flight: int = 0
    #: Strip account hints (user_known, email_or_id, other users' ids) from
    #: connection responses: ``serve --end-user-responses`` (engine.connections.end_user_view).
    end_user_responses: bool = False
    #: tenant -> invocations the server is waiting on (admin route)
    tenant_in_flight: dict[str, int] = field(default_factory=dict)
    #: tenant -> the last failed invocation {code, message, invocation_id, ts} (admin route)
    last_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: recent invocations and per-10s aggregates for the console (activity.py)
    activity: Activity = field(default_factory=Activity)


class RequestProblem(Exception):
    """A request refused before (or instead of) running anything."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra: dict[str, Any] = {}

    def response(self) -> JSONResponse:
        body = {"code": self.code, "message": self.message, **self.extra}
        return JSONResponse({"error": body}, self.status, self.headers)


def _problem(status: int, code: str, message: str, **headers: str) -> RequestProblem:
    return RequestProblem(status, code, message, headers)


# -- request checks ---------------------------------------------------------

def _is_admin(state: ServerState, request: Request) -> bool:
    token = auth.bearer_token(request.headers.get("authorization"))
    return (token is not None and state.admin_hash is not None
            and auth.decide(token, "", {}, state.admin_hash) is auth.Decision.ALLOW)


def _authorize(state: ServerState, request: Request, name: str) -> Tenant:
    """The tenant ``name`` if the caller may act for it; raises RequestProblem."""
    if state.draining:
        raise _problem(503, "draining", "the server is shutting down", **{"Retry-After": "1"})  # + Connection: close (run.py)
    token = auth.bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _problem(401, "unauthorized", "missing bearer token", **{"WWW-Authenticate": "Bearer"})
    tenant = state.registry.get(name) if TENANT_NAME.match(name) else None
    hashes = {t.name: t.token_hashes for t in state.registry.tenants.values()}
    # a broken tenant's own tokens (as far as its file still reads) are known
    # too, so its caller hears "500, and why" rather than a misleading 401
    hashes.update(state.registry.broken_token_hashes())
    decision = auth.decide(token, name, hashes, state.admin_hash)
    if decision is auth.Decision.UNAUTHENTICATED:
        raise _problem(401, "unauthorized", "invalid bearer token", **{"WWW-Authenticate": "Bearer"})
    if decision is auth.Decision.FORBIDDEN:
        raise _problem(403, "forbidden", f"this token does not give access to tenant {name!r}")
    if tenant is None:
        err = state.registry.error(name)
        if err is not None:
            raise _broken(name, err)
        raise _problem(404, "unknown_tenant", f"no tenant {name!r}")
    return tenant


def _broken(name: str, err: Any) -> RequestProblem:
    """500 for a tenant whose folder does not load, naming the failing key.

    500, not 503: a broken tenant folder is the same on every node, and a
    load balancer counts 503 against the node (docs/scaling.md, "A broken
    tenant never takes a node out").

    Only an authorised caller (the tenant's own token or the admin) gets here;
    the message names the key and the problem but not the server's file paths.
    """
    where = f" at {err.key!r}" if err.key else ""
    problem = _problem(
        500, "tenant_unavailable",
        f"tenant {name!r} has an invalid tenant.toml{where}: {err.message}; fix the file "
        "(it is re-read on the next request) or ask the operator",
    )
    problem.extra = {"key": err.key}
    return problem


async def _read_json_body(state: ServerState, request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise _problem(415, "unsupported_media_type", "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _problem(400, "bad_request", "invalid Content-Length")
        if int(length) > state.max_body:
            raise _problem(413, "body_too_large", f"request body over {state.max_body} bytes")
    body = bytearray()
    try:
        # the body deadline of the HTTP edge (engine/server/edge.py has the
        # header deadline and the connection cap): a client that trickles its
        # body is answered and disconnected, never waited for
        async with asyncio.timeout(state.body_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > state.max_body:
                    raise _problem(413, "body_too_large", f"request body over {state.max_body} bytes")
    except TimeoutError:
        raise _problem(408, "request_timeout", f"the request body did not arrive within {state.body_timeout:g} s",
                       Connection="close") from None
    if not body:
        return {}
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except UnicodeDecodeError:
        raise _problem(400, "malformed_json", "request body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise _problem(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _problem(422, "invalid_body", 'the body must be a JSON object like {"args": [...]}')
    return data


def _invocation_args(data: dict[str, Any], tenant: Tenant) -> tuple[list[Any], float | None]:
    unknown = set(data) - BODY_KEYS
    if unknown:
        raise _problem(422, "invalid_body", f"unknown body keys {sorted(unknown)} (allowed: args, timeout)")
    args = data.get("args", [])
    if not isinstance(args, list):
        raise _problem(422, "invalid_body", '"args" must be a JSON array')
    timeout = data.get("timeout")
    if timeout is not None:
        if type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout <= 0:
            raise _problem(422, "invalid_body", '"timeout" must be a positive number of seconds')
        if timeout > tenant.limits.timeout:
            raise _problem(
                422, "invalid_body", f'"timeout" may not exceed the tenant limit of {tenant.limits.timeout} s'
            )
        timeout = float(timeout)
    return args, timeout


# -- running ----------------------------------------------------------------

def _status_for(result: dict[str, Any]) -> tuple[int, dict[str, str]]:
    error = result.get("error") or {}
    cls = CODES.get(error.get("code", ""))
    status = cls.http_status if cls is not None else 200
    headers: dict[str, str] = {}
    if status == 503 and error.get("name") in SHARED_DEPENDENCY_ERRORS:
        # the platform user store, shared by every node, did not answer: 504,
        # not 503, so a load balancer does not take this node (and the tenants
        # that never touch the store) out of the pool for it (docs/scaling.md)
        status = 504
        headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    if status == 429 or error.get("code") == "engine_unavailable":
        retry = error.get("retry_after", DEFAULT_RETRY_AFTER)
        headers["Retry-After"] = str(max(1, math.ceil(retry if isinstance(retry, (int, float)) else 1)))
    return status, headers


async def _run(
    state: ServerState,
    tenant: Tenant,
    kind: str,
    name: str,
    call: Callable[[], Awaitable[dict[str, Any]]],
) -> Response:
    invocation_id = uuid.uuid4().hex
    label = {"script": name} if kind == "script" else {"operation": name}
    # a draining server ends a tenant's log streams only when its calls are
    # done, so subscribers get these calls' result events (issue 14)
    state.hub.call_started(tenant.name)
    token = CURRENT_INVOCATION.set(invocation_id)
    try:
        return await _run_call(state, tenant, kind, call, invocation_id, label)
    finally:
        CURRENT_INVOCATION.reset(token)
        state.hub.call_ended(tenant.name)


async def _run_call(
    state: ServerState,
    tenant: Tenant,
    kind: str,
    call: Callable[[], Awaitable[dict[str, Any]]],
    invocation_id: str,
    label: dict[str, str],
) -> Response:
    state.hub.publish(tenant.name, "start", {"invocation_id": invocation_id, **label})
    state.in_flight += 1
    state.tenant_in_flight[tenant.name] = state.tenant_in_flight.get(tenant.name, 0) + 1
    gauge = state.metrics.in_flight.labels(tenant.name)
    gauge.inc()
    started = time.perf_counter()
    try:
        try:
            result = await call()
        except InvocationError as exc:  # engine-level refusals may be raised rather than returned
            result = {"ok": False, "result": None, "error": exc.to_dict(), "logs": [],
                      "duration_ms": (time.perf_counter() - started) * 1000, "worker": {}}
    finally:
        state.in_flight -= 1
        left = state.tenant_in_flight.get(tenant.name, 1) - 1
        if left > 0:
            state.tenant_in_flight[tenant.name] = left
        else:
            state.tenant_in_flight.pop(tenant.name, None)
        gauge.dec()
    error = result.get("error") or {}
    if error.get("code") == "bad_request":
        # The operation refused its arguments (wrong count or type): that is a
        # problem with the request body (422), not a result of running anything.
        state.hub.publish(tenant.name, "result", {"invocation_id": invocation_id, **label, "ok": False,
                                                  "status": 422, "error": error})
        return _reject(state, tenant.name, _problem(422, "invalid_body", str(error.get("message"))))
    status, headers = _status_for(result)
    headers["X-Invocation-Id"] = invocation_id
    outcome = "ok" if result.get("ok") else str((result.get("error") or {}).get("code", "error"))
    duration_ms = float(result.get("duration_ms") or 0.0)
    if status == 200:
        state.metrics.observe(tenant.name, kind, outcome, duration_ms / 1000)
    else:
        state.metrics.reject(tenant.name, status)
    if not result.get("ok"):
        err = result.get("error") or {}
        state.last_errors[tenant.name] = {
            "code": str(err.get("code", "error")), "message": str(err.get("message", ""))[:500],
            "invocation_id": invocation_id, "status": status, "ts": round(time.time(), 3),
            **label,
        }
    state.activity.record(tenant.name, invocation_id=invocation_id, kind=kind, name=next(iter(label.values())),
                          outcome=outcome, status=status, duration_ms=duration_ms)
    worker = result.get("worker") or {}
    state.oplog.invocation(
        tenant=tenant.name, invocation_id=invocation_id, outcome=outcome, duration_ms=duration_ms,
        status=status, worker_pid=worker.get("pid") if isinstance(worker, dict) else None, **label,
    )
    event = {"invocation_id": invocation_id, **label, "ok": bool(result.get("ok")), "status": status,
             "error": result.get("error"), "logs": result.get("logs", []), "duration_ms": duration_ms}
    state.hub.publish(tenant.name, "result", event)
    if kind == "connection" and error.get("code") == "contract_violation":
        # both sides of an account clash, for the operator (never for the end user)
        state.oplog.write("account_contract_violation", tenant=tenant.name, invocation_id=invocation_id,
                          **label, error=error)
    body = public(result)
    if kind == "connection" and state.end_user_responses:
        from scriptvisor.engine.connections import end_user_view

        body = end_user_view(body)
    # the worker's pid and figures went to the operator log; the response is
    # the public result object, the same as `scriptvisor run --json`
    return JSONResponse(body, status, headers)


def _reject(state: ServerState, name: str, problem: RequestProblem) -> Response:
    # only known tenants become metric labels: URLs are attacker-chosen
    label = name if name in state.registry.tenants else "-"
    state.metrics.reject(label, problem.status)
    return problem.response()


# -- endpoints --------------------------------------------------------------

async def invoke_script(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    script = request.path_params["script"]
    try:
        tenant = _authorize(state, request, name)
        data = await _read_json_body(state, request)
        args, timeout = _invocation_args(data, tenant)
        path = tenant.script_path(script)
        if path is None:
            raise _problem(404, "unknown_script", f"tenant {name!r} has no script {script!r}"
                           + ("" if SCRIPT_NAME.match(script) else " (script names are Python identifiers)"))
    except RequestProblem as problem:
        return _reject(state, name, problem)

    async def call() -> dict[str, Any]:
        res = await state.engine.invoke(
            tenant.name, path=str(path), function=None, args=args,
            configuration=dict(tenant.configuration), timeout=timeout,
        )
        return res.to_dict(with_worker=True)

    return await _run(state, tenant, "script", script, call)


async def invoke_connection(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    operation = request.path_params["operation"]
    try:
        tenant = _authorize(state, request, name)
        data = await _read_json_body(state, request)
        args, _timeout = _invocation_args(data, tenant)
        if state.connection_runner is None or operation not in state.connection_operations:
            known = ", ".join(sorted(state.connection_operations)) or "none available"
            raise _problem(404, "unknown_operation", f"no connection operation {operation!r} (known: {known})")
    except RequestProblem as problem:
        return _reject(state, name, problem)
    runner = state.connection_runner

    async def call() -> dict[str, Any]:
        return await runner(tenant, operation, args)

    return await _run(state, tenant, "connection", operation, call)


async def tenant_logs(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    try:
        tenant = _authorize(state, request, name)
        try:
            sub = state.hub.subscribe(tenant.name, request.headers.get("last-event-id"))
        except TooManySubscribers as exc:
            raise _problem(429, "too_many_subscribers", f"{exc}; close another stream or retry later",
                           **{"Retry-After": "5"}) from None
    except RequestProblem as problem:
        return _reject(state, name, problem)
    return SSEResponse(state.hub, sub, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # type: ignore[return-value]


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Up/down for anyone (a load balancer has no token); tenant detail for the admin only."""
    state: ServerState = request.app.state.sv
    # touch every tenant so edited or newly broken files show up here too
    for name in list(state.registry.tenants) + list(state.registry.errors):
        state.registry.get(name)
    # the user store as it is (a shared PostgreSQL store down makes the node unready;
    # one tenant's SQLite file does not): one trivial statement, off the event loop
    from scriptvisor.engine.userstore import store_health

    store = await asyncio.get_running_loop().run_in_executor(None, store_health)
    ready = state.ready and not state.draining and (store["ok"] or store["kind"] != "postgres")
    # node_ready leaves out what every node shares (the PostgreSQL store): a
    # load balancer's health check keys on it (deploy/haproxy/haproxy.cfg), so
    # a store outage does not take every node out of the pool at once
    # the engine is down while its zygote restarts (backing off after
    # repeated deaths): the node is not ready until it is back
    engine_ok = bool(getattr(state.engine, "available", True))
    node_ready = state.ready and not state.draining and engine_ok
    ready = ready and node_ready
    admin = _is_admin(state, request)
    body: dict[str, Any] = {"ready": ready, "draining": state.draining, "node_ready": node_ready,
                            "engine": engine_ok,
                            "user_store": {"ok": store["ok"], "kind": store["kind"]}}
    if admin:
        body["tenants"] = sorted(state.registry.tenants)
        body["invalid_tenants"] = state.registry.errors
        body["user_store"].update({k: v for k, v in store.items() if k in ("error", "failing")})
    return JSONResponse(body, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Every series for the admin token; without it only the series that name no tenant."""
    state: ServerState = request.app.state.sv
    return Response(state.metrics.render(per_tenant=_is_admin(state, request)), media_type=METRICS_CONTENT_TYPE)


def _worker_counts(stats: dict[str, Any], name: str) -> dict[str, int]:
    info = (stats.get("tenants") or {}).get(name) or {}
    counts = {"spawning": 0, "idle": 0, "busy": 0, "exiting": 0}
    for w in info.get("workers") or []:
        st = str(w.get("state", "")).lower() if isinstance(w, dict) else ""
        if st in counts:
            counts[st] += 1
    counts["alive"] = sum(counts.values())
    counts["queued"] = int(info.get("queued") or 0)
    return counts


def _processes(stats: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The tenant's worker processes for the console: pid, state, age, calls, memory."""
    info = (stats.get("tenants") or {}).get(name) or {}
    out = [{"pid": w.get("pid"), "state": str(w.get("state", "")).lower(), "age_s": w.get("age_s"),
            "calls": int(w.get("invocations") or 0), "rss": w.get("rss"), "uss": w.get("uss")}
           for w in info.get("workers") or [] if isinstance(w, dict)]
    return sorted(out, key=lambda w: w["pid"] or 0)


async def admin_tenants(request: Request) -> Response:
    """``GET /v1/admin/tenants``: every tenant folder, its state, workers and last error."""
    state: ServerState = request.app.state.sv
    token = auth.bearer_token(request.headers.get("authorization"))
    if token is None:
        return _reject(state, "-", _problem(401, "unauthorized", "missing bearer token",
                                            **{"WWW-Authenticate": "Bearer"}))
    if not _is_admin(state, request):
        hashes = {t.name: t.token_hashes for t in state.registry.tenants.values()}
        if auth.decide(token, "", hashes, None) is auth.Decision.FORBIDDEN:
            return _reject(state, "-", _problem(403, "forbidden", "this route needs the admin token "
                                                "(SCRIPTVISOR_ADMIN_TOKEN on the server)"))
        return _reject(state, "-", _problem(401, "unauthorized", "invalid bearer token",
                                            **{"WWW-Authenticate": "Bearer"}))
    state.registry.scan_new()
    for name in list(state.registry.tenants) + list(state.registry.errors):
        state.registry.get(name)  # reload edited files, so the listing is current
    try:
        stats = state.engine.stats(memory=True) or {}
    except Exception:  # the engine stopping must not fail an admin listing
        stats = {}
    tenants = state.registry.tenants
    out = []
    for name in sorted(set(tenants) | set(state.registry.errors)):
        tenant = tenants.get(name)
        err = state.registry.error(name)
        out.append({
            "name": name,
            "state": "ready" if tenant is not None else "invalid",
            "import_users": tenant.import_users if tenant is not None else None,
            "tokens": len(tenant.token_hashes) if tenant is not None else None,
            "workers": _worker_counts(stats, name),
            "in_flight": state.tenant_in_flight.get(name, 0),
            "subscribers": state.hub.subscribers(name),
            "config_error": None if err is None else {"key": err.key, "message": str(err)},
            "last_error": state.last_errors.get(name),
            "processes": _processes(stats, name),
            "editing": bool(tenant is not None and tenant.editing),
        })
    return JSONResponse({"tenants": out, "draining": state.draining})


#: The API description, served as is: the same package file the tests validate
#: every response against (``engine/server/openapi.json``).
OPENAPI_TEXT = (importlib.resources.files("scriptvisor.engine.server") / "openapi.json").read_bytes()
#: A self-contained page rendering it (no CDN: the CSP below forbids any outside asset).
DOCS_HTML = (importlib.resources.files("scriptvisor.engine.server") / "docs.html").read_bytes()
#: The console's policy (console.CSP; that module imports this one): the page's script and
#: style are static files (/console/docs.js, docs.css), nothing inline.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


async def openapi(request: Request) -> Response:
    return Response(OPENAPI_TEXT, media_type="application/json")


async def docs(request: Request) -> Response:
    return Response(DOCS_HTML, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"})


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"code": "not_found", "message": f"no route {request.url.path}"}}, 404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"code": "method_not_allowed", "message": f"{request.method} not allowed here"}}, 405)


def create_app(state: ServerState) -> Starlette:
    from .console import ROUTES as CONSOLE_ROUTES  # console.py builds on this module's checks

    app = Starlette(
        routes=[
            Route("/v1/tenants/{tenant}/scripts/{script}", invoke_script, methods=["POST"]),
            Route("/v1/tenants/{tenant}/connection/{operation}", invoke_connection, methods=["POST"]),
            Route("/v1/tenants/{tenant}/logs", tenant_logs, methods=["GET"]),
            Route("/v1/admin/tenants", admin_tenants, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *CONSOLE_ROUTES,
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.sv = state
    return app

