"""The ``passwords`` facade inside a real confined worker (zygote-forked,
Landlock + seccomp + rlimits): every backend was loaded before confinement,
so nothing is imported lazily afterwards, and argon2 hashes with many lanes
run on the worker's one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scriptvisor.engine import TenantLimits

VECTORS = json.loads((Path(__file__).parents[1] / "sandbox" / "data" / "password_vectors.json")
                     .read_text("utf-8"))["vectors"]

SCRIPT = """
import passwords

def check(vectors, callback):
    out = []
    for v in vectors:
        scheme = v["scheme"] if v["scheme"].startswith("hex_") else None
        out.append([v["scheme"], passwords.verify(v["password"], v["hash"], scheme),
                    passwords.verify(v["password"] + "!", v["hash"], scheme)])
    callback(None, out)
"""


@pytest.mark.slow
def test_one_vector_of_every_scheme_verifies_in_a_confined_worker(shared_engine):
    first = list({v["scheme"]: v for v in reversed(VECTORS)}.values())
    shared_engine.configure_tenant("pwcheck", limits=TenantLimits(timeout=60.0, processes=2))
    res = shared_engine.invoke("pwcheck", source=SCRIPT, path="check.py", args=[first])
    assert res.ok, res.error
    assert res.result == [[v["scheme"], True, False] for v in first]


@pytest.mark.slow
def test_cant_pin_a_confined_worker_with_an_over_cost_hash(shared_engine):
    """Layer: the facade's per-tenant cap (limits.hash_pbkdf2_max_rounds), before any work."""
    shared_engine.configure_tenant("pwcap", limits=TenantLimits(hash_pbkdf2_max_rounds=10_000))
    source = """
import passwords

def cap(stored, callback):
    try:
        passwords.verify("pw", stored)
    except passwords.HashTooExpensive as exc:
        callback(None, str(exc))
"""
    stored = "pbkdf2_sha256$1000000$salt$" + "A" * 43 + "="
    res = shared_engine.invoke("pwcap", source=source, path="cap.py", args=[stored])
    assert res.ok, res.error
    assert "above this tenant's cap 10000" in res.result


@pytest.mark.slow
@pytest.mark.parametrize("iterations, dklen", [(1_000_000, None), (10_000, 32 * 200)], ids=["rounds", "dklen"])
def test_cant_pin_a_confined_worker_with_hashlib_pbkdf2_over_the_cap(shared_engine, iterations, dklen):
    """hashlib.pbkdf2_hmac is how a script verifies a custom PBKDF2 column: the same per-tenant cap
    (limits.hash_pbkdf2_max_rounds, counted per output block: dklen multiplies the work) as
    ``passwords.verify``, refused before any work with HashTooExpensive, not a timeout.
    Layer: sandbox.facades.stdlib._pbkdf2_hmac -> passwords.check_pbkdf2_cost."""
    shared_engine.configure_tenant("pwcap2", limits=TenantLimits(hash_pbkdf2_max_rounds=100_000, timeout=2.0))
    source = """
import hashlib
import passwords

def cap(iterations, dklen, callback):
    try:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", iterations, dklen)
    except passwords.HashTooExpensive as exc:
        callback(None, str(exc))
"""
    res = shared_engine.invoke("pwcap2", source=source, path="cap.py", args=[iterations, dklen])
    assert res.ok, res.error
    assert "above this tenant's cap 100000" in res.result
