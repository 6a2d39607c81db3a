"""The browser console (``/console``) and the API routes it needs beyond running scripts.

Pages and assets (``static/``, package data read through importlib.resources,
nothing from a CDN) are public: they hold no data.  Every datum comes from the
JSON routes below, each authorised like the rest of the API (bearer token in
the ``Authorization`` header; the console keeps it in ``sessionStorage`` and
never puts it in a cookie or a URL).

    GET  /console                                   the single page (tenant and operator views)
    GET  /console/{asset}                           app.js, app.css, icon.svg (a fixed list)
    GET  /v1/whoami                                 which tenant a token acts for, or "admin"
    GET  /v1/tenants/{t}/scripts                    scripts with source, operations, editing on/off
    GET  /v1/tenants/{t}/scripts/{s}                one script, with its kept versions
    PUT  /v1/tenants/{t}/scripts/{s}                save (checked first, atomic, versioned)
    POST /v1/tenants/{t}/scripts/{s}/rollback       restore a kept version (itself undoable)
    POST /v1/tenants/{t}/check                      compile a source under the sandbox policy
    GET  /v1/tenants/{t}/invocations                recent invocations and the last error
    GET  /v1/admin/tenants                          (app.py) every tenant: state, workers, last error
    POST /v1/admin/tenants/{t}/recycle              replace that tenant's workers
    GET  /v1/admin/activity                         invocations by outcome, latency percentiles

Safe by construction: every page response carries a Content-Security-Policy
with no inline script or style and ``connect-src 'self'``; the JavaScript
writes tenant text with ``textContent`` only (never ``innerHTML``), so a log
line like ``<img src=x onerror=...>`` is shown, not run.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scriptvisor.engine.checker import check_source_async
from scriptvisor.engine.tenants import SCRIPT_NAME, TENANT_NAME

from . import auth
from .app import RequestProblem, ServerState, _authorize, _problem, _read_json_body, _reject
from .scriptstore import ScriptStore, VersionNotFound, digest

__all__ = ["CSP", "ROUTES"]

#: No inline script or style, nothing from elsewhere, no framing, no plugins.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
#: The console's files: name -> media type. Nothing else under /console is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "docs.js": "text/javascript; charset=utf-8",  # the /docs page's renderer and style
    "docs.css": "text/css; charset=utf-8",
}
#: Checks running at once per tenant (each is a short-lived compiler process);
#: one more gets 429 rather than a queue a typing author would pile up.
CHECKS_PER_TENANT = 2
_STATIC = importlib.resources.files("scriptvisor.engine.server") / "static"
_checks_running: dict[str, int] = {}
_check_slots: asyncio.Semaphore | None = None


def _asset(name: str) -> Response:
    media = ASSETS.get(name)
    if media is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no console asset {name!r}"}}, 404)
    return Response((_STATIC / name).read_bytes(), media_type=media, headers=SECURITY_HEADERS)


async def console_page(request: Request) -> Response:
    return _asset("index.html")


async def console_asset(request: Request) -> Response:
    return _asset(request.path_params["asset"])


# -- who is calling -----------------------------------------------------------

def _admin_token(state: ServerState, token: str) -> bool:
    return state.admin_hash is not None and auth.decide(token, "", {}, state.admin_hash) is auth.Decision.ALLOW


def _authorize_admin(state: ServerState, request: Request) -> None:
    if state.draining:
        raise _problem(503, "draining", "the server is shutting down", **{"Retry-After": "1"})
    token = auth.bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _problem(401, "unauthorized", "missing bearer token", **{"WWW-Authenticate": "Bearer"})
    if _admin_token(state, token):
        return
    hashes = {t.name: t.token_hashes for t in state.registry.tenants.values()}
    if auth.decide(token, "\0", hashes, None) is auth.Decision.FORBIDDEN:
        raise _problem(403, "forbidden", "this route needs the operator's admin token")
    raise _problem(401, "unauthorized", "invalid bearer token", **{"WWW-Authenticate": "Bearer"})


async def whoami(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    token = auth.bearer_token(request.headers.get("authorization"))
    if token is None:
        return _problem(401, "unauthorized", "missing bearer token", **{"WWW-Authenticate": "Bearer"}).response()
    if _admin_token(state, token):
        return JSONResponse({"role": "admin", "tenant": None})
    # re-read every tenant.toml that changed (one stat each), as the tenant
    # routes do: a token created or revoked since the last request counts now
    state.registry.scan_new()
    current = {name: state.registry.get(name) for name in [*state.registry.tenants, *state.registry.errors]}
    mine = [name for name, t in sorted(current.items())
            if t is not None and auth.decide(token, name, {name: t.token_hashes}, None) is auth.Decision.ALLOW]
    if not mine:  # a broken tenant's own token signs in to see why (its routes answer 500 with the key)
        mine = [name for name, hashes in sorted(state.registry.broken_token_hashes().items())
                if auth.decide(token, name, {name: hashes}, None) is auth.Decision.ALLOW]
    if len(mine) == 1:
        return JSONResponse({"role": "tenant", "tenant": mine[0]})
    return _problem(401, "unauthorized", "invalid bearer token", **{"WWW-Authenticate": "Bearer"}).response()


# -- tenant routes ------------------------------------------------------------

def _operations(state: ServerState) -> dict[str, list[str]]:
    try:
        from scriptvisor.engine.connections import ARGUMENTS
    except ImportError:
        return {}
    return {op: list(ARGUMENTS.get(op, ())) for op in sorted(state.connection_operations)}


async def list_scripts(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    try:
        tenant = _authorize(state, request, name)
    except RequestProblem as problem:
        return _reject(state, name, problem)
    store = ScriptStore(tenant)
    scripts = []
    for script in store.names():
        source = store.read(script)
        if source is not None:
            scripts.append({"name": script, "source": source, "sha256": digest(source)})
    return JSONResponse({
        "tenant": tenant.name, "editing": tenant.editing, "timeout": tenant.limits.timeout,
        "import_users": tenant.import_users, "operations": _operations(state), "scripts": scripts,
    })


def _script_name(name: str, script: str) -> None:
    if not SCRIPT_NAME.match(script):
        raise _problem(404, "unknown_script", f"tenant {name!r} has no script {script!r} "
                       "(script names are Python identifiers)")


async def get_script(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name, script = request.path_params["tenant"], request.path_params["script"]
    try:
        tenant = _authorize(state, request, name)
        _script_name(name, script)
        store = ScriptStore(tenant)
        source = store.read(script)
        if source is None:
            raise _problem(404, "unknown_script", f"tenant {name!r} has no script {script!r}")
    except RequestProblem as problem:
        return _reject(state, name, problem)
    return JSONResponse({"name": script, "source": source, "sha256": digest(source),
                         "versions": store.versions(script)})


async def _check(tenant: str, script: str | None, source: str) -> list[dict[str, Any]]:
    """Compile ``source`` in a child under the sandbox policy; raises 429 past the per-tenant cap."""
    global _check_slots
    if _checks_running.get(tenant, 0) >= CHECKS_PER_TENANT:
        raise _problem(429, "overloaded", f"at most {CHECKS_PER_TENANT} checks at once per tenant",
                       **{"Retry-After": "1"})
    if _check_slots is None:
        _check_slots = asyncio.Semaphore(os.cpu_count() or 1)
    _checks_running[tenant] = _checks_running.get(tenant, 0) + 1
    try:
        async with _check_slots:
            return await check_source_async(f"{script or 'script'}.py", source, function=script)
    finally:
        _checks_running[tenant] -= 1
        if not _checks_running[tenant]:
            del _checks_running[tenant]


def _source_of(data: dict[str, Any], allowed: set[str]) -> str:
    unknown = set(data) - allowed
    if unknown:
        raise _problem(422, "invalid_body", f"unknown body keys {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")
    source = data.get("source")
    if not isinstance(source, str):
        raise _problem(422, "invalid_body", '"source" must be the script text (a JSON string)')
    return source


async def check_source(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    try:
        tenant = _authorize(state, request, name)
        data = await _read_json_body(state, request)
        source = _source_of(data, {"source", "script"})
        script = data.get("script")
        if script is not None and (not isinstance(script, str) or not SCRIPT_NAME.match(script)):
            raise _problem(422, "invalid_body", '"script" must be a script name (a Python identifier)')
        problems = await _check(tenant.name, script, source)
    except RequestProblem as problem:
        return _reject(state, name, problem)
    return JSONResponse({"ok": not problems, "problems": problems})


async def _save(state: ServerState, request: Request, rollback: bool) -> Response:
    name, script = request.path_params["tenant"], request.path_params["script"]
    try:
        tenant = _authorize(state, request, name)
        if not tenant.editing:
            raise _problem(403, "editing_disabled",
                           f"saving scripts is not enabled for tenant {name!r} "
                           "(the operator sets [editing] enabled = true in its tenant.toml)")
        _script_name(name, script)
        data = await _read_json_body(state, request)
        store = ScriptStore(tenant)
        if rollback:
            unknown = set(data) - {"version"}
            version = data.get("version")
            if unknown or type(version) is not int:
                raise _problem(422, "invalid_body", 'send {"version": N} with N from the script\'s versions')
            try:
                source = store.read_version(script, version)
            except VersionNotFound as exc:
                raise _problem(404, "unknown_version", str(exc)) from None
            base = None
        else:
            source = _source_of(data, {"source", "base_sha256"})
            base = data.get("base_sha256")
            if base is not None and not isinstance(base, str):
                raise _problem(422, "invalid_body", '"base_sha256" must be the sha256 the edit started from')
        problems = await _check(tenant.name, script, source)
        if problems:
            raise RequestProblem(422, "check_failed", f"the script does not pass check: {problems[0]['message']}")
        current = store.read(script)
        if base is not None and (current is None or digest(current) != base):
            raise _problem(409, "conflict", "the script changed since this edit started "
                           f"(now sha256 {digest(current) if current is not None else 'none: deleted'}); "
                           "reload it and apply the edit again")
        kept = store.save(script, source)
    except RequestProblem as problem:
        if problem.code == "check_failed":
            state.metrics.reject(name, 422)
            return JSONResponse({"error": {"code": problem.code, "message": problem.message,
                                           "problems": problems}}, 422)
        return _reject(state, name, problem)
    state.oplog.write("script_saved", tenant=tenant.name, script=script, sha256=digest(source),
                      kept_version=kept, rollback_to=data.get("version") if rollback else None)
    return JSONResponse({"name": script, "sha256": digest(source), "kept_version": kept,
                         "versions": store.versions(script)})


async def put_script(request: Request) -> Response:
    return await _save(request.app.state.sv, request, rollback=False)


async def rollback_script(request: Request) -> Response:
    return await _save(request.app.state.sv, request, rollback=True)


async def invocations(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    try:
        tenant = _authorize(state, request, name)
    except RequestProblem as problem:
        return _reject(state, name, problem)
    return JSONResponse({"invocations": state.activity.recent(tenant.name),
                         "last_error": state.last_errors.get(tenant.name)})


# -- operator routes ----------------------------------------------------------

async def admin_recycle(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    name = request.path_params["tenant"]
    try:
        _authorize_admin(state, request)
        if not TENANT_NAME.match(name) or state.registry.get(name) is None:
            raise _problem(404, "unknown_tenant", f"no tenant {name!r}")
    except RequestProblem as problem:
        return _reject(state, name, problem)
    counts = state.engine.recycle_tenant(name)
    state.oplog.write("tenant_recycle", tenant=name, **counts)
    return JSONResponse({"tenant": name, **counts})


async def admin_activity(request: Request) -> Response:
    state: ServerState = request.app.state.sv
    try:
        _authorize_admin(state, request)
    except RequestProblem as problem:
        return _reject(state, "-", problem)
    return JSONResponse(state.activity.series())


ROUTES = [
    Route("/console", console_page, methods=["GET"]),
    Route("/console/", console_page, methods=["GET"]),
    Route("/console/{asset}", console_asset, methods=["GET"]),
    Route("/v1/whoami", whoami, methods=["GET"]),
    Route("/v1/tenants/{tenant}/scripts", list_scripts, methods=["GET"]),
    Route("/v1/tenants/{tenant}/scripts/{script}", get_script, methods=["GET"]),
    Route("/v1/tenants/{tenant}/scripts/{script}", put_script, methods=["PUT"]),
    Route("/v1/tenants/{tenant}/scripts/{script}/rollback", rollback_script, methods=["POST"]),
    Route("/v1/tenants/{tenant}/check", check_source, methods=["POST"]),
    Route("/v1/tenants/{tenant}/invocations", invocations, methods=["GET"]),
    Route("/v1/admin/tenants/{tenant}/recycle", admin_recycle, methods=["POST"]),
    Route("/v1/admin/activity", admin_activity, methods=["GET"]),
]
