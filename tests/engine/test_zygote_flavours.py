"""One zygote per set of preloaded extras (database drivers), against fake processes.

The slim zygote forks the workers of tenants without a postgres/mysql
declaration; a tenant that declares one is forked by a zygote of its own set,
started when the tenant is configured, restarted on its own.  The same rules
through real processes (and a real PostgreSQL) are in
``tests/db/test_zygote_flavours.py``.
"""

from __future__ import annotations

import pytest

from scriptvisor.engine.databases import DatabaseDecl
from scriptvisor.sandbox.wire import HttpEndpoint

from .fakes import Rig


@pytest.fixture
def rig():
    r = Rig(spares_per_tenant=0)
    yield r
    r.close()


def decl(driver: str, name: str = "legacy") -> DatabaseDecl:
    return DatabaseDecl(name=name, driver=driver, database="legacy", host="127.0.0.1",
                        port=5432 if driver == "postgres" else 3306, user="legacy", password="x")


def test_a_tenant_declaring_postgres_is_forked_by_a_zygote_of_its_own(rig):
    slim = rig.zygote
    assert slim.extras == []
    assert rig.submit("plain", 1).result.result == 1
    rig.sup.configure_tenant("pg", databases=[decl("postgres")])
    rig.settle()
    pg = rig.zygote
    assert pg is not slim and pg.extras == ["postgres"]  # started at configure time
    job = rig.submit("pg", 2)
    assert not job.done  # waits for that zygote's hello, not for the slim one
    pg.hello()
    rig.settle()
    assert job.result.result == 2
    assert {w.policy["tenant"] for w in rig.workers if w.zygote is pg} == {"pg"}
    assert {w.policy["tenant"] for w in rig.workers if w.zygote is slim} == {"plain"}
    # sqlite needs no driver: the slim zygote; both drivers: one more set
    rig.sup.configure_tenant("lite", databases=[decl("sqlite")])
    rig.sup.configure_tenant("both", databases=[decl("postgres"), decl("mysql", "other")])
    rig.settle()
    assert sorted(rig.sup.zygotes) == [(), ("mysql", "postgres"), ("postgres",)]
    assert rig.zygote.extras == ["mysql", "postgres"]
    # declared [[http]] endpoints: the zygote with the HTTP client
    api = HttpEndpoint(name="api", base_url="http://127.0.0.1:8080/", scheme="http", host="127.0.0.1",
                       port=8080, prefix="/", addresses=("127.0.0.1",))
    rig.sup.configure_tenant("web", http=(api,))
    rig.settle()
    assert rig.zygote.extras == ["http"]
    stats = rig.sup.stats(memory=False)["zygotes"]
    assert sorted(stats) == ["http", "mysql+postgres", "postgres", "slim"]


def test_a_flavour_zygote_dies_alone_and_restarts_on_its_own(rig):
    slim = rig.zygote
    rig.sup.configure_tenant("pg", databases=[decl("postgres")])
    rig.settle()
    pg = rig.zygote
    pg.hello()
    rig.settle()
    assert rig.submit("pg", 1).result.ok and rig.submit("plain", 2).result.ok
    plain_workers = [w for w in rig.workers if w.zygote is slim and not w.closed]
    assert plain_workers
    pg.die()
    rig.settle()
    links = rig.sup.zygotes
    assert links[("postgres",)].deaths == 1 and links[()].deaths == 0
    assert all(not w.closed for w in plain_workers)  # the slim zygote's workers live on
    assert rig.sup.available  # /readyz follows the slim zygote
    assert any(e["event"] == "zygote_exit" and e["flavour"] == "postgres" for e in rig.events)
    again = rig.zygote
    assert again is not pg and again.extras == ["postgres"]  # restarted at once
    job = rig.submit("pg", 3)
    again.hello()
    rig.settle()
    assert job.result.result == 3
    assert rig.submit("plain", 4).result.result == 4


def test_a_tenant_whose_declaration_changes_moves_to_the_other_zygote(rig):
    rig.sup.configure_tenant("acme")
    assert rig.submit("acme", 1).result.ok
    rig.sup.configure_tenant("acme", databases=[decl("mysql")])
    rig.settle()
    my = rig.zygote
    assert my.extras == ["mysql"]
    my.hello()
    rig.settle()
    rig.sup.recycle_tenant("acme")
    rig.settle()
    assert rig.submit("acme", 2).result.result == 2
    assert any(w.zygote is my and w.policy["tenant"] == "acme" for w in rig.workers)


def test_zygotes_named_in_the_config_start_with_the_engine():
    """``EngineConfig.zygote_extras`` (``scriptvisor run`` names its tenant's set): that
    zygote boots beside the slim one instead of after the tenant is configured."""
    r = Rig(spares_per_tenant=0, zygote_extras=(("postgres",),))
    try:
        assert [z.extras for z in r.zygotes] == [[], ["postgres"]]
        r.zygotes[0].hello()  # the rig greeted the last one started
        r.settle()
        r.sup.configure_tenant("pg", databases=[decl("postgres")])
        assert r.submit("pg", 5).result.result == 5
        assert len(r.zygotes) == 2  # no second postgres zygote
        assert {w.policy["tenant"] for w in r.workers if w.zygote is r.zygotes[1]} == {"pg"}
    finally:
        r.close()
