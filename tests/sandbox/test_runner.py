"""Every invocation outcome of action-scripts.md, through Runner.invoke in-process."""

from __future__ import annotations

import pytest

from scriptvisor.sandbox import context
from tests.sandbox.helpers import error_of, invoke, make_runner


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("call, expected", [
    ("callback(None, {'user_id': '1', 'email': 'a@b.c'})", {"user_id": "1", "email": "a@b.c"}),
    ("callback()", None),
    ("callback(None)", None),
    ("callback(None, None)", None),
    ("callback(None, True)", True),
    ("callback(None, (1, 2))", [1, 2]),
])
def test_callback_success_forms(run, call, expected):
    out = run(f"""
        def script(callback):
            {call}
    """)
    assert out == {"ok": True, "result": expected, "error": None, "logs": []}


def test_arguments_are_passed_before_callback(run):
    out = run("""
        def login(email, password, callback):
            callback(None, {"user_id": email, "n": len(password)})
    """, "a@b.c", "secret", fn="login")
    assert out["result"] == {"user_id": "a@b.c", "n": 6}


def test_function_defaults_to_file_stem(runner):
    out = invoke(runner, "def login(e, cb):\n    cb(None, e)\n", "x", path="/t/login.py")
    assert out["ok"] and out["result"] == "x"


def test_callback_is_also_an_injected_name(run):
    out = run("""
        def script(cb):
            callback(None, cb is callback)
    """)
    assert out["result"] is True


# --------------------------------------------------------------------------- callback(err)


def test_callback_wrong_username_or_password_with_user(run):
    err = error_of(run("""
        def script(callback):
            callback(WrongUsernameOrPasswordError("a@b.c", "bad password"))
    """))
    assert err == {"code": "script_error", "name": "WrongUsernameOrPasswordError",
                   "message": "bad password", "email_or_id": "a@b.c", "user_known": True,
                   "source": "callback"}


def test_callback_wrong_username_or_password_without_user(run):
    err = error_of(run("""
        def script(callback):
            callback(WrongUsernameOrPasswordError())
    """))
    assert err["email_or_id"] is None and err["user_known"] is False
    assert err["name"] == "WrongUsernameOrPasswordError"


def test_callback_validation_error_carries_code(run):
    err = error_of(run("""
        def script(callback):
            callback(ValidationError("user_exists", "already there"))
    """))
    assert err == {"code": "script_error", "name": "ValidationError", "message": "already there",
                   "validation_code": "user_exists", "source": "callback"}


def test_callback_unauthorized_error(run):
    err = error_of(run("""
        def script(callback):
            callback(UnauthorizedError("blocked"))
    """))
    assert err == {"code": "script_error", "name": "UnauthorizedError", "message": "blocked",
                   "source": "callback"}


def test_callback_plain_exception(run):
    err = error_of(run("""
        def script(callback):
            callback(Exception("db down"))
    """))
    assert err == {"code": "script_error", "name": "Exception", "message": "db down", "source": "callback"}


def test_callback_string_error_is_generic_error(run):
    err = error_of(run("""
        def script(callback):
            callback("something broke")
    """))
    assert err == {"code": "script_error", "name": "Error", "message": "something broke", "source": "callback"}


def test_callback_script_defined_error_subclass(run):
    err = error_of(run("""
        class DuplicateUser(ValidationError):
            pass
        def script(callback):
            callback(DuplicateUser("user_exists", "dup"))
    """))
    assert err["name"] == "DuplicateUser" and err["validation_code"] == "user_exists"


def test_injected_errors_can_be_raised(run):
    err = error_of(run("""
        def script(callback):
            raise ValidationError("bad_email", "no @")
    """))
    assert err["code"] == "script_error" and err["source"] == "exception"
    assert err["name"] == "ValidationError" and err["validation_code"] == "bad_email"


# --------------------------------------------------------------------------- invalid results


@pytest.mark.parametrize("value", ["object()", "float('nan')", "{(1, 2): 3}", "lambda: 1", "b'bytes'"])
def test_non_json_value_is_invalid_result(run, value):
    err = error_of(run(f"""
        def script(callback):
            callback(None, {value})
    """))
    assert err["code"] == "invalid_result" and err["name"] == "InvalidResult"


