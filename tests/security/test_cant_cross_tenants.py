"""Tenant isolation at the engine level: workers are never shared."""

from scriptvisor.engine import Engine, EngineConfig, TenantLimits

STASH = ("def stash(secret, callback):\n"
         "    global_['secret'] = secret\n"
         "    callback(None, True)\n")
PEEK = ("def peek(callback):\n"
        "    callback(None, global_.get('secret'))\n")


def test_cant_see_another_tenants_global(tmp_path):
    """Layer: tenant-bound workers (a worker serves one tenant for life)."""
    cfg = EngineConfig(state_dir=str(tmp_path), limits=TenantLimits(timeout=5.0))
    with Engine(cfg) as eng:
        for _ in range(3):
            assert eng.invoke("alice-corp", source=STASH, path="stash.py", args=["alice's token"]).ok
        seen = {eng.invoke("mallory-corp", source=PEEK, path="peek.py").result for _ in range(10)}
        assert seen == {None}
        # and alice still has hers: her worker kept it
        assert eng.invoke("alice-corp", source=PEEK, path="peek.py").result == "alice's token"
