"""The public Python API: ``Engine`` (blocking) and ``AsyncEngine`` (asyncio).

Both wrap the same ``Supervisor``; they differ only in who runs the loop.

* ``Engine`` runs a private selector loop *while the caller waits* in
  ``invoke``/``wait``.  Between calls nothing runs, which is fine: every event
  stays queued in its socket and is handled on the next wait.  Not
  thread-safe: use one ``Engine`` per thread, or ``submit`` many jobs and
  ``wait`` for them together.
* ``AsyncEngine`` registers the supervisor's sockets and its single deadline
  timer with the running asyncio loop, so an HTTP server can have thousands of
  calls in flight with no thread per call.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import EngineConfig, TenantLimits
from .errors import ConfinementUnavailable, EngineUnavailable, NotFound
from .reactor import AsyncioReactor, SelectorReactor
from .result import Result
from .supervisor import Supervisor
from .worker import Job

__all__ = ["AsyncEngine", "Engine", "load_script"]

#: Largest script file accepted (bytes).
MAX_SCRIPT_BYTES = 1024 * 1024


def load_script(path: str | os.PathLike[str]) -> str:
    """Read a script file. Raises ``NotFound`` (structured) when it is missing or unreadable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"script file not found: {p}", path=str(p)) from None
    except IsADirectoryError:
        raise NotFound(f"script path is a directory: {p}", path=str(p)) from None
    except OSError as exc:
        raise NotFound(f"cannot read script {p}: {exc.strerror}", path=str(p)) from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise NotFound(f"script {p} is larger than {MAX_SCRIPT_BYTES} bytes", path=str(p))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotFound(f"script {p} is not UTF-8 text: {exc}", path=str(p)) from None