def test_result_over_limit_is_invalid_result():
    runner = make_runner(result_bytes=100)
    err = error_of(invoke(runner, """
        def script(callback):
            callback(None, "x" * 200)
    """))
    assert err["code"] == "invalid_result"
    assert err["size"] == 202 and err["limit"] == 100


def test_configuration_can_be_returned_as_json(run):
    out = run("""
        def script(callback):
            callback(None, configuration)
    """, configuration={"A": {"b": [1, 2]}})
    assert out["result"] == {"A": {"b": [1, 2]}}


# --------------------------------------------------------------------------- stall / double


def test_return_without_callback_is_stall(run):
    err = error_of(run("""
        def script(callback):
            return 42
    """))
    assert err == {"code": "stall", "name": "Stall", "message": "the function returned without calling callback"}


def test_double_callback_keeps_first_outcome(run):
    err = error_of(run("""
        def script(callback):
            callback(None, {"user_id": "1"})
            callback(None, {"user_id": "2"})
            callback(Exception("third"))
    """))
    assert err["code"] == "double_callback" and err["name"] == "DoubleCallback"
    assert err["calls"] == 3
    assert err["first"] == {"ok": True, "result": {"user_id": "1"}, "error": None}


def test_double_callback_first_was_error(run):
    err = error_of(run("""
        def script(callback):
            callback(ValidationError("x", "y"))
            callback(None, 1)
    """))
    assert err["first"]["error"]["validation_code"] == "x"


def test_exception_after_callback_keeps_result_and_logs_it(run):
    out = run("""
        def script(callback):
            callback(None, 1)
            raise ValueError("late")
    """)
    assert out["ok"] is True and out["result"] == 1
    assert out["logs"] == ["[scriptvisor: exception after callback: ValueError: late]"]


def test_callback_kept_in_global_is_refused_in_next_invocation(runner):
    first = invoke(runner, """
        def script(callback):
            global_["cb"] = callback
            callback(None, 1)
    """)
    assert first["ok"]
    second = invoke(runner, """
        def script(callback):
            try:
                global_["cb"](None, "stolen")
            except RuntimeError as e:
                callback(None, str(e))
    """)
    assert second["result"] == "callback of an invocation that has already finished"


# --------------------------------------------------------------------------- exceptions


def test_uncaught_exception_has_script_only_traceback(run):
    err = error_of(run("""
        import json

        def helper(text):
            return json.loads(text)

        def script(callback):
            helper("{not json")
    """))
    assert err["code"] == "script_error" and err["source"] == "exception"
    assert err["name"] == "JSONDecodeError"
    assert err["traceback"] == [
        {"file": "script.py", "line": 8, "function": "script"},
        {"file": "script.py", "line": 5, "function": "helper"},
    ]


def test_exception_at_module_level(run):
    err = error_of(run("""
        x = 1 // 0
        def script(callback):
            callback()
    """))
    assert err["name"] == "ZeroDivisionError"
    assert err["traceback"] == [{"file": "script.py", "line": 2, "function": "<module>"}]


def test_deep_recursion_is_recursion_error(run):
    err = error_of(run("""
        def down(n):
            return down(n + 1)
        def script(callback):
            down(0)
    """))
    assert err["code"] == "script_error" and err["name"] == "RecursionError"
    assert err["traceback"][0] == {"file": "script.py", "line": 5, "function": "script"}
    assert err["traceback"][1]["function"] == "down" and err["traceback"][1]["repeat"] > 100


def test_long_message_is_cut(run):
    err = error_of(run("""
        def script(callback):
            raise ValueError("x" * 100000)
    """))
    assert len(err["message"]) < 8300 and err["message"].endswith("characters cut]")


# --------------------------------------------------------------------------- compile / not found


def test_syntax_error_is_compile_error_with_position(run):
    err = error_of(run("def script(callback):\n    x = (1,\n"))
    assert err["code"] == "compile_error" and err["name"] == "CompileError"
    assert err["line"] == 2 and err["column"] == 9
    assert err["errors"] and "never closed" in err["message"]


def test_policy_violations_are_all_reported(run):
    err = error_of(run("""
        def script(callback):
            a = callback.__class__
            b = callback._x
            import os
    """))
    assert err["code"] == "compile_error"
    assert err["line"] == 3
    assert len(err["errors"]) == 3
    assert any('"os"' in e for e in err["errors"])


