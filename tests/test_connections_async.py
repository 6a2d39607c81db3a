"""The same operations on an AsyncEngine inside a running event loop (the server's path)."""

from __future__ import annotations

import asyncio

from scriptvisor.engine import AsyncEngine, EngineConfig, TenantLimits
from scriptvisor.engine.connections import run_operation_async
from scriptvisor.engine.tenantdir import init_tenant
from scriptvisor.engine.userstore import close_stores


def test_async_migration_login_and_concurrent_operations(tmp_path):
    root = init_tenant(tmp_path / "acme", "sqlite", import_users=True, seed_rounds=4)

    async def main():
        cfg = EngineConfig(limits=TenantLimits(timeout=10.0), state_dir=str(tmp_path / "state"))
        async with AsyncEngine(cfg) as eng:
            eng.configure_tenant("acme", data_dir=str(root / "data"))
            first = await run_operation_async(eng, root, "login", ["alice@example.com", "wonderland"])
            again, bob, unknown = await asyncio.gather(
                run_operation_async(eng, root, "login", ["alice@example.com", "wonderland"]),
                run_operation_async(eng, root, "get_user", ["bob@example.com"]),
                run_operation_async(eng, root, "get_user", ["nobody@example.com"]),
            )
            return first, again, bob, unknown

    try:
        first, again, bob, unknown = asyncio.run(main())
    finally:
        close_stores()
    assert first["ok"] and first["scripts_called"] == ["login"] and first["from_platform_store"] is False
    assert again["ok"] and again["scripts_called"] == [] and again["from_platform_store"] is True
    assert bob["result"]["user_id"] == "2" and bob["scripts_called"] == ["get_user"]
    assert unknown["ok"] and unknown["result"] is None
