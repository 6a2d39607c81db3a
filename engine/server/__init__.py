"""The operator server: tenant folders, an authenticated HTTP API over the engine.

Modules, one job each:

* ``tenants``   every tenant folder under ``TENANTS/``, reloaded when its
                ``tenant.toml`` changes (one folder is loaded and validated by
                the core's ``engine.tenants``, which never imports this package);
* ``auth``      bearer tokens (only hashes on disk, constant-time comparison);
* ``metrics``   the Prometheus registry;
* ``logstream`` per-tenant server-sent event fan-out;
* ``oplog``     one structured JSON line per invocation for the operator;
* ``app``       the Starlette routes;
* ``console``   the browser console (``/console``, assets in ``static/``) and
                its routes: check, save/rollback, recent invocations, admin views;
* ``scriptstore`` atomic script saves with kept versions (``[editing]``);
* ``activity``  bounded recent-invocation and per-10s aggregates for the console;
* ``run``       ``serve()``: uvicorn and the engine on one asyncio loop, graceful
                shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

__all__: list[str] = []