class _Base:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._sup: Supervisor | None = None

    @property
    def supervisor(self) -> Supervisor:
        if self._sup is None:
            raise EngineUnavailable("the engine is not started")
        return self._sup

    def configure_tenant(self, name: str, limits: TenantLimits | None = None,
                         data_dir: str | None = None, http: Any = None,
                         databases: Iterable[Any] | None = None,
                         egress: Iterable[tuple[str, int]] | None = None) -> None:
        """Set a tenant's limits, data directory and declared endpoints.

        ``http``: the ``[[http]]`` endpoints (``Tenant.http_policy()``);
        ``databases``: the ``[[databases]]`` (``engine.databases.DatabaseDecl``), the
        only ones its scripts may open; ``egress``: the (host, port) pairs its
        workers may reach (default: what those declarations name). Applies to
        workers spawned from now on.
        """
        self.supervisor.configure_tenant(name, limits, data_dir, http, databases, egress)

    def remove_tenant(self, name: str) -> None:
        """Stop the tenant's workers once idle and forget it (a later call starts it afresh)."""
        self.supervisor.remove_tenant(name)

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Observe engine events (worker_ready, worker_exit, job_done, ...)."""
        self.supervisor.listeners.append(fn)

    def stats(self, *, memory: bool = True) -> dict[str, Any]:
        return self.supervisor.stats(memory=memory)

    def recycle_tenant(self, tenant: str) -> dict[str, int]:
        """Replace every worker of ``tenant`` (idle ones now, busy ones after their call)."""
        return self.supervisor.recycle_tenant(tenant)

    @property
    def available(self) -> bool:
        """Started, accepting work and its zygote up (False while it restarts)."""
        return self._sup is not None and self._sup.available

    @property
    def layers(self) -> dict[str, Any]:
        """Confinement layers the zygote reported: name -> [active, detail]."""
        return self.supervisor.layers

    def _check_layers(self) -> None:
        missing = {k: v for k, v in self.supervisor.layers.items() if not v[0]}
        if self.config.confine and self.config.require_all_layers and missing:
            detail = "; ".join(f"{k}: {v[1]}" for k, v in sorted(missing.items()))
            raise ConfinementUnavailable(f"required confinement layers unavailable: {detail}",
                                         layers=missing)

    def _prepare(self, path: str | os.PathLike[str] | None, source: str | None,
                 function: str | None) -> tuple[str, str, str]:
        if source is None:
            if path is None:
                raise ValueError("give a script path or its source")
            source = load_script(path)
        display = os.fspath(path) if path is not None else "<script>.py"
        fn = function or os.path.splitext(os.path.basename(display))[0]
        return display, source, fn

    def _submit(self, tenant: str, path: Any, source: str | None, function: str | None,
                args: Iterable[Any] | None, configuration: dict[str, Any] | None,
                timeout: float | None, on_done: Callable[[Job], None] | None,
                debug_code: str | None = None, timeout_starts: str = "submit") -> Job:
        sup = self.supervisor
        try:
            display, source, fn = self._prepare(path, source, function)
        except NotFound as exc:
            return sup.refuse(tenant, exc, on_done)
        return sup.submit(tenant, path=display, source=source, function=fn, args=list(args or ()),
                          configuration=configuration, timeout=timeout, on_done=on_done,
                          debug_code=debug_code, timeout_starts=timeout_starts)

    def _debug_enabled(self) -> None:
        if not self.config.debug_exec:
            raise RuntimeError("debug_exec is disabled (EngineConfig.debug_exec)")


class Engine(_Base):
    """Blocking engine. ``with Engine() as eng: eng.invoke("acme", path="login.py", args=[...])``."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config)
        self._reactor: SelectorReactor | None = None

    def start(self, timeout: float = 30.0) -> "Engine":
        if self._sup is not None:
            raise RuntimeError("engine already started")
        self._reactor = SelectorReactor()
        self._sup = Supervisor(self.config, self._reactor)
        self._sup.start()
        self.run_until(lambda: self._sup is not None and self._sup.zygote_ready, timeout)
        if not self._sup.zygote_ready:
            self.close()
            raise EngineUnavailable("the zygote did not start")
        try:
            self._check_layers()
        except ConfinementUnavailable:
            self.close()
            raise
        return self

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Run the loop until ``predicate()`` is true or ``timeout`` passes. Returns the predicate."""
        until = None if timeout is None else time.monotonic() + timeout
        if self._reactor is None:
            raise EngineUnavailable("the engine is not started")
        while not predicate():
            if until is not None and time.monotonic() >= until:
                return False
            self._reactor.run_once(until)
        return True

    def submit(self, tenant: str, *, path: Any = None, source: str | None = None,
               function: str | None = None, args: Iterable[Any] | None = None,
               configuration: dict[str, Any] | None = None, timeout: float | None = None,
               timeout_starts: str = "submit") -> Job:
        """Queue an invocation and return its job; ``wait`` for its result.

        ``timeout`` is the call's wall clock from submission (waiting for a
        worker counts); ``timeout_starts="start"`` runs it from the moment the
        call starts instead, for a producer that queues many calls at once
        (``scriptvisor run --batch``) and wants each to get its whole timeout.
        """
        return self._submit(tenant, path, source, function, args, configuration, timeout, None,
                            timeout_starts=timeout_starts)

    def wait(self, job: Job) -> Result:
        self.run_until(lambda: job.done)
        assert job.result is not None
        return job.result

    def wait_all(self, jobs: list[Job], timeout: float | None = None) -> list[Result] | None:
        """Results of ``jobs`` in order; None if ``timeout`` passed first.

        Waits on each job in turn, so the loop's predicate stays O(1) (an
        ``all(...)`` over thousands of jobs after every event is quadratic).
        """
        until = None if timeout is None else time.monotonic() + timeout
        for job in jobs:
            left = None if until is None else max(0.0, until - time.monotonic())
            if not self.run_until(lambda: job.done, left):
                return None
        return [j.result for j in jobs]  # type: ignore[misc]

    def invoke(self, tenant: str, *, path: Any = None, source: str | None = None,
               function: str | None = None, args: Iterable[Any] | None = None,
               configuration: dict[str, Any] | None = None, timeout: float | None = None) -> Result:
        return self.wait(self.submit(tenant, path=path, source=source, function=function, args=args,
                                     configuration=configuration, timeout=timeout))

    def debug_exec(self, tenant: str, code: str, timeout: float | None = None) -> Result:
        """Test-only: run plain Python in a confined worker (needs ``EngineConfig(debug_exec=True)``)."""
        self._debug_enabled()
        job = self._submit(tenant, None, "", "debug", [], {}, timeout, None, debug_code=code)
        return self.wait(job)

    def close(self, graceful: bool = True) -> None:
        """Stop: with ``graceful``, running calls finish (up to their deadlines) first."""
        sup = self._sup
        if sup is None:
            return
        if graceful and sup.running:
            sup.drain()
            self.run_until(lambda: sup.busy == 0)
        sup.stop()
        if self._reactor is not None:
            self._reactor.close()
        self._reactor = None
        self._sup = None


class AsyncEngine(_Base):
    """asyncio engine: ``async with AsyncEngine() as eng: res = await eng.invoke(...)``."""

    async def start(self, timeout: float = 30.0) -> "AsyncEngine":
        loop = asyncio.get_running_loop()
        self._sup = Supervisor(self.config, AsyncioReactor(loop))
        ready = loop.create_future()

        def on_event(ev: dict[str, Any]) -> None:
            if ev["event"] == "zygote_ready" and ev.get("flavour") == "slim" and not ready.done():
                ready.set_result(True)

        self._sup.listeners.append(on_event)
        self._sup.start()
        try:
            await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            await self.close(graceful=False)
            raise EngineUnavailable("the zygote did not start") from None
        finally:
            if self._sup is not None:
                self._sup.listeners.remove(on_event)
        try:
            self._check_layers()
        except ConfinementUnavailable:
            await self.close(graceful=False)
            raise
        return self

    async def __aenter__(self) -> "AsyncEngine":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def invoke(self, tenant: str, *, path: Any = None, source: str | None = None,
                     function: str | None = None, args: Iterable[Any] | None = None,
                     configuration: dict[str, Any] | None = None, timeout: float | None = None) -> Result:
        return await self._result_of(tenant, path, source, function, args, configuration, timeout)

    async def debug_exec(self, tenant: str, code: str, timeout: float | None = None) -> Result:
        self._debug_enabled()
        return await self._result_of(tenant, None, "", "debug", [], {}, timeout, debug_code=code)

    async def _result_of(self, *submit: Any, debug_code: str | None = None) -> Result:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def done(job: Job) -> None:
            if not fut.done():
                fut.set_result(job.result)  # type: ignore[arg-type]

        self._submit(*submit, done, debug_code=debug_code)
        # A cancelled caller does not cancel the invocation: it finishes (or
        # times out) in its worker and its result is dropped.
        return await asyncio.shield(fut)

    async def close(self, graceful: bool = True) -> None:
        sup = self._sup
        if sup is None:
            return
        if graceful and sup.running:
            sup.drain()
            if sup.busy:
                loop = asyncio.get_running_loop()
                idle = loop.create_future()

                def on_event(ev: dict[str, Any]) -> None:
                    if ev["event"] == "job_done" and sup.busy == 0 and not idle.done():
                        idle.set_result(True)

                sup.listeners.append(on_event)
                await idle
        # Stopping waits for the zygote to reap its workers (milliseconds).
        sup.stop()
        sup.reactor.close()
        self._sup = None