def test_missing_function_is_not_found(run):
    err = error_of(run("def other(callback):\n    callback()\n"))
    assert err["code"] == "not_found" and err["name"] == "NotFound" and err["function"] == "script"


@pytest.mark.parametrize("binding", ["script = 42", "script = len", "from json import dumps as script"])
def test_non_function_binding_is_not_found(run, binding):
    assert error_of(run(binding + "\n"))["code"] == "not_found"


def test_compiled_code_is_cached_per_path_and_hash(runner):
    source = "def script(callback):\n    callback(None, 1)\n"
    runner.invoke(path="/a/script.py", source=source, source_hash="h1", function="", args=[],
                  configuration={}, timeout=5)
    first = runner.compiled("/a/script.py", source, "h1")
    runner.invoke(path="/a/script.py", source=source, source_hash="h1", function="", args=[],
                  configuration={}, timeout=5)
    assert runner.compiled("/a/script.py", source, "h1") is first
    assert runner.compiled("/b/script.py", source, "h1") is not first


# --------------------------------------------------------------------------- state


def test_global_persists_within_runner_and_not_across(runner):
    source = """
        def script(callback):
            global_["n"] = global_.get("n", 0) + 1
            callback(None, global_["n"])
    """
    assert invoke(runner, source)["result"] == 1
    assert invoke(runner, source)["result"] == 2
    assert invoke(make_runner(), source)["result"] == 1


def test_module_state_is_fresh_each_invocation(runner):
    source = """
        cache = []
        def script(callback):
            cache.append(1)
            callback(None, len(cache))
    """
    assert invoke(runner, source)["result"] == 1
    assert invoke(runner, source)["result"] == 1


def test_configuration_is_readable(run):
    out = run("""
        def script(callback):
            callback(None, [configuration["DB"], configuration.get("missing", "d"),
                            configuration["nested"]["list"][1], sorted(configuration.keys()),
                            "DB" in configuration, len(configuration)])
    """, configuration={"DB": "postgres://", "nested": {"list": [1, 2]}})
    assert out["result"] == ["postgres://", "d", 2, ["DB", "nested"], True, 2]


@pytest.mark.parametrize("mutation", [
    'configuration["DB"] = "x"',
    'del configuration["DB"]',
    'configuration["nested"]["k"] = 1',
    'configuration["nested"]["list"].append(3)',
    'configuration.update({"DB": "x"})',
    'configuration.x = 1',
    'dict.update(configuration, {"DB": "x"})',
])
def test_configuration_is_read_only(run, mutation):
    out = run(f"""
        def script(callback):
            try:
                {mutation}
            except Exception as e:
                callback(None, ["refused", configuration["DB"], dict(configuration["nested"])])
                return
            callback(None, "mutated")
    """, configuration={"DB": "orig", "nested": {"list": [1, 2]}})
    assert out["ok"], out
    assert out["result"][1:] == ["orig", {"list": [1, 2]}]


def test_current_invocation_is_set_during_call_and_cleared_after(run):
    out = run("""
        import time
        def script(callback):
            callback(None, time.remaining())
    """, timeout=7.0)
    assert 0 < out["result"] <= 7.0
    with pytest.raises(RuntimeError):
        context.current()


# --------------------------------------------------------------------------- output


def test_print_and_log_are_captured_in_order(run):
    out = run("""
        import log
        def script(callback):
            print("hello", 1, sep="-")
            log.info("connected", 2)
            print("partial", end="")
            log.error("failed")
            callback()
    """)
    assert out["logs"] == ["hello-1", "[INFO] connected 2", "partial", "[ERROR] failed"]


def test_printed_variable_returns_function_output(run):
    out = run("""
        def script(callback):
            print("a")
            print("b")
            callback(None, printed)
    """)
    assert out["result"] == "a\nb\n"


@pytest.mark.parametrize("count", [10_000, 100_000])
def test_output_marker_counts_every_dropped_line(count):
    runner = make_runner()
    out = invoke(runner, f"""
        def script(callback):
            for i in range({count}):
                print(i)
            callback()
    """)
    shown = len(out["logs"]) - 1
    marker = out["logs"][-1]
    assert marker.startswith(f"[scriptvisor: output truncated, {count - shown} lines dropped"), marker


