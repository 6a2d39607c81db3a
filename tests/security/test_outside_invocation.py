"""Issue 10, language layer: script code running with no invocation in progress.

A generator's ``finally`` (or a script class's ``__del__``) runs when the
object is collected, which can be after its call ended: no deadline, no
caller.  There the database facades (file and network) and the log facade
refuse with ``OutsideInvocation`` (layer: ``sandbox.context.require_current``,
asked by every such facade before it opens anything), instead of serving a
default time budget.  The harness: a Runner in-process; the script parks a
suspended generator in ``global_`` and the test drops it after the call
returned, as a later collection would.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scriptvisor.sandbox import context  # noqa: E402
from scriptvisor.sandbox.context import WorkerContext  # noqa: E402
from scriptvisor.sandbox.runner import Runner  # noqa: E402
from tests.sandbox.helpers import invoke  # noqa: E402

REFUSED = "refused outside an invocation"

# the same calls run inside the call (must work) and in the generator's finally
SCRIPT = """
import log
import sqlite
import postgres

def attempts(seen, tag):
    for what in ('sqlite', 'sqlite_query', 'postgres', 'log'):
        try:
            if what == 'sqlite':
                sqlite.connect('t.db').close()
            elif what == 'sqlite_query':
                global_['conn'].query('SELECT 1 AS one')
            elif what == 'postgres':
                postgres.connect('legacy').close()
            else:
                log.info('hello')
            seen.append([tag, what, 'ok'])
        except Exception as exc:
            seen.append([tag, what, str(exc)])

def later():
    try:
        yield 1
    finally:
        attempts(global_['seen'], 'finally')

def script(callback):
    global_['seen'] = []
    global_['conn'] = sqlite.connect('t.db')
    attempts(global_['seen'], 'call')
    g = later()
    next(g)
    global_['gen'] = g
    callback(None, 'parked')
"""


@pytest.fixture
def pg_role():
    """A declared least-privileged PostgreSQL role (the facades refuse superusers), dropped afterwards."""
    import secrets

    psycopg = pytest.importorskip("psycopg")
    name = f"sv_outside_{secrets.token_hex(4)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'x'")
    try:
        yield {"name": "legacy", "driver": "postgres", "host": "127.0.0.1", "port": 5432,
               "database": "postgres", "user": name, "password": "x", "secret_error": None}
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def runner(tmp_path, pg_role):
    data = tmp_path / "data"
    data.mkdir()
    ctx = WorkerContext(tenant="acme", data_dir=str(data), allowed_ports=(5432,),
                        databases={"legacy": pg_role})
    context.set_worker(ctx)
    yield Runner(ctx)
    ctx.run_cleanups()
    context.set_worker(None)


@pytest.mark.db
def test_cant_reach_database_or_log_from_code_collected_after_the_call(runner):
    out = invoke(runner, SCRIPT)
    assert out["ok"] and out["result"] == "parked", out
    seen = runner.global_["seen"]
    # inside the call every facade works (so the refusals below are the layer's, not a setup fault)
    assert seen == [["call", w, "ok"] for w in ("sqlite", "sqlite_query", "postgres", "log")], seen
    assert context._current is None  # the call has ended
    del runner.global_["gen"]  # the generator is finalized now: its finally runs
    gc.collect()
    later = [entry for entry in seen if entry[0] == "finally"]
    assert [w for _, w, _ in later] == ["sqlite", "sqlite_query", "postgres", "log"], seen
    for _tag, what, result in later:
        assert REFUSED in result, (what, result)
    assert "database access is refused" in later[0][2] and "log is refused" in later[3][2]


def test_cant_log_outside_an_invocation_even_from_host_side_calls():
    from scriptvisor.sandbox.facades import stdlib

    assert context._current is None
    with pytest.raises(context.OutsideInvocation, match=REFUSED):
        stdlib.log.info("x")
