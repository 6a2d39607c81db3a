"""Fixtures for the operator server tests (helpers live in server_harness.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from scriptvisor.engine.server import auth
from server_harness import Server, make_tenant, start_server

# -- shared server ------------------------------------------------------------

FLOOD_TOML = "[limits]\ntimeout = 3\nmax_concurrency = 2\nmax_queue = 2\n"
SMALL_TOML = "[limits]\ntimeout = 2\nmax_concurrency = 1\nmax_queue = 1\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tenants")
    make_tenant(root, "alpha", '[configuration]\nV = "one"\nSECRET = { env = "SV_TEST_SECRET", default = "dflt" }\n'
                              "[limits]\ntimeout = 2\n")
    make_tenant(root, "beta", "")
    make_tenant(root, "flood", FLOOD_TOML)
    make_tenant(root, "small", SMALL_TOML)
    make_tenant(root, "broken", "[limits]\nnot_a_limit = 1\n")
    tokens = {name: auth.create_token(root, name) for name in ("alpha", "beta", "flood", "small")}
    srv = start_server(root, root.parent / "oplog.jsonl", tokens)
    try:
        yield srv
    finally:
        rc = srv.stop()
        err = srv.proc.stderr.read()
        assert rc == 0, err