def test_output_is_capped_with_marker():
    runner = make_runner(output_bytes=100)
    out = invoke(runner, """
        def script(callback):
            for i in range(50):
                print("0123456789")
            callback()
    """)
    assert out["ok"]
    # 9 whole lines and one character of the 10th are shown; the other 40 are not
    assert out["logs"][-1] == "[scriptvisor: output truncated, 40 lines dropped (450 bytes over the 100-byte limit)]"
    assert len("\n".join(out["logs"][:-1])) == 100  # the first 100 bytes, cut mid-line


def test_print_to_file_is_refused(run):
    err = error_of(run("""
        def script(callback):
            print("x", file=callback)
    """))
    assert err["name"] == "TypeError"


def test_output_of_failed_invocation_is_kept(run):
    out = run("""
        def script(callback):
            print("before")
            raise KeyError("k")
    """)
    assert out["logs"] == ["before"] and out["error"]["name"] == "KeyError"


# --------------------------------------------------------------------------- language features


def test_ordinary_python_works(run):
    out = run("""
        import json, math
        from datetime import datetime, timezone

        class User:
            def __init__(self, email):
                self.email = email
                self.tags = []

        def script(callback):
            u = User("a@b.c")
            u.tags.append("x")
            a, (b, c) = 1, [2, 3]
            squares = {n: n * n for n in range(4)}
            total = 0
            for k, v in squares.items():
                total += v
            words = ", ".join(sorted({"b", "a"}))
            first, *rest = [1, 2, 3]
            merged = {**squares, "z": 0}
            callback(None, {
                "email": u.email, "tags": u.tags, "abc": [a, b, c], "total": total,
                "words": words, "rest": rest, "merged": len(merged), "sq": math.isqrt(16),
                "fmt": "{} {name}".format(1, name="n"), "f": f"{total:04d}",
                "year": datetime.fromtimestamp(0, timezone.utc).year,
                "zip": list(zip([1, 2], "ab")), "minmax": [min([3, 1]), max(3, 1)],
                "json": json.loads(json.dumps({"k": [1]})),
                "gen": sum(x for x in range(5)), "rev": list(reversed([1, 2])),
            })
    """)
    assert out["ok"], out
    assert out["result"] == {
        "email": "a@b.c", "tags": ["x"], "abc": [1, 2, 3], "total": 14, "words": "a, b",
        "rest": [2, 3], "merged": 5, "sq": 4, "fmt": "1 n", "f": "0014", "year": 1970,
        "zip": [[1, "a"], [2, "b"]], "minmax": [1, 3], "json": {"k": [1]}, "gen": 10, "rev": [2, 1],
    }


def test_int_str_digit_limit_is_kept(run):
    err = error_of(run("""
        def script(callback):
            callback(None, str(10 ** 5000))
    """))
    assert err["name"] == "ValueError" and "4300" in err["message"]


def test_invoke_never_raises_on_bad_input(runner):
    out = runner.invoke(path="/t/x.py", source=None, source_hash="", function="", args=[],  # type: ignore[arg-type]
                        configuration={}, timeout=1)
    assert error_of(out)["code"] in ("compile_error", "script_error")


@pytest.mark.parametrize(("args", "words"), [
    ([], "login() takes 2 argument(s) (email, password) before callback, but 0 were given"),
    (["a"], "but 1 was given"),
    (["a", "b", "c"], "but 3 were given"),
])
def test_wrong_argument_count_is_told_without_counting_the_callback(args, words):
    runner = make_runner()
    out = invoke(runner, """
        def login(email, password, callback):
            callback(None, email)
    """, *args, fn="login")
    err = error_of(out)
    assert err["name"] == "TypeError" and words in err["message"]
    assert "callback'" not in err["message"]  # never "missing ... 'callback'"


def test_memory_error_names_the_memory_limit():
    runner = make_runner(memory_mb=96)
    out = invoke(runner, """
        def script(callback):
            x = "a" * (10 ** 13)
            callback(None, len(x))
    """)
    err = error_of(out)
    assert err["name"] == "MemoryError"
    assert err["message"] == "out of memory: this worker's memory limit is 96 MiB (limits.memory_mb in tenant.toml)"


# --------------------------------------------------------------------------- per-call fast paths
# The runner takes shortcuts on the per-call path (scalar callback values,
# the arity check, the globals template); these pin that the shortcuts give
# what the general path gives.


