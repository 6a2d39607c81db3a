"""The slim zygote and the zygote of database tenants, through real processes.

Workers of a tenant without a postgres/mysql declaration (or [[http]]) are forked
from a zygote that never imported psycopg, PyMySQL or httpx (they inherit everything their
zygote holds, and cannot import after confinement); a tenant that declares a
postgres database gets workers from a zygote that preloads psycopg, and works
as before; that zygote, killed, is restarted like the slim one.
"""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import declaration

MODULES = "import sys\nresult = sorted(m for m in ('httpx', 'psycopg', 'pymysql', 'sqlite3') if m in sys.modules)"

QUERY = """
import postgres

def q(callback):
    db = postgres.connect("legacy")
    rows = db.query("SELECT 41 + 1 AS answer")
    db.close()
    callback(None, rows[0]["answer"])
"""


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    from scriptvisor.engine import Engine, EngineConfig, TenantLimits

    e = Engine(EngineConfig(limits=TenantLimits(timeout=10.0), spares_per_tenant=0, debug_exec=True,
                            state_dir=str(tmp_path_factory.mktemp("state")))).start()
    yield e
    e.close()


@pytest.fixture(scope="module")
def pg_tenant(eng, pg_legacy):
    eng.configure_tenant("pgflavour", databases=[declaration("postgres", pg_legacy)])
    return "pgflavour"


def test_a_tenant_without_databases_is_forked_from_a_zygote_without_drivers(eng):
    res = eng.debug_exec("plain", MODULES)
    assert res.ok, res.error
    assert res.result == ["sqlite3"]  # the sqlite facade is for every tenant: it stays
    slim = eng.stats(memory=False)["zygotes"]["slim"]
    assert slim["state"] == "ready" and slim["modules"] > 100
    # the facade is there and says what it always said
    res = eng.invoke("plain", path="q.py", source=QUERY, function="q")
    assert res.error["name"] == "NotAllowed"
    assert "'legacy' is not declared" in res.error["message"]
    assert "declared for this tenant: none" in res.error["message"]


def test_a_postgres_tenant_gets_the_driver_and_works(eng, pg_tenant):
    res = eng.invoke(pg_tenant, path="q.py", source=QUERY, function="q")
    assert res.ok and res.result == 42, res.error
    res = eng.debug_exec(pg_tenant, MODULES)
    assert res.ok and res.result == ["psycopg", "sqlite3"], res.error
    zygotes = eng.stats(memory=False)["zygotes"]
    assert zygotes["postgres"]["state"] == "ready"
    assert zygotes["postgres"]["modules"] > zygotes["slim"]["modules"]


def test_killing_the_postgres_zygote_is_recovered_like_the_slim_one(eng, pg_tenant):
    sup = eng.supervisor
    assert eng.invoke(pg_tenant, path="q.py", source=QUERY, function="q").ok
    plain = eng.debug_exec("plain", "import os\nresult = os.getpid()")
    assert plain.ok, plain.error
    link = sup.zygotes[("postgres",)]
    deaths, pid = link.deaths, link.pid
    os.kill(pid, signal.SIGKILL)
    assert eng.run_until(lambda: link.deaths == deaths + 1 and link.ready, 30)
    assert link.pid != pid and sup.zygote.deaths == 0
    res = eng.invoke(pg_tenant, path="q.py", source=QUERY, function="q")
    assert res.ok and res.result == 42, res.error
    # the slim zygote's workers were not touched
    again = eng.debug_exec("plain", "import os\nresult = os.getpid()")
    assert again.ok and again.result == plain.result
