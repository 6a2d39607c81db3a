"""``serve()``: the engine and uvicorn on one asyncio loop, with graceful shutdown.

Lifecycle::

    bind the listening socket (port 0: the kernel picks one; the chosen port is printed)
    start AsyncEngine in this loop  ->  load tenants  ->  ready
    serve HTTP until SIGTERM/SIGINT
    drain: connections already queued are taken, then the listener closes
           (new connections are refused: a load balancer retries them
           elsewhere); a request arriving on an open connection within
           DRAIN_GRACE gets 503 draining + Connection: close; log streams end
           after their tenant's running calls; in-flight calls run to
           completion (each bounded by its deadline, which the engine
           enforces by killing the worker)
    stop workers and the zygote (AsyncEngine.__aexit__), exit 0

systemd: with ``$NOTIFY_SOCKET`` set (``Type=notify``) the server sends
``READY=1`` once it listens with its tenants loaded and ``STOPPING=1`` when
the drain starts (``sdnotify``).  SIGHUP reopens the ``--log-file`` (for
logrotate) and is otherwise harmless.

Signals: uvicorn installs its handlers with ``signal.signal``; ours only
schedules ``_begin_drain`` on the loop (``call_soon_threadsafe`` is safe from a
signal handler) and asks uvicorn to exit.  Unlike stock uvicorn we do not
re-raise the signal after shutdown: a drained server exits 0.  A second SIGINT
forces uvicorn to stop waiting for connections (the engine still stops its
workers on the way out).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from scriptvisor.engine.config import EngineConfig
from scriptvisor.engine.tenants import Tenant, TenantConfigError

from . import auth
from .app import DEFAULT_MAX_BODY, ServerState, create_app
from .edge import EdgeLimits, protocol_class
from .logstream import HEARTBEAT_SECONDS, MAX_SUBSCRIBERS_PER_TENANT, SUBSCRIBER_BUFFER_BYTES, LogHub
from .metrics import ServerMetrics
from .node import NodeHeader, node_id
from .oplog import OperatorLog, install_logging
from .statedir import ServerStateDir, server_state_dir
from .sdnotify import Notifier, take_socket
from .tenants import TenantRegistry

__all__ = ["EXAMPLE_SOURCE", "EXAMPLE_TENANTS", "EXAMPLE_TOKEN", "serve"]

#: The bundled example as shipped: package data of ``scriptvisor.examples``.
EXAMPLE_SOURCE = Path(str(importlib.resources.files("scriptvisor.examples"))) / "tenants"


def _example_home() -> Path:
    """Where the example tenant is served from (it writes its data and state).

    In a source checkout (a ``pyproject.toml`` beside ``examples/``) that is the
    checkout itself, as the README shows; an installed wheel never writes into
    site-packages, so there it is a copy under ``$SCRIPTVISOR_HOME`` (default
    ``$XDG_DATA_HOME/scriptvisor`` or ``~/.local/share/scriptvisor``).
    """
    if (EXAMPLE_SOURCE.parent.parent / "pyproject.toml").is_file():
        return EXAMPLE_SOURCE
    home = os.environ.get("SCRIPTVISOR_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"),
        "scriptvisor")
    return Path(home) / "example-tenants"


#: The bundled example (served when no tenants folder is given).
EXAMPLE_TENANTS = _example_home()
#: Token whose hash ships in the example tenant.toml, so the README's curl
#: session works as printed.  Never reuse it: run `scriptvisor token create`.
EXAMPLE_TOKEN = "example-token-change-me"


#: Seconds an idle keep-alive connection stays open once a drain begins, so a
#: request already sent on it is answered instead of lost (see stop_accepting).
DRAIN_GRACE = 1.0


class _Server(uvicorn.Server):
    """uvicorn, with a drain hook and without re-raising the exit signal."""

    def __init__(self, config: uvicorn.Config, on_exit_signal: Any,
                 listeners: list[socket.socket] | None = None) -> None:
        super().__init__(config)
        self._on_exit_signal = on_exit_signal
        #: the listening sockets, for taking their backlog when draining
        self.listeners = list(listeners or ())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # signal context: only schedule work and set flags
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        self._on_exit_signal()

    def stop_accepting(self) -> None:
        """Close the listener now (on the loop) and let open connections wind down.

        A load balancer then gets a clean connection refusal for the next call
        (nginx: ``error``, retried on the next node even for a POST, since
        nothing was sent), instead of a ``503 draining`` it would not retry.
        Connections with a call running get ``Connection: close`` after it.
        An idle keep-alive connection is not cut at once: a request already on
        its way on it would be lost (the client cannot know whether it ran);
        for ``DRAIN_GRACE`` seconds such a request is answered (``503
        draining``, ``Connection: close``), then uvicorn's shutdown closes
        what is still idle.
        """
        self._take_backlog()
        for server in getattr(self, "servers", ()):
            server.close()
        for connection in list(self.server_state.connections):
            drain = getattr(connection, "drain", None)
            if drain is not None:
                drain()
            else:
                connection.shutdown()

    def _take_backlog(self) -> None:
        """Accept the connections the kernel already queued for us, before the
        listener closes (closing it would reset them after their client sent a
        request): each is served like a drained one (answered, then closed)."""
        loop = asyncio.get_running_loop()
        config = self.config

        def factory() -> asyncio.Protocol:
            proto = config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                               app_state=self.lifespan.state)
            drain = getattr(proto, "drain", None)
            if drain is not None:
                proto._draining = True  # type: ignore[attr-defined]
            return proto

        for listener in self.listeners:
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                loop.create_task(loop.connect_accepted_socket(factory, conn))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # idle and just-taken connections get DRAIN_GRACE to deliver a request
        # already sent (answered 503 draining); then uvicorn closes what is idle
        if not self.force_exit and self.server_state.connections:
            await asyncio.sleep(DRAIN_GRACE)  # the grace period itself, not a wait for an event
        await super().shutdown(sockets)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is IPPROTO_TCP, and without it Nagle + delayed ACK add ~40 ms to
    # every keep-alive response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def _connection_runner(engine: Any) -> tuple[Any, frozenset[str]]:
    """Adapter to ``engine.connections`` when that module is available."""
    try:
        from scriptvisor.engine import connections
    except ImportError:
        return None, frozenset()
    return _make_connection_runner(connections, engine)


def _make_connection_runner(connections: Any, engine: Any) -> tuple[Any, frozenset[str]]:
    operations = frozenset(getattr(connections, "OPERATIONS", ()))
    run_async = getattr(connections, "run_operation_async", None)
    if run_async is None or not operations:
        return None, frozenset()

    async def runner(tenant: Tenant, operation: str, args: list[Any]) -> dict[str, Any]:
        # the registry's Tenant, already validated: no tenant.toml re-read per request
        return await run_async(engine, tenant, operation, args)

    return runner, operations


async def _serve(
    tenants_dir: Path,
    host: str,
    port: int,
    *,
    engine_config: EngineConfig | None,
    log_file: str | None,
    max_body: int,
    announce: str | None,
    sse: dict[str, Any] | None = None,
    log_level: str = "info",
    end_user_responses: bool = False,
    edge: EdgeLimits,
    state_dir: str | None,
) -> int:
    from scriptvisor.engine import AsyncEngine  # the engine package imports lazily: CLI start-up stays fast

    loop = asyncio.get_running_loop()
    notifier = Notifier(take_socket())  # before the zygote starts: it must not inherit the address
    oplog = OperatorLog(log_file, level=log_level)
    # every line this process logs (ours, the engine's, uvicorn's) is one JSON line
    uninstall_logging = install_logging(oplog)

    def reopen_log() -> None:
        notifier.send(RELOADING=1, STATUS="reopening the log file")
        oplog.reopen()
        notifier.send(READY=1, STATUS=f"listening on {host}:{bound_port}")

    loop.add_signal_handler(signal.SIGHUP, reopen_log)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    node = node_id(bound_port)  # X-Scriptvisor-Node on every response (deploy/, docs/scaling.md)
    hub = LogHub(**(sse or {}))
    cfg = engine_config or EngineConfig()
    # scratch of this server only, the uid map shared by the host (statedir.py)
    owned = ServerStateDir(state_dir or server_state_dir(cfg.state_dir, host, bound_port))
    try:
        owned.acquire()
    except BaseException:
        sock.close()
        uninstall_logging()
        oplog.close()
        raise
    cfg = owned.engine_config(cfg)
    try:
        async with AsyncEngine(cfg) as engine:
            def on_load(tenant: Tenant) -> None:
                engine.configure_tenant(tenant.name, **tenant.engine_settings())
                oplog.write("tenant_loaded", tenant=tenant.name, import_users=tenant.import_users,
                            tokens=len(tenant.token_hashes))
                if not tenant.token_hashes:
                    oplog.write("tenant_without_token", level="warning", tenant=tenant.name,
                                hint=f"no caller can use it yet: scriptvisor token create {tenant.name} "
                                     f"--tenants {tenants_dir}")

            def on_error(name: str, err: TenantConfigError) -> None:
                oplog.write("tenant_invalid", tenant=name, error=str(err))

            def on_remove(name: str) -> None:
                engine.remove_tenant(name)  # idle workers retired now, busy ones after their call
                oplog.write("tenant_removed", tenant=name)

            registry = TenantRegistry(tenants_dir, defaults=cfg.limits, on_load=on_load, on_error=on_error,
                                      on_remove=on_remove)
            registry.scan()
            runner, operations = _connection_runner(engine)
            metrics = ServerMetrics(lambda: engine.stats(memory=True))
            engine.add_listener(metrics.on_engine_event)

            def on_drop(tenant: str, reason: str) -> None:
                metrics.sse_dropped.labels(reason).inc()
                oplog.write("log_stream_dropped", tenant=tenant, reason=reason)

            hub.on_drop = on_drop
            state = ServerState(
                engine=engine, registry=registry, metrics=metrics, hub=hub, oplog=oplog,
                admin_hash=auth.admin_hash_from_env(), max_body=max_body, body_timeout=edge.body_timeout,
                connection_runner=runner, connection_operations=operations,
                end_user_responses=end_user_responses,
            )
            inner = NodeHeader(create_app(state), node)

            async def app(scope: Any, receive: Any, send: Any) -> None:
                async def send_closing(message: Any) -> None:
                    # while draining every answer says Connection: close, so a
                    # client never writes its next call to a connection that
                    # the node closes right after this answer
                    if state.draining and message["type"] == "http.response.start":
                        message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
                    await send(message)

                await inner(scope, receive, send_closing if scope["type"] == "http" else send)

            config = uvicorn.Config(
                app, lifespan="off", log_level=log_level, access_log=False,
                log_config=None,  # uvicorn's records go to the root logger: install_logging above
                timeout_graceful_shutdown=None, server_header=False,
                # header deadline and connection cap (edge.py); idle keep-alive bound
                http=protocol_class(edge), timeout_keep_alive=edge.keep_alive,  # type: ignore[arg-type]
            )

            def begin_drain() -> None:
                if not state.draining:
                    state.draining = True
                    server.stop_accepting()
                    oplog.write("draining", in_flight=state.in_flight)
                    notifier.send(STOPPING=1, STATUS=f"draining {state.in_flight} call(s)")
                hub.close()

            server = _Server(config, lambda: loop.call_soon_threadsafe(begin_drain), [sock])
            state.ready = True
            oplog.write("listening", host=host, port=bound_port, node=node, tenants=sorted(registry.tenants),
                        invalid=sorted(registry.errors), state_dir=cfg.state_dir)
            print(f"scriptvisor listening on http://{host}:{bound_port}", flush=True)
            if announce:
                print(announce.format(host=host, port=bound_port), flush=True)
            notifier.send(READY=1, STATUS=f"listening on {host}:{bound_port}", MAINPID=os.getpid())
            await server.serve(sockets=[sock])
            state.ready = False
        oplog.write("stopped")
    finally:
        owned.release()
        loop.remove_signal_handler(signal.SIGHUP)
        sock.close()
        uninstall_logging()
        oplog.close()
    return 0


def serve(
    tenants_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    engine_config: EngineConfig | None = None,
    log_file: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    sse_heartbeat: float = HEARTBEAT_SECONDS,
    max_subscribers: int = MAX_SUBSCRIBERS_PER_TENANT,
    subscriber_buffer: int = SUBSCRIBER_BUFFER_BYTES,
    log_level: str = "info",
    end_user_responses: bool = False,
    edge: EdgeLimits | None = None,
    state_dir: str | None = None,
) -> int:
    """Run the operator server until SIGTERM/SIGINT; returns the exit status (0).

    With ``tenants_dir=None`` the bundled example tenant is served and a curl
    command that calls it is printed.  ``sse_heartbeat`` (seconds),
    ``max_subscribers`` (log streams per tenant) and ``subscriber_buffer``
    (bytes waiting for one stream before it is dropped) bound the log streams.
    ``log_level``: debug, info (default), warning or error.
    ``end_user_responses``: connection results leave out the operator-only
    error fields (``user_known``, ``email_or_id``, a contract violation's
    ids and emails; ``engine.connections.end_user_view``), for a server whose
    responses reach end users.
    ``edge`` bounds slow and idle clients (``edge.EdgeLimits``); ``state_dir``
    is this server's own engine state directory (default: derived from host
    and port, see ``statedir``).  Raises ``statedir.StateDirBusy`` when
    another server holds it.
    """
    announce = None
    if tenants_dir is None:
        tenants_dir = ensure_example()
        announce = (
            "example tenant 'example' (SQLite legacy database, user alice@example.com / wonderland):\n"
            "  curl -s -H 'Authorization: Bearer " + EXAMPLE_TOKEN + "' -H 'Content-Type: application/json' \\\n"
            "       -d '{{\"args\": [\"alice@example.com\", \"wonderland\"]}}' \\\n"
            "       http://{host}:{port}/v1/tenants/example/scripts/login"
        )
    path = Path(tenants_dir)
    if not path.is_dir():
        raise TenantConfigError(path, None, "tenants folder does not exist")
    if (path / "tenant.toml").is_file():
        # its data/, scripts/ and state/ would be served as three broken tenants
        raise TenantConfigError(path, None, "this is one tenant's folder; --tenants takes the folder that "
                                f"holds tenant folders: --tenants {path.resolve().parent}")
    return asyncio.run(
        _serve(path, host, port, engine_config=engine_config, log_file=log_file,
               max_body=max_body, announce=announce,
               sse={"heartbeat": sse_heartbeat, "max_subscribers": max_subscribers,
                    "max_buffer_bytes": subscriber_buffer},
               log_level=log_level, end_user_responses=end_user_responses,
               edge=edge or EdgeLimits(), state_dir=state_dir)
    )


def ensure_example_scripts() -> Path:
    """Copy the sqlite templates into the example tenant when they are missing.

    The example's scripts *are* the sqlite templates; keeping a second copy
    in the repository would let the two drift apart.
    """
    from scriptvisor.engine.tenantdir import TEMPLATES_DIR

    example = EXAMPLE_TENANTS / "example"
    if not (example / "tenant.toml").exists():
        example.mkdir(parents=True, exist_ok=True)
        for name in ("tenant.toml", "README.md"):
            shutil.copyfile(EXAMPLE_SOURCE / "example" / name, example / name)
    scripts = example / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for src in sorted((TEMPLATES_DIR / "sqlite").glob("*.py")) + [TEMPLATES_DIR / "sqlite" / "schema.sql"]:
        dest = scripts / src.name if src.suffix == ".py" else example / src.name
        if not dest.exists():
            dest.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    return EXAMPLE_TENANTS


def ensure_example() -> Path:
    """The bundled example tenants folder, its legacy database seeded on first use.

    The seeded database is not in the repository (it changes as the example
    is used); it is created here from the sqlite template's schema.
    """
    ensure_example_scripts()
    data = EXAMPLE_TENANTS / "example" / "data"
    db = data / "legacy.db"
    if not db.exists():
        from scriptvisor.engine.tenantdir import seed_sqlite

        data.mkdir(parents=True, exist_ok=True)
        tmp = data / "legacy.db.seeding"
        tmp.unlink(missing_ok=True)
        seed_sqlite(tmp, schema=(EXAMPLE_TENANTS / "example" / "schema.sql").read_text(encoding="utf-8"))
        os.replace(tmp, db)  # a half-seeded file never looks like a database
    return EXAMPLE_TENANTS


if __name__ == "__main__":  # python -m engine.server.run [TENANTS] [PORT]
    argv = sys.argv[1:]
    sys.exit(serve(argv[0] if argv and argv[0] else None, port=int(argv[1]) if len(argv) > 1 else 8080))