@pytest.mark.parametrize("expr, expected", [
    ("'plain'", "plain"),
    ("'q\"b\\\\s\\n\\x00\\u2028é' + chr(0x1F600)", "q\"b\\s\n\x00\u2028é\U0001F600"),
    ("''", ""),
    ("0", 0),
    ("-7", -7),
    ("10 ** 30", 10 ** 30),
    ("1.5", 1.5),
    ("-0.0", -0.0),
    ("1e16", 1e16),
    ("False", False),
])
def test_callback_scalar_values_come_back_as_given(run, expr, expected):
    out = run(f"""
        def script(callback):
            callback(None, {expr})
    """)
    assert out == {"ok": True, "result": expected, "error": None, "logs": []}
    assert type(out["result"]) is type(expected)
    assert str(out["result"]) == str(expected)  # -0.0 keeps its sign


@pytest.mark.parametrize("value, size", [
    ("'é' * 4", 10), ("'é' * 5", 12), ("12345678", 8), ("123456789012", 12), ("[1, 2, 3, 4]", 9),
])
def test_result_limit_counts_utf8_bytes_of_json(value, size):
    runner = make_runner(result_bytes=10)
    out = invoke(runner, f"""
        def script(callback):
            callback(None, {value})
    """)
    if size <= 10:
        assert out["ok"], out
    else:
        err = error_of(out)
        assert err["code"] == "invalid_result" and err["size"] == size and err["limit"] == 10


@pytest.mark.parametrize("value", ["chr(0xD800)", "['ok', chr(0xDFFF)]", "float('inf')", "-float('inf')",
                                   "[float('nan')]", "10 ** 5000"])
def test_values_json_or_utf8_cannot_carry_are_invalid_results(run, value):
    err = error_of(run(f"""
        def script(callback):
            callback(None, {value})
    """))
    assert err["code"] == "invalid_result"
    assert err["message"].startswith("callback value is not JSON-serialisable: ")


def test_container_result_is_copied_when_callback_is_called(run):
    out = run("""
        def script(callback):
            value = {"list": [1]}
            callback(None, value)
            value["list"].append(2)
            value["late"] = True
    """)
    assert out["result"] == {"list": [1]}


def test_module_functions_and_configuration_are_new_objects_each_invocation(runner):
    source = """
        def script(callback):
            seen = "script" in global_
            same = [seen and global_["script"] is script,
                    seen and global_["configuration"] is configuration,
                    seen and global_["configuration"] == configuration]
            global_["script"] = script
            global_["configuration"] = configuration
            callback(None, same)
    """
    assert invoke(runner, source, configuration={"A": 1})["result"] == [False, False, False]
    assert invoke(runner, source, configuration={"A": 1})["result"] == [False, False, True]


def test_function_kept_in_global_keeps_its_own_module_names(runner):
    source = """
        marker = configuration["M"]
        def helper():
            return marker
        def script(callback):
            if "helper" not in global_:
                global_["helper"] = helper
            callback(None, [global_["helper"](), helper()])
    """
    assert invoke(runner, source, configuration={"M": "one"})["result"] == ["one", "one"]
    assert invoke(runner, source, configuration={"M": "two"})["result"] == ["one", "two"]


@pytest.mark.parametrize("params", [
    "callback", "a, callback", "a, b, callback", "a, b=1, callback=None", "a=1, callback=None",
    "a, b=1, c=2, callback=None", "a, *rest", "*rest", "", "a=1, b=2",
])
@pytest.mark.parametrize("given", [0, 1, 2, 3, 4])
def test_arity_check_agrees_with_python_binding(params, given):
    import inspect

    namespace: dict[str, object] = {}
    exec(f"def f({params}): pass", namespace)  # noqa: S102 - test-defined signature
    fn = namespace["f"]
    try:
        inspect.signature(fn).bind(*range(given), "callback")
        binds = True
    except TypeError:
        binds = False
    from scriptvisor.sandbox.runner import _arity_problem
    problem = _arity_problem(fn, "f", given)
    # Only the callback-last rule is stricter than Python: a signature with no
    # parameter for the callback is refused even when Python could bind it.
    assert (problem is None) == (binds and (bool(fn.__code__.co_argcount) or "*" in params)), problem
