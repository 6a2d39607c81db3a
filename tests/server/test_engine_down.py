"""Issue 14: while the engine's zygote is down, the server says so.

The engine side (back-off, ``available``) is tested with real processes in
``tests/engine/test_lifecycle.py`` and with a fake zygote in
``tests/engine/test_scheduling.py``; here the HTTP mapping, against an
engine stub that is down: ``/readyz`` answers 503 (so the load balancer
stops sending), a call answers 503 ``engine_unavailable`` with
``Retry-After``, and both recover when the engine does.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from scriptvisor.engine.errors import EngineUnavailable
from scriptvisor.engine.result import Result
from scriptvisor.engine.server import auth
from scriptvisor.engine.server.app import ServerState, create_app
from scriptvisor.engine.server.logstream import LogHub
from scriptvisor.engine.server.metrics import ServerMetrics
from scriptvisor.engine.server.oplog import OperatorLog
from scriptvisor.engine.server.tenants import TenantRegistry
from server_harness import make_tenant

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class DownEngine:
    available = False

    async def invoke(self, tenant: str, **kw: Any) -> Result:
        if not self.available:
            return Result.failure(EngineUnavailable("the engine's zygote is restarting; retry in 4 s",
                                                    retry_after=4))
        return Result(True, "fine")

    def stats(self, memory: bool = True) -> dict[str, Any]:
        return {"tenants": {}, "counters": {}, "workers_alive": 0}


def test_engine_down_is_503_with_retry_after_and_readyz_503_until_it_is_back(tmp_path: Path) -> None:
    make_tenant(tmp_path, "acme")
    token = auth.create_token(tmp_path, "acme")
    engine = DownEngine()
    state = ServerState(engine=engine, registry=TenantRegistry(tmp_path), metrics=ServerMetrics(engine.stats),
                        hub=LogHub(), oplog=OperatorLog(stream=io.StringIO()), ready=True)
    with TestClient(create_app(state)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["engine"] is False
        r = client.post("/v1/tenants/acme/scripts/noop", json={},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "4"
        assert r.json()["error"]["code"] == "engine_unavailable"
        engine.available = True
        assert client.get("/readyz").status_code == 200
        r = client.post("/v1/tenants/acme/scripts/noop", json={},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["result"] == "fine"
