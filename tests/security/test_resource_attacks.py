"""Resource attacks from security.md, as tenant scripts through the real engine.

Each names the layer that stops it.  The supervisor and other tenants must
keep serving afterwards.
"""

import pytest

from scriptvisor.engine import Engine, EngineConfig, TenantLimits

NOOP = "def noop(callback):\n    callback(None, 1)\n"


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    cfg = EngineConfig(state_dir=str(tmp_path_factory.mktemp("sv")),
                       limits=TenantLimits(timeout=5.0, memory_mb=512, output_bytes=64 * 1024))
    with Engine(cfg) as e:
        yield e


def run(eng, body, timeout=0.5, tenant="attacker"):
    source = "def attack(callback):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    res = eng.invoke(tenant, source=source, path="attack.py", timeout=timeout)
    assert eng.invoke("bystander", source=NOOP, path="noop.py").ok  # others keep being served
    return res


def test_cant_spin_forever(eng):
    """Layer: the supervisor's wall clock (SIGKILL at the deadline)."""
    assert run(eng, "while True:\n    pass").code == "timeout"


def test_cant_swallow_the_timeout_with_except_baseexception(eng):
    """Layer: wall clock from outside; BaseException is not even in scope."""
    res = run(eng, "while True:\n    try:\n        while True:\n            pass\n"
                   "    except Exception:\n        pass")
    assert res.code == "timeout"


def test_cant_keep_working_in_finally(eng):
    """Layer: wall clock from outside: a SIGKILL runs no finally block."""
    res = run(eng, "try:\n    while True:\n        pass\nfinally:\n    while True:\n        pass")
    assert res.code == "timeout"


def test_cant_outlast_the_deadline_inside_a_c_call(eng):
    """Layer: SIGKILL reaches a worker stuck in C code that never returns to the interpreter."""
    assert run(eng, "callback(None, sum(range(10 ** 15)))").code == "timeout"


def test_cant_compute_a_tower_of_powers(eng):
    """Layer: wall clock (10**10**10 is a C-level bignum loop)."""
    assert run(eng, "callback(None, 10 ** 10 ** 10)").code == "timeout"


def test_cant_allocate_a_huge_string(eng):
    """Layer: RLIMIT_AS -> MemoryError, a structured script error; the worker survives."""
    res = run(eng, "callback(None, len('a' * 10 ** 10))", timeout=5)
    assert res.code == "script_error" and res.error["name"] == "MemoryError"


def test_cant_grow_a_list_without_bound(eng):
    """Layer: RLIMIT_AS (or the wall clock, whichever comes first)."""
    res = run(eng, "l = []\nwhile True:\n    l = [l, 'x' * 1000000]", timeout=5)
    assert res.code in ("script_error", "timeout")
    if res.code == "script_error":
        assert res.error["name"] == "MemoryError"


def test_cant_build_a_huge_dict(eng):
    """Layer: RLIMIT_AS (or the wall clock)."""
    res = run(eng, "d = {}\ni = 0\nwhile True:\n    d[i] = i\n    i += 1", timeout=5)
    assert res.code in ("script_error", "timeout")


def test_cant_flood_the_output(eng):
    """Layer: per-invocation output cap (truncation marker), then the wall clock."""
    res = run(eng, "while True:\n    print('x' * 10000)", timeout=0.3)
    assert res.code == "timeout"
    # a flood that ends is capped, with a marker, and the result still arrives
    res = run(eng, "for i in range(1000):\n    print('x' * 10000)\ncallback(None, 'done')", timeout=5)
    assert res.ok and res.result == "done"
    assert sum(len(line) for line in res.logs) <= 64 * 1024 + 200
    assert "truncated" in res.logs[-1]


def test_cant_exceed_the_result_size(eng):
    """Layer: result size cap -> invalid_result, never a giant frame."""
    res = run(eng, "callback(None, 'x' * (5 * 1024 * 1024))", timeout=5)
    assert res.code == "invalid_result"
