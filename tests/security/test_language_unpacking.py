"""Issue 10, language layer: every unpacking form takes the guarded path.

RestrictedPython guards tuple targets only; a *list* target (``[a, b] = x``,
``[*rest] = x``, ``for [a, b] in ...``, ``with cm as [a]``, nested
``[[n]] = [x]``, comprehension targets) used to unpack in C and skip
``_getiter_`` and the value firewall.  The harness hands a module into each
form through a host object planted in ``global_`` (nothing reachable today
yields one; the firewall is the layer the others rely on).  Each test pins the
refusal (``script_error`` / ``SandboxError`` from the value firewall) and
that the compiled code routes the target through the unpack guard (the
compiler layer: ``ScriptPolicy.visit_List``).
"""

from __future__ import annotations

import os
import sys
import types

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scriptvisor.sandbox import policy  # noqa: E402
from tests.sandbox.helpers import error_of, invoke, make_runner  # noqa: E402


class ModuleBox:
    """Iterating it yields the ``sys`` module (what must never reach a script)."""

    def __iter__(self):
        yield sys


class ModuleContext:
    """A host context manager whose ``__enter__`` returns a ModuleBox."""

    def __enter__(self):
        return ModuleBox()

    def __exit__(self, *exc):
        return False


class NestedContext(ModuleContext):
    """``__enter__`` returns ``[ModuleBox()]``: a module two levels down."""

    def __enter__(self):
        return [ModuleBox()]


FORMS = {
    "assign_list": "[a] = global_['box']",
    "assign_list_two_targets": "b = [a] = global_['box']",
    "assign_starred_list": "[*rest] = global_['box']\n    a = rest.pop()",
    "assign_list_with_starred": "[*rest, a] = global_['box']",
    "assign_nested_list": "[[a]] = [global_['box']]",
    "assign_list_in_tuple": "(b, [a]) = (1, global_['box'])",
    "assign_tuple_in_list": "[b, (a,)] = [1, global_['box']]",
    "for_list": "for [a] in [global_['box']]:\n        pass",
    "for_list_in_tuple": "for b, [a] in [(1, global_['box'])]:\n        pass",
    "listcomp": "a = [a for [a] in [global_['box']]][0]",
    "setcomp": "a = {a for [a] in [global_['box']]}.pop()",
    "dictcomp": "a = {1: a for [a] in [global_['box']]}[1]",
    "genexp": "a = next(a for [a] in [global_['box']])",
    "with_list": "with global_['cm'] as [a]:\n        pass",
    "with_nested_list": "with global_['nested_cm'] as [[a]]:\n        pass",
}


@pytest.fixture
def module_runner():
    runner = make_runner()
    runner.global_["box"] = ModuleBox()
    runner.global_["cm"] = ModuleContext()
    runner.global_["nested_cm"] = NestedContext()
    return runner


def _script(form: str) -> str:
    return f"def script(callback):\n    {form}\n    callback(None, repr(a))\n"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_cant_unpack_a_module_through_any_target_form(module_runner, name):
    out = invoke(module_runner, _script(FORMS[name]))
    err = error_of(out)
    assert (err["code"], err["name"]) == ("script_error", "SandboxError"), (name, out)
    assert err["message"] == "module objects are not available to scripts", err


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


@pytest.mark.parametrize("name", sorted(FORMS))
def test_cant_compile_a_list_target_that_skips_the_unpack_guard(name):
    code = policy.compile_script(_script(FORMS[name]), "t.py")
    assert isinstance(code, types.CodeType), code
    assert _names(code) & {"_unpack_sequence_", "_iter_unpack_sequence_"}, name


@pytest.mark.parametrize("form", ["b, *[[a]] = [1, global_['box']]", "b, *((a,),) = [1, global_['box']]",
                                  "[b, *[a]] = [1, global_['box']]",
                                  "for b, *[a] in [[1, global_['box']]]:\n        pass"])
def test_cant_compile_a_starred_target_that_is_not_a_plain_name(module_runner, form):
    # the starred part would be unpacked again in C, past the unpack guard's spec
    err = error_of(invoke(module_runner, _script(form)))
    assert err["code"] == "compile_error", err
    assert any("a starred target must be a plain name" in e for e in err["errors"]), err


def test_list_targets_still_unpack_like_python():
    runner = make_runner()
    out = invoke(runner, """
        def script(callback):
            [a, b] = [1, 2]
            [c, *d] = range(4)
            [[e], f] = [[5], 6]
            g, [h, i] = 7, (8, 9)
            pairs = [k for [k, v] in [[10, 'x'], [11, 'y']]]
            for [m, [n]] in [(12, [13])]:
                pass
            [*rest] = 'ab'
            callback(None, [a, b, c, d, e, f, g, h, i, pairs, m, n, rest])
    """)
    assert out["ok"], out
    assert out["result"] == [1, 2, 0, [1, 2, 3], 5, 6, 7, 8, 9, [10, 11], 12, 13, ["a", "b"]]


def test_cant_unpack_a_module_from_a_host_list_into_a_list_target(module_runner):
    # the value firewall also holds when the container is a host list
    module_runner.global_["mods"] = [sys]
    err = error_of(invoke(module_runner, _script("[a] = global_['mods']")))
    assert (err["code"], err["name"], err["message"]) == (
        "script_error", "SandboxError", "module objects are not available to scripts")
