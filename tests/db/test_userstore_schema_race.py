"""Several nodes opening an empty PostgreSQL user store at once create one schema."""

import threading
import uuid

import pytest

from scriptvisor.engine.hashing import FAST_HASHER
from scriptvisor.engine.userstore import UserStore
from tests.services import unavailable

psycopg = pytest.importorskip("psycopg")
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def fresh_db():
    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"no PostgreSQL server reachable at 127.0.0.1:5432: {exc}")
    name = f"sv_race_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_concurrent_first_opens_do_not_race_on_the_schema(fresh_db):
    barrier = threading.Barrier(8)
    errors, stores = [], []

    def open_one(i):
        barrier.wait()
        try:
            stores.append(UserStore(f"tenant{i}", dsn=fresh_db, hasher=FAST_HASHER))
        except Exception as exc:  # the bug: UniqueViolation on pg_type
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len(stores) == 8
