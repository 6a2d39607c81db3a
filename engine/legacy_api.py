"""A reference legacy user API, for the ``webservice`` templates' tests and demos.

``scriptvisor legacy-api --tenant-dir acme`` (or ``--port 8931 --api-key K``)
serves it on loopback.  It plays the tenant's old system: users with
bcrypt-hashed passwords behind a small REST API, seeded with
``alice@example.com`` / ``wonderland`` (id 1, verified) and
``bob@example.com`` / ``builder`` (id 2, not verified).  State is in memory:
every start begins from the seed.  The API (also in
``templates/webservice/README.md``), every route under ``/api/`` and
authenticated with ``Authorization: Bearer <API key>`` (403 without it):

    POST   /api/login                  {"email", "password"} -> 200 user | 401 wrong_password | 404 user_not_found
    GET    /api/users?email=E          -> 200 user | 404 user_not_found
    POST   /api/users                  {"email", "password", "nickname"?, "username"?} -> 201 user | 409 user_exists
    POST   /api/users/verify           {"email"} -> 200 {"changed": bool}
    POST   /api/users/password         {"email", "password"} -> 200 {"changed": bool}
    POST   /api/users/email            {"email", "new_email", "verified"} -> 200 {"changed": bool} | 409 user_exists
    DELETE /api/users/{id}             -> 200 {"deleted": bool}

A user is ``{"id": int, "email", "nickname", "username", "email_verified"}``
(never the password hash).  Errors are ``{"error": code, "message": text}``.

For tests only (``--test-routes``): ``POST /api/_reset`` restores the seed,
``GET /api/_calls`` counts the calls per route and email, and ``GET
/api/_slow?seconds=S`` / ``/api/_redirect?to=URL`` / ``/api/_big?bytes=N``
answer slowly, redirect, or send a large (``chunked=1``: unsized, ``gzip=1``: compressed) body.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import secrets
import socket
import sys
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from scriptvisor.sandbox.facades.crypto import DEFAULT_ROUNDS, check_password, hash_password

__all__ = ["DEFAULT_PORT", "SEED_USERS", "LegacyStore", "make_app", "serve"]

DEFAULT_PORT = 8931
#: (email, password, nickname, verified): the same example users as the database templates.
SEED_USERS = (
    ("alice@example.com", "wonderland", "alice", True),
    ("bob@example.com", "builder", "bob", False),
)
MAX_BODY = 64 * 1024


class LegacyStore:
    """The users, in memory (the API is single-threaded on one event loop)."""

    def __init__(self, rounds: int = DEFAULT_ROUNDS) -> None:
        self.rounds = rounds
        self._seed_hashes = {pw: hash_password(pw, rounds) for _, pw, _, _ in SEED_USERS}
        self.calls: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        self.users: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        self.calls.clear()
        for email, password, nickname, verified in SEED_USERS:
            self.add(email, self._seed_hashes[password], nickname, None, verified)

    def add(self, email: str, hashed: str, nickname: str, username: str | None, verified: bool) -> dict:
        user = {"id": self.next_id, "email": email, "nickname": nickname, "username": username,
                "email_verified": verified, "password": hashed}
        self.users[self.next_id] = user
        self.next_id += 1
        return user

    def by_email(self, email: str) -> dict[str, Any] | None:
        email = email.lower()
        return next((u for u in self.users.values() if u["email"].lower() == email), None)


def _public(user: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in user.items() if k != "password"}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _text(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def make_app(api_key: str, *, rounds: int = DEFAULT_ROUNDS, test_routes: bool = False,
             store: LegacyStore | None = None) -> Starlette:
    """The ASGI app. ``api_key``: the Bearer token every request must carry."""
    store = store or LegacyStore(rounds)
    expected = f"Bearer {api_key}".encode()

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, expected)

    def route(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _error(403, "forbidden", "missing or wrong API key (Authorization: Bearer <key>)")
            body: dict[str, Any] = {}
            if request.method in ("POST", "PUT", "PATCH"):
                raw = await request.body()
                if len(raw) > MAX_BODY:
                    return _error(413, "too_large", f"request body over {MAX_BODY} bytes")
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return _error(400, "bad_json", "the request body is not JSON")
                if not isinstance(body, dict):
                    return _error(400, "bad_json", "the request body must be a JSON object")
            try:
                return await fn(request, body)
            except ValueError as exc:
                return _error(400, "bad_request", str(exc))
        return endpoint

    @route
    async def login(request: Request, body: dict) -> Response:
        email, password = _text(body, "email"), _text(body, "password")
        store.calls[f"login {email.lower()}"] += 1
        user = store.by_email(email)
        if user is None:
            return _error(404, "user_not_found", "no user with this email")
        if not check_password(password, user["password"]):
            return _error(401, "wrong_password", "wrong password")
        return JSONResponse(_public(user))

    @route
    async def users(request: Request, body: dict) -> Response:
        if request.method == "GET":
            email = request.query_params.get("email", "")
            store.calls[f"get_user {email.lower()}"] += 1
            user = store.by_email(email) if email else None
            if user is None:
                return _error(404, "user_not_found", "no user with this email")
            return JSONResponse(_public(user))
        email, password = _text(body, "email"), _text(body, "password")
        store.calls[f"create {email.lower()}"] += 1
        username = _text(body, "username", required=False)
        if store.by_email(email) or (username and any(u["username"] == username for u in store.users.values())):
            return _error(409, "user_exists", "a user with this email or username exists")
        nickname = _text(body, "nickname", required=False) or email.split("@")[0]
        user = store.add(email, hash_password(password, store.rounds), nickname, username, False)
        return JSONResponse(_public(user), status_code=201)

    @route
    async def verify(request: Request, body: dict) -> Response:
        user = store.by_email(_text(body, "email"))
        if user is not None:
            user["email_verified"] = True
        return JSONResponse({"changed": user is not None})

    @route
    async def password(request: Request, body: dict) -> Response:
        user = store.by_email(_text(body, "email"))
        new = _text(body, "password")
        if user is not None:
            user["password"] = hash_password(new, store.rounds)
        return JSONResponse({"changed": user is not None})

    @route
    async def change_email(request: Request, body: dict) -> Response:
        user = store.by_email(_text(body, "email"))
        new_email = _text(body, "new_email")
        if user is None:
            return JSONResponse({"changed": False})
        other = store.by_email(new_email)
        if other is not None and other is not user:
            return _error(409, "user_exists", "a user with the new email exists")
        user["email"] = new_email
        user["email_verified"] = bool(body.get("verified"))
        return JSONResponse({"changed": True})

    @route
    async def delete(request: Request, body: dict) -> Response:
        try:
            user_id = int(request.path_params["user_id"])
        except ValueError:
            return _error(400, "bad_request", "user id must be an integer")
        return JSONResponse({"deleted": store.users.pop(user_id, None) is not None})

    routes = [
        Route("/api/login", login, methods=["POST"]),
        Route("/api/users", users, methods=["GET", "POST"]),
        Route("/api/users/verify", verify, methods=["POST"]),
        Route("/api/users/password", password, methods=["POST"]),
        Route("/api/users/email", change_email, methods=["POST"]),
        Route("/api/users/{user_id}", delete, methods=["DELETE"]),
    ]

    if test_routes:
        @route
        async def reset(request: Request, body: dict) -> Response:
            store.reset()
            return JSONResponse({"reset": True})

        @route
        async def calls(request: Request, body: dict) -> Response:
            return JSONResponse(dict(store.calls))

        @route
        async def slow(request: Request, body: dict) -> Response:
            await asyncio.sleep(min(float(request.query_params.get("seconds", "5")), 60.0))
            return JSONResponse({"slept": True})

        @route
        async def drip(request: Request, body: dict) -> Response:
            async def chunks():  # one byte every 0.2 s: every read succeeds, the whole never ends
                for _ in range(300):
                    yield b" "
                    await asyncio.sleep(0.2)
            return StreamingResponse(chunks(), media_type="application/json")

        @route
        async def redirect(request: Request, body: dict) -> Response:
            return RedirectResponse(request.query_params["to"], status_code=302)

        @route
        async def big(request: Request, body: dict) -> Response:
            size = min(int(request.query_params.get("bytes", "0")), 64 * 1024 * 1024)
            chunked = request.query_params.get("chunked") == "1"

            async def chunks():
                left = size
                while left > 0:
                    n = min(left, 64 * 1024)
                    yield b"x" * n
                    left -= n
            if chunked:  # no Content-Length: the cap must hold while reading
                return StreamingResponse(chunks(), media_type="text/plain")
            if request.query_params.get("gzip") == "1":  # small on the wire, huge once decoded
                return Response(gzip.compress(b"x" * size), media_type="text/plain",
                                headers={"Content-Encoding": "gzip"})
            return Response(b"x" * size, media_type="text/plain")

        routes += [
            Route("/api/_reset", reset, methods=["POST"]),
            Route("/api/_calls", calls, methods=["GET"]),
            Route("/api/_slow", slow, methods=["GET"]),
            Route("/api/_drip", drip, methods=["GET"]),
            Route("/api/_redirect", redirect, methods=["GET", "POST"]),
            Route("/api/_big", big, methods=["GET"]),
        ]
    app = Starlette(routes=routes)
    app.state.store = store
    return app


def serve(api_key: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, rounds: int = DEFAULT_ROUNDS,
          test_routes: bool = False, certfile: str | None = None, keyfile: str | None = None) -> None:
    """Bind, print one line ``legacy API on http(s)://HOST:PORT/api/`` (the bound port), serve until stopped.

    ``certfile``/``keyfile``: serve HTTPS with this certificate (PEM).
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    shown = f"[{host}]" if ":" in host else host
    app = make_app(api_key, rounds=rounds, test_routes=test_routes)
    scheme = "https" if certfile else "http"
    print(f"legacy API on {scheme}://{shown}:{sock.getsockname()[1]}/api/", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                            ssl_certfile=certfile, ssl_keyfile=keyfile)
    uvicorn.Server(config).run(sockets=[sock])


def new_api_key() -> str:
    return secrets.token_urlsafe(24)


if __name__ == "__main__":  # python -m scriptvisor.engine.legacy_api PORT KEY (tests)
    serve(sys.argv[2], port=int(sys.argv[1]), rounds=4, test_routes=True)
