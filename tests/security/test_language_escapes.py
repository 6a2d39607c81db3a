"""Language-level escapes from security.md, each refused by the language layer.

Run in-process through ``Runner.invoke`` (no engine): the point is to pin the
exact refusal of the compiler policy or of a guard.  Every test asserts the
error code and which layer refused (``compile_error`` = ScriptPolicy /
RestrictedPython; ``script_error`` = a run-time guard).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.sandbox.helpers import LeakyIterable, error_of, invoke, make_runner  # noqa: E402


@pytest.fixture
def run():
    runner = make_runner()

    def _run(source, *args, **kwargs):
        return invoke(runner, source, *args, **kwargs)
    return _run


def compile_refusal(out, fragment):
    err = error_of(out)
    assert err["code"] == "compile_error", err
    assert any(fragment in e for e in err["errors"]), err["errors"]
    return err


def runtime_refusal(out, name, fragment=""):
    err = error_of(out)
    assert err["code"] == "script_error" and err["source"] == "exception", err
    assert err["name"] == name, err
    assert fragment in err["message"], err
    return err


# --------------------------------------------------------------------------- subclass walk


def test_cant_walk_subclasses_with_dunder_syntax(run):
    compile_refusal(run("""
        def script(callback):
            callback(None, str(().__class__.__bases__[0].__subclasses__()))
    """), '"__class__" is an invalid attribute name')


@pytest.mark.parametrize("name", ["__class__", "__subclasses__", "__bases__", "__mro__", "__globals__"])
def test_cant_walk_subclasses_with_getattr_builtin(run, name):
    runtime_refusal(run(f"""
        def script(callback):
            callback(None, str(getattr((), "{name}")))
    """), "AttributeError", "is not allowed")


def test_cant_call_mro(run):
    runtime_refusal(run("""
        def script(callback):
            callback(None, str(int.mro()))
    """), "AttributeError", "'mro'")


def test_cant_use_type_vars_dir_globals(run):
    for expr in ("type(1)", "vars()", "dir()", "globals()", "locals()", "open('/etc/passwd')",
                 "compile('1', 'x', 'eval')", "memoryview(b'x')", "id(1)", "super()",
                 "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "exit", "setattr"):
        out = run(f"""
            def script(callback):
                callback(None, str({expr}))
        """)
        runtime_refusal(out, "NameError")


def test_cant_name_builtins_module(run):
    compile_refusal(run("""
        def script(callback):
            callback(None, str(__builtins__))
    """), '"__builtins__" is an invalid variable name')


def test_cant_catch_base_exception(run):
    out = run("""
        def script(callback):
            try:
                pass
            except BaseException:
                pass
            callback()
    """)
    # the handler's class expression is only evaluated when an exception
    # propagates; make one propagate
    assert out["ok"]
    out = run("""
        def script(callback):
            try:
                1 // 0
            except BaseException:
                callback(None, "caught")
    """)
    runtime_refusal(out, "NameError", "BaseException")


# --------------------------------------------------------------------------- frame walks


@pytest.mark.parametrize("attr", ["gi_frame", "gi_code", "gi_yieldfrom"])
def test_cant_walk_generator_frame(run, attr):
    compile_refusal(run(f"""
        def gen():
            yield 1
        def script(callback):
            g = gen()
            callback(None, str(g.{attr}))
    """), f'"{attr}" is a restricted name')


@pytest.mark.parametrize("attr", ["gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
                                  "f_builtins", "tb_frame", "tb_next", "gi_code", "f_locals"])
def test_cant_walk_frames_with_getattr_builtin(run, attr):
    runtime_refusal(run(f"""
        def gen():
            yield 1
        def script(callback):
            callback(None, str(getattr(gen(), "{attr}")))
    """), "AttributeError", "is not allowed")


def test_cant_define_coroutines_or_async_generators(run):
    compile_refusal(run("""
        async def coro():
            return 1
        def script(callback):
            callback(None, str(coro().cr_frame))
    """), "AsyncFunctionDef statements are not allowed")


def test_cant_reach_traceback_frames(run):
    compile_refusal(run("""
        def script(callback):
            try:
                1 // 0
            except Exception as e:
                callback(None, str(e.__traceback__.tb_frame.f_back.f_globals))
    """), '"__traceback__" is an invalid attribute name')


def test_cant_reach_traceback_via_getattr_or_with_traceback(run):
    runtime_refusal(run("""
        def script(callback):
            try:
                1 // 0
            except Exception as e:
                callback(None, str(getattr(e, "__traceback__")))
    """), "AttributeError", "is not allowed")


# --------------------------------------------------------------------------- format strings


@pytest.mark.parametrize("template", ["{0.__class__.__mro__}", "{0.__class__}", "{0[0]}", "{x.real}",
                                      "{:{0.__class__}}"])
def test_cant_read_attributes_through_str_format(run, template):
    runtime_refusal(run(f"""
        def script(callback):
            callback(None, "{template}".format([1], x=1))
    """), "SandboxError", "format fields may only name an argument")


def test_cant_read_attributes_through_format_map(run):
    runtime_refusal(run("""
        def script(callback):
            callback(None, "{k.__class__}".format_map({"k": 1}))
    """), "SandboxError")


def test_cant_read_attributes_through_unbound_str_format(run):
    runtime_refusal(run("""
        def script(callback):
            f = str.format
            callback(None, f("{0.__class__}", 1))
    """), "SandboxError")


def test_cant_read_attributes_through_str_subclass_format(run):
    runtime_refusal(run("""
        class S(str):
            pass
        def script(callback):
            callback(None, S("{0.__class__}").format(1))
    """), "SandboxError")


def test_cant_import_string_formatter(run):
    compile_refusal(run("""
        import string
        def script(callback):
            callback(None, string.Formatter().get_field("0.__class__", [1], {}))
    """), 'import of "string" is not allowed')


def test_plain_format_still_works(run):
    out = run("""
        def script(callback):
            callback(None, "{0} {name!r} {0:>3}".format(1, name="n"))
    """)
    assert out["result"] == "1 'n'   1"


# --------------------------------------------------------------------------- AttributeError.obj


def test_cant_read_attribute_error_obj(run):
    runtime_refusal(run("""
        import json
        def script(callback):
            try:
                json.nope
            except AttributeError as e:
                callback(None, str(e.obj))
    """), "AttributeError", "'obj'")


# --------------------------------------------------------------------------- except*


def test_cant_use_except_star(run):
    compile_refusal(run("""
        def script(callback):
            try:
                pass
            except* ValueError:
                pass
            callback()
    """), "except* is not allowed")


# --------------------------------------------------------------------------- guard shadowing


@pytest.mark.parametrize("signature", [
    "def f(_getattr_=None, /):",
    "def f(_getiter_, /):",
    "def f(*, _write_=None):",
    "def f(*_getitem_):",
    "def f(**_apply_):",
])
def test_cant_shadow_guard_with_parameter(run, signature):
    compile_refusal(run(f"""
        {signature}
            return 1
        def script(callback):
            callback(None, f())
    """), "starts with \"_\"")


@pytest.mark.parametrize("found", ["8.1", "8.0", "7.4", "10.0", "9"])
def test_cant_load_the_policy_on_a_restrictedpython_outside_9x(found):
    # 8.x compiles positional-only parameters that shadow the guards: the
    # policy module refuses to load on it (layer: sandbox.policy import check)
    from scriptvisor.sandbox import policy
    with pytest.raises(ImportError, match=f"RestrictedPython {found} is installed; the sandbox needs >=9.0,<10"):
        policy._check_restrictedpython(found)
    policy._check_restrictedpython("9.0")
    policy._check_restrictedpython("9.3.1")


@pytest.mark.parametrize("lam", ["lambda _getattr_=getattr, /: 1", "lambda _getiter_=iter: 1",
                                 "lambda *, _write_=None: 1"])
def test_cant_shadow_guard_with_lambda_parameter(run, lam):
    compile_refusal(run(f"""
        def script(callback):
            f = {lam}
            callback(None, f())
    """), "starts with \"_\"")


@pytest.mark.parametrize("stmt", ["_getattr_ = getattr", "for _getiter_ in [iter]: pass",
                                  "import json as _getattr_", "from json import dumps as _write_",
                                  "with x as _getitem_: pass", "(_getattr_ := 1)",
                                  "global _getattr_", "del _getattr_"])
def test_cant_rebind_guard_names(run, stmt):
    err = error_of(run(f"""
        def script(callback):
            {stmt}
            callback()
    """))
    assert err["code"] == "compile_error"


# --------------------------------------------------------------------------- C-level helpers


@pytest.mark.parametrize("module", ["operator", "functools", "gc", "os", "sys", "subprocess", "ctypes",
                                    "importlib", "pickle", "socket", "logging", "shutil", "typing",
                                    "dataclasses", "pathlib", "inspect", "builtins", "string"])
def test_cant_import_modules(run, module):
    compile_refusal(run(f"""
        import {module}
        def script(callback):
            callback()
    """), f'import of "{module}" is not allowed')


def test_cant_import_modules_at_runtime_through_hook(run):
    # the compiler stops the import statement; the hook is the second wall
    from scriptvisor.sandbox import guards
    for name in ("os", "operator", "functools", "gc", "json.decoder"):
        with pytest.raises(ImportError):
            guards.guarded_import(name)
    with pytest.raises(ImportError):
        guards.guarded_import("json", fromlist=("decoder",))
    with pytest.raises(ImportError):
        guards.guarded_import("json", level=1)


@pytest.mark.parametrize("stmt", ["import _strptime", "from _strptime import _strptime_datetime",
                                  "import _strptime as s"])
def test_cant_import_host_lazy_module_by_name(run, stmt):
    # datetime.strptime's C code imports _strptime through the script's
    # __import__ (3.13); the script itself cannot name it (compiler layer)
    err = error_of(run(f"""
        {stmt}
        def script(callback):
            callback()
    """))
    assert err["code"] == "compile_error", err
    assert any("_strptime" in e for e in err["errors"]), err["errors"]


def test_cant_get_host_lazy_module_from_the_import_hook():
    # the hook lets the interpreter's own lazy import through, but hands back
    # None, never the module; relative forms and unloaded modules are refused
    from scriptvisor.sandbox import guards
    from scriptvisor.sandbox.facades import stdlib  # noqa: F401  (what the zygote preloads)
    assert "_strptime" in sys.modules
    assert guards.guarded_import("_strptime", None, None, ["__doc__"], 0) is None
    assert guards.guarded_import("_strptime") is None
    with pytest.raises(ImportError):
        guards.guarded_import("_strptime", level=1)
    with pytest.raises(ImportError):
        guards.guarded_import("_datetime")


def test_strptime_runs_through_the_facade_on_every_python(run):
    out = run("""
        from datetime import datetime
        def script(callback):
            d = datetime.strptime("2024-02-29 23:59:58", "%Y-%m-%d %H:%M:%S")
            callback(None, [d.isoformat(), datetime.strptime("5", "%d").day])
    """)
    assert out["ok"], out
    assert out["result"] == ["2024-02-29T23:59:58", 5]


@pytest.mark.parametrize("stmt", ["from json import decoder", "from log import os",
                                  "from re import _regex", "from time import sys"])
def test_cant_import_submodules_or_hidden_names_of_facades(run, stmt):
    err = error_of(run(f"""
        {stmt}
        def script(callback):
            callback()
    """))
    assert err["code"] in ("compile_error", "script_error")
    if err["code"] == "script_error":
        assert err["name"] == "ImportError"


def test_cant_import_star(run):
    compile_refusal(run("""
        from json import *
        def script(callback):
            callback()
    """), '"*" imports are not allowed')


def test_cant_import_relative(run):
    compile_refusal(run("""
        from . import json
        def script(callback):
            callback()
    """), "relative imports are not allowed")


# --------------------------------------------------------------------------- C-iterating builtins


ITERATING = ["tuple", "list", "sorted", "set", "frozenset", "enumerate", "reversed", "sum", "any",
             "all", "min", "max", "bytes", "bytearray", "iter", "dict"]


@pytest.fixture
def leaky_runner():
    """A runner whose global_ holds a host iterable that yields a frame object."""
    runner = make_runner()
    runner.global_["leaky"] = LeakyIterable()
    return runner


@pytest.mark.parametrize("expr", [f"{b}(global_['leaky'])" for b in ITERATING] + [
    "zip(global_['leaky'])", "list(map(str, global_['leaky']))", "list(filter(None, global_['leaky']))",
    "','.join(global_['leaky'])", "str.join(',', global_['leaky'])", "[*global_['leaky']]",
    "(lambda *a: a)(*global_['leaky'])", "{**global_['leaky']}", "dict(**global_['leaky'])",
    "[x for x in global_['leaky']]", "global_['leaky']['k']",
])
def test_cant_pull_frames_through_iteration(leaky_runner, expr):
    out = invoke(leaky_runner, f"""
        def script(callback):
            x = {expr}
            if not isinstance(x, (str, int)):
                x = list(x)
            callback(None, str(x))
    """)
    runtime_refusal(out, "SandboxError", "frame objects are not available")


def test_cant_pull_frames_through_unpacking(leaky_runner):
    out = invoke(leaky_runner, """
        def script(callback):
            a, = global_['leaky']
            callback(None, str(a))
    """)
    runtime_refusal(out, "SandboxError")


def test_cant_pull_frames_through_inplace_add(leaky_runner):
    out = invoke(leaky_runner, """
        def script(callback):
            x = []
            x += global_['leaky']
            callback(None, str(x))
    """)
    runtime_refusal(out, "SandboxError")


def test_cant_pull_frames_through_sort_key(leaky_runner):
    out = invoke(leaky_runner, """
        def script(callback):
            seen = []
            sorted(global_['leaky'], key=lambda v: seen.append(v) or 0)
            callback(None, str(seen))
    """)
    runtime_refusal(out, "SandboxError")


# --------------------------------------------------------------------------- lying str subclass


def test_cant_pass_lying_str_subclass_as_attribute_name(run):
    out = run("""
        class Liar(str):
            def startswith(self, prefix):
                return False
            def __eq__(self, other):
                return False
        def script(callback):
            callback(None, str(getattr((), Liar("__class__"))))
    """)
    runtime_refusal(out, "AttributeError", "'__class__' is not allowed")


def test_cant_pass_lying_str_subclass_to_hasattr(run):
    out = run("""
        class Liar(str):
            def startswith(self, prefix):
                return False
        def script(callback):
            callback(None, hasattr(1, Liar("__class__")))
    """)
    assert out["result"] is False


def test_cant_pass_non_str_attribute_name(run):
    runtime_refusal(run("""
        def script(callback):
            callback(None, getattr(1, 5))
    """), "TypeError", "attribute name must be a string")


# --------------------------------------------------------------------------- injected objects


@pytest.mark.parametrize("target", ["callback", "configuration", "global_", "ValidationError",
                                    "WrongUsernameOrPasswordError", "ValidationError('a', 'b')", "len",
                                    "sorted", "configuration.get"])
@pytest.mark.parametrize("attr", ["__self__", "__closure__", "__globals__", "__func__", "__dict__",
                                  "__module__", "__init__", "__wrapped__", "__code__", "__class__"])
def test_cant_reach_host_through_injected_objects(run, target, attr):
    runtime_refusal(run(f"""
        def script(callback):
            callback(None, str(getattr({target}, "{attr}")))
    """, configuration={"a": 1}), "AttributeError", "is not allowed")


@pytest.mark.parametrize("target", ["callback", "configuration", "ValidationError('a', 'b')",
                                    "json", "time", "re", "log", "re.compile('a')"])
def test_cant_write_to_injected_or_facade_objects(run, target):
    out = run(f"""
        import json, time, re, log
        def script(callback):
            o = {target}
            o.x = 1
            callback()
    """, configuration={"a": 1})
    runtime_refusal(out, "TypeError", "cannot be modified by scripts")


def test_cant_replace_facade_functions(run):
    out = run("""
        import json
        def script(callback):
            json.dumps = lambda x: "pwned"
            callback()
    """)
    runtime_refusal(out, "TypeError", "cannot be modified by scripts")


def test_cant_mutate_configuration_through_reflected_eq(run):
    """types.MappingProxyType hands its dict to the other operand's __eq__; ours must not."""
    out = run("""
        class Grab:
            def __init__(self):
                self.got = None
            def __eq__(self, other):
                self.got = other
                return False
        def script(callback):
            g = Grab()
            configuration == g
            try:
                g.got["DB"] = "evil"
            except TypeError:
                pass
            callback(None, configuration["DB"])
    """, configuration={"DB": "orig"})
    assert out["result"] == "orig"


def test_cant_read_dict_view_mapping(run):
    runtime_refusal(run("""
        def script(callback):
            callback(None, str(global_.keys().mapping))
    """), "AttributeError", "'mapping'")


# --------------------------------------------------------------------------- numbers and recursion


def test_cant_convert_huge_int_to_str(run):
    runtime_refusal(run("""
        def script(callback):
            callback(None, str(10 ** 5000))
    """), "ValueError", "4300")


def test_cant_crash_with_deep_recursion(run):
    runtime_refusal(run("""
        def f(n):
            return f(n + 1) + 1
        def script(callback):
            f(0)
    """), "RecursionError")


def test_cant_use_catastrophic_regex_past_deadline(run):
    out = run("""
        import re
        def script(callback):
            callback(None, bool(re.match("(a|aa)+$", "a" * 60 + "b")))
    """, timeout=0.2)
    runtime_refusal(out, "TimeoutError")


def test_cant_reach_raw_pattern_through_regex_match(run):
    runtime_refusal(run("""
        import re
        def script(callback):
            m = re.match("a", "a")
            callback(None, str(m.re))
    """), "AttributeError")
