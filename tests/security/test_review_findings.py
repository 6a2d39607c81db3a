"""Regression tests for the findings of a security review of the language layer.

Two groups:

* Outcomes the supervisor refuses.  The runner's outcome becomes a result
  frame that ``engine.protocol.parse_worker_message`` validates; a frame that
  fails (bad UTF-8, too many log lines, an over-long error name or message,
  ``ok=False`` without an error) gets the worker killed as hostile
  (``protocol_error``): ``global_`` is lost and the script's real outcome is
  replaced.  Each test runs the outcome through the real encoder, decoder and
  validator, exactly as a worker's frame travels.
* The value firewall (``check_value``) skipped by C-level iteration that the
  earlier tests did not cover: ``yield from`` + ``next()``, ``in`` with a
  script-defined ``__eq__``, ``list.count/index``, container methods
  (``dict.update``, ``list.extend``, ``set.union``...) and slice assignment.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from scriptvisor.engine import protocol  # noqa: E402
from scriptvisor.sandbox import policy  # noqa: E402
from scriptvisor.sandbox.wire import WorkerLimits  # noqa: E402
from tests.sandbox.helpers import LeakyIterable, error_of, invoke, make_runner  # noqa: E402


@pytest.fixture
def run():
    runner = make_runner()

    def _run(source, *args, **kwargs):
        return invoke(runner, source, *args, **kwargs)
    return _run


def over_the_wire(outcome):
    """The outcome as the supervisor receives it (raises FrameError where it would kill the worker)."""
    message = {"t": "result", "id": 1, "ok": bool(outcome.get("ok")), "result": outcome.get("result"),
               "error": outcome.get("error"), "logs": outcome.get("logs") or [], "stats": {}}
    frame = protocol.encode(message)
    [decoded] = protocol.FrameDecoder().feed(frame)
    return protocol.parse_worker_message(decoded)


# --------------------------------------------------------------------------- outcomes the supervisor refuses


def test_cant_get_worker_killed_with_lone_surrogate_result(run):
    out = run("""
        def script(callback):
            try:
                callback(None, "\\ud800")
            except Exception:
                pass
    """)
    over_the_wire(out)
    err = error_of(out)
    assert err["code"] == "invalid_result", err


def test_cant_leave_callback_without_outcome_by_raising_inside_it(run):
    """A property (from a facade class's property object) runs script code inside callback()."""
    out = run("""
        import re
        def boom(self):
            raise ValidationError("raised while the callback reads the error")
        def keep(self, value):
            pass
        class Sneaky(ValidationError):
            code = re.Pattern.pattern.getter(boom).setter(keep)
        def script(callback):
            callback(Sneaky("c"))
    """)
    over_the_wire(out)
    err = error_of(out)
    # The descriptor trick is now refused outright ('getter' is a denied
    # attribute); had it run, the runner would report invalid_result.
    assert (err["code"], err["name"]) == ("script_error", "AttributeError"), err
    assert "getter" in err["message"]


def test_cant_get_worker_killed_with_many_printed_lines(run):
    out = run("""
        def script(callback):
            print("\\n" * 20000)
            callback(None, 1)
    """)
    over_the_wire(out)
    assert out["ok"] is True and out["result"] == 1
    assert len(out["logs"]) <= policy.MAX_LOG_LINES < protocol.MAX_LOG_LINES
    assert "lines dropped" in out["logs"][-1]


def test_cant_get_worker_killed_with_lone_surrogates_in_logs_and_errors(run):
    out = run("""
        import log
        def script(callback):
            print("\\udcff")
            log.info("\\ud800")
            raise ValueError("\\udcff")
    """)
    over_the_wire(out)
    assert error_of(out)["name"] == "ValueError"


def test_cant_get_worker_killed_with_long_exception_class_name(run):
    name = "E" * 300
    out = run(f"""
        class {name}(Exception):
            pass
        def script(callback):
            raise {name}("x")
    """)
    over_the_wire(out)
    assert error_of(out)["name"].startswith("EEEE")


def test_cant_get_worker_killed_with_huge_compile_error(run):
    out = run("import " + "a" * 70000 + "\ndef script(callback):\n    callback()\n")
    over_the_wire(out)
    assert error_of(out)["code"] == "compile_error"


def test_cant_get_worker_killed_with_non_finite_validation_code(run):
    out = run("""
        def script(callback):
            callback(ValidationError(float("nan")))
    """)
    over_the_wire(out)
    err = error_of(out)
    assert err["name"] == "ValidationError" and err["validation_code"] == "nan", err


# --------------------------------------------------------------------------- value firewall gaps


@pytest.fixture
def leaky_run():
    """A runner whose global_ holds host objects that yield or contain a frame."""
    runner = make_runner()
    runner.global_["leaky"] = LeakyIterable()
    runner.global_["hostlist"] = [sys._getframe()]

    def _run(source):
        return invoke(runner, source)
    return _run


GRAB = """
class Grab:
    def __init__(self):
        self.got = []
    def __eq__(self, other):
        self.got.append(other)
        return False
"""


def refused_frame(out):
    err = error_of(out)
    assert err["code"] == "script_error" and err["name"] == "SandboxError", err
    assert "frame objects are not available" in err["message"], err


def test_cant_pull_frames_through_yield_from(leaky_run):
    refused_frame(leaky_run("""
        def gen():
            yield from global_["leaky"]
        def script(callback):
            callback(None, str(next(gen())))
    """))


def test_yield_from_still_delegates_to_script_generators(run):
    out = run("""
        def inner():
            got = yield 1
            yield got
            return "done"
        def outer():
            r = yield from inner()
            yield r
            yield from [5, 6]
        def script(callback):
            g = outer()
            first = next(g)
            callback(None, [first, g.send("sent")] + list(g))
    """)
    assert out["result"] == [1, "sent", "done", 5, 6], out


@pytest.mark.parametrize("expr", [
    "x in global_['leaky']", "x not in global_['leaky']", "x in global_['hostlist']",
    "global_['hostlist'].count(x)", "global_['hostlist'].index(x)",
])
def test_cant_see_foreign_elements_through_script_eq(leaky_run, expr):
    refused_frame(leaky_run(GRAB + f"""
def script(callback):
    x = Grab()
    try:
        {expr}
    except ValueError:
        pass
    callback(None, str(x.got))
"""))


@pytest.mark.parametrize("expr", [
    "d.update(global_['leaky']) or d.get('k')",
    "l.extend(global_['leaky']) or l.pop()",
    "d.fromkeys(global_['leaky']).popitem()",
    "st.update(global_['leaky']) or st.pop()",
    "st.union(global_['leaky']).pop()",
    "frozenset().union(global_['leaky'])",
])
def test_cant_pull_frames_through_container_methods(leaky_run, expr):
    refused_frame(leaky_run(f"""
        def script(callback):
            d = {{}}
            l = []
            st = set()
            callback(None, str({expr}))
    """))


def test_cant_pull_frames_through_slice_assignment(leaky_run):
    refused_frame(leaky_run("""
        def script(callback):
            l = [1]
            l[:] = global_["leaky"]
            callback(None, str(l.pop()))
    """))


def test_container_methods_and_in_still_work(run):
    out = run(GRAB + """
def script(callback):
    d = {"a": 1}
    d.update({"b": 2}, c=3)
    d.update([("e", 5)])
    l = [1]
    l.extend(range(2))
    l[1:2] = [9, 9]
    ba = bytearray(b"abc")
    ba[0:1] = b"zz"
    s = {1, 2}
    s.update([3], (4,))
    g = Grab()
    callback(None, [d, l, bytes(ba).decode(), sorted(s), sorted(frozenset([1]).union([2], {3})),
                    {}.fromkeys("ab", 0), 1 in [1], 3 not in (1, 2), "ab" in "xabc", "k" in {"k": 1},
                    g in [g], g in [1], "K" in configuration, [1, 2].count(1), (1, 2).index(2)])
""", configuration={"K": "v"})
    assert out["result"] == [{"a": 1, "b": 2, "c": 3, "e": 5}, [1, 9, 9, 1], "zzbc", [1, 2, 3, 4], [1, 2, 3],
                             {"a": 0, "b": 0}, True, True, True, True, True, False, True, 1, 1], out


def test_cant_chain_in_comparisons(run):
    err = error_of(run("""
        def script(callback):
            callback(None, 1 < 2 in [2])
    """))
    assert err["code"] == "compile_error" and "chained comparisons" in err["message"], err


# --------------------------------------------------------------------------- bcrypt work factor


def test_cant_pin_a_worker_with_a_huge_bcrypt_cost():
    """The cost comes from the stored hash: "$2b$31$" would run for days in C."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from scriptvisor.sandbox.facades.crypto import bcrypt\n"
            "real = bcrypt.hash('pw', 4)\n"  # a well-formed hash, cost raised from 04 to 31
            "try:\n"
            "    bcrypt.check('pw', real[:4] + '31' + real[6:])\n"
            "except ValueError as exc:\n"
            "    print('refused:', exc)\n") % ROOT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert "refused:" in proc.stdout and "31" in proc.stdout, proc


def test_cant_build_a_property_from_a_facade_descriptor():
    """Layer: attribute guard (getter/setter/deleter/fget/... are denied names)."""
    from scriptvisor.sandbox.context import WorkerContext
    from scriptvisor.sandbox.runner import Runner

    src = ("import re\n"
           "def s(callback):\n"
           "    p = re.Pattern.pattern.getter\n"
           "    callback(None, 'reached')\n")
    out = Runner(WorkerContext(tenant="x")).invoke(path="s.py", source=src, source_hash="prop",
                                                    function="s", args=[], configuration={}, timeout=5)
    assert out["ok"] is False
    assert out["error"]["name"] in ("AttributeError", "CompileError")


def test_cant_grow_the_printed_buffer_without_bound():
    """Layer: output cap also bounds ``printed`` (RestrictedPython's print buffer)."""
    from scriptvisor.sandbox.context import WorkerContext
    from scriptvisor.sandbox.runner import Runner

    src = ("def s(callback):\n"
           "    for i in range(2000):\n"
           "        print('x' * 1000)\n"
           "    callback(None, len(printed))\n")
    out = Runner(WorkerContext(tenant="x", limits=WorkerLimits(output_bytes=4096))).invoke(
        path="s.py", source=src, source_hash="printed", function="s", args=[], configuration={}, timeout=5)
    assert out["ok"] is True, out
    assert out["result"] <= 4096
