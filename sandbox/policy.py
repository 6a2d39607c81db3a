"""The sandbox's language policy, in one place.

* ``ScriptPolicy``: what the compiler refuses or rewrites, on top of
  RestrictedPython 9's ``RestrictingNodeTransformer`` (which already refuses
  every name/attribute starting with ``_``, ``except*``, star imports,
  ``async``, ``match``, ``nonlocal``, ``exec``/``eval`` calls and the
  inspect attributes such as ``gi_frame``; each of those is pinned by a
  ``test_cant_*`` so an upgrade that loosens it fails loudly).
* ``BUILTINS``: every builtin a script gets, each with the reason.
* ``GUARDS``: the hooks the compiled code calls (implemented in ``sandbox.guards``).
* Limits: sizes and depths, each with the reason for its value.

Deny by default: a builtin or syntax that is not listed here is unavailable.
"""

from __future__ import annotations

import ast
import builtins as _b
from dataclasses import dataclass, field
from importlib.metadata import version as _dist_version
from typing import Any

from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations

#: RestrictedPython releases this policy is written and tested against.  8.x
#: compiles positional-only parameters named like the guard hooks
#: (``def f(_getattr_=None, /)``), which shadow them; pip enforces the range
#: from pyproject.toml, this check also covers an environment assembled by hand.
RESTRICTEDPYTHON_RANGE = ((9, 0), (10, 0))


def _check_restrictedpython(found: str) -> None:
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    low, high = RESTRICTEDPYTHON_RANGE
    if len(parts) < 2 or not low <= parts < high:
        raise ImportError(f"RestrictedPython {found} is installed; the sandbox needs "
                          f">={low[0]}.{low[1]},<{high[0]} (pip install -r requirements/lock.txt)")


_check_restrictedpython(_dist_version("RestrictedPython"))

from scriptvisor.sandbox import guards, wire

__all__ = [
    "BUILTINS",
    "GUARDS",
    "CompileFailure",
    "ScriptPolicy",
    "compile_script",
    "make_builtins",
]

# --------------------------------------------------------------------------
# limits

#: Python frames a script may nest. Deep enough for real code, far below the
#: depth at which the C stack could overflow (a RecursionError, not a segfault).
RECURSION_LIMIT = 1000
#: Compiled scripts kept per worker (LRU by (path, source hash)).
COMPILE_CACHE_SIZE = 256
#: Largest script source accepted (characters). Action scripts are small.
MAX_SOURCE_CHARS = 1_000_000
#: What the runner hands the worker must pass the supervisor's checks of a
#: result frame (the caps in ``sandbox.wire``: log lines, error name and
#: message length, strict UTF-8). A frame that fails them gets the worker
#: killed as hostile (protocol_error), so the runner clips to these, well
#: inside those caps, before sending. (Output and result sizes per
#: invocation are ``wire.WorkerLimits``.)
MAX_LOG_LINES = wire.MAX_LOG_LINES // 2
ERROR_NAME_CHARS = wire.MAX_ERROR_NAME - 56
ERROR_TEXT_CHARS = wire.MAX_ERROR_TEXT // 4
#: Items kept of any list inside an error (compile problems, traceback entries).
ERROR_LIST_ITEMS = 100
#: Longest regular expression pattern (characters): patterns are code.
REGEX_MAX_PATTERN = 4096
#: Longest string a regular expression may scan (characters).
REGEX_MAX_INPUT = 1_000_000
#: Floor for the regex match timeout so a nearly expired call fails cleanly.
REGEX_MIN_TIMEOUT = 0.001
#: A match must give up before the supervisor's SIGKILL so the script gets a
#: catchable TimeoutError with its logs. The regex engine checks its clock
#: only every so many steps and was measured overshooting a timeout by ~50%
#: on catastrophic patterns, so a match gets half of (the time left minus a
#: margin of this share, at least REGEX_DEADLINE_MARGIN seconds).
REGEX_DEADLINE_FRACTION = 0.1
REGEX_DEADLINE_MARGIN = 0.1
REGEX_OVERSHOOT_FACTOR = 0.5
#: Match timeout used when no invocation is in progress (import-time code).
REGEX_DEFAULT_TIMEOUT = 1.0
#: Largest JSON text json.loads parses / json.dumps produces (characters).
JSON_MAX_CHARS = 4 * 1024 * 1024
#: Longest time.strftime / datetime format string ("%Y" * 10**6 is a memory bomb).
STRFTIME_MAX_FORMAT = 256
#: Largest secrets.token_* size in bytes.
TOKEN_MAX_BYTES = 4096
#: Largest input to base64 and hash functions (bytes); beyond it, use the database.
BINARY_MAX_BYTES = 16 * 1024 * 1024
#: pbkdf2_hmac iteration cap: OWASP's 600k for SHA-256 fits well below it.
PBKDF2_MAX_ITERATIONS = 5_000_000

# --------------------------------------------------------------------------
# builtins

#: name -> reason, for plain builtins handed over as they are. These are
#: either constructors of immutable values or functions that do not iterate
#: a foreign object in C or look up attributes by a computed name.
_PLAIN_BUILTINS: dict[str, str] = {
    "abs": "number arithmetic",
    "ascii": "repr of a value; script classes cannot override __repr__",
    "bin": "number formatting",
    "bool": "truth value",
    "callable": "inspects nothing but the type slot",
    "chr": "int -> str",
    "complex": "number constructor",
    "divmod": "number arithmetic",
    "float": "number constructor",
    "hash": "hash of a value; needed for dict keys of script classes",
    "hex": "number formatting",
    "int": "number constructor; the int/str digit limit stays at CPython's default",
    "isinstance": "type test; the type object itself is never handed out",
    "issubclass": "type test",
    "len": "size of a container",
    "next": "advances an iterator the script obtained through _getiter_",
    "object": "base class for script classes; its dunders are _-names",
    "oct": "number formatting",
    "ord": "str -> int",
    "pow": "number arithmetic (huge results are stopped by the wall clock and RLIMIT_AS)",
    "range": "lazy integer sequence",
    "repr": "repr of a value; script classes cannot override __repr__",
    "round": "number rounding",
    "slice": "slice objects for _getitem_",
    "str": "text constructor (format/format_map guarded in _getattr_)",
    "NotImplemented": "return value of comparison methods",
    "Ellipsis": "constant",
    # exceptions a script may raise or catch. BaseException, SystemExit,
    # KeyboardInterrupt and GeneratorExit are deliberately absent: a script
    # cannot name them, so `except BaseException` is not expressible.
    "Exception": "base of every error a script may catch or raise",
    "ArithmeticError": "standard error",
    "AssertionError": "raised by assert",
    "AttributeError": "standard error (its .obj is denied by _getattr_)",
    "ConnectionError": "database facades raise it for network failures",
    "IndexError": "standard error",
    "KeyError": "standard error",
    "LookupError": "standard error",
    "MemoryError": "lets a script recover from an allocation it cannot make",
    "NameError": "standard error",
    "NotImplementedError": "standard error",
    "OSError": "database facades raise it for I/O failures",
    "OverflowError": "standard error",
    "RecursionError": "stays catchable; deep recursion never crashes the worker",
    "RuntimeError": "standard error",
    "StopIteration": "iterator protocol",
    "TimeoutError": "regex and database facades raise it when the invocation's time runs out",
    "TypeError": "standard error",
    "UnicodeDecodeError": "standard error",
    "UnicodeEncodeError": "standard error",
    "UnicodeError": "standard error",
    "ValueError": "standard error (also the int/str digit limit)",
    "ZeroDivisionError": "standard error",
}

#: name -> reason, for builtins replaced by guarded versions (sandbox.guards).
_GUARDED_BUILTINS: dict[str, str] = {
    "list": "iterates its argument through _getiter_",
    "tuple": "iterates its argument through _getiter_",
    "set": "iterates its argument through _getiter_",
    "frozenset": "iterates its argument through _getiter_",
    "dict": "reads a mapping through _getattr_/_getitem_, pairs through _getiter_",
    "sorted": "iterates through _getiter_ (the key function sees checked items only)",
    "reversed": "materialises through _getiter_ first",
    "enumerate": "iterates through _getiter_",
    "zip": "iterates every argument through _getiter_",
    "map": "iterates every argument through _getiter_",
    "filter": "iterates through _getiter_",
    "sum": "iterates through _getiter_",
    "any": "iterates through _getiter_",
    "all": "iterates through _getiter_",
    "min": "a single iterable argument goes through _getiter_",
    "max": "a single iterable argument goes through _getiter_",
    "iter": "returns _getiter_'s checked iterator",
    "bytes": "an iterable argument goes through _getiter_",
    "bytearray": "an iterable argument goes through _getiter_",
    "getattr": "the same checks as obj.name (_getattr_)",
    "hasattr": "False for every name _getattr_ refuses",
}

#: Builtins that are NOT available, and why (documentation; nothing reads it).
DENIED_BUILTINS: dict[str, str] = {
    "type": "type(x) leads to the class, type(name, bases, ns) builds classes outside the policy",
    "vars": "exposes __dict__",
    "dir": "lists _-names the guard hides",
    "globals": "the script's globals hold the guard hooks",
    "locals": "frame internals",
    "open": "file system (the database facades are the only I/O)",
    "eval": "runs unrestricted code",
    "exec": "runs unrestricted code",
    "compile": "builds code objects",
    "__import__": "replaced by the facade import hook",
    "memoryview": "memoryview.obj returns the underlying object; raw memory views",
    "breakpoint": "debugger",
    "input": "stdin belongs to the worker protocol",
    "help": "pydoc imports arbitrary modules",
    "id": "object addresses help memory-corruption exploits; nothing needs them",
    "super": "unverified; __init__ is a _-name anyway, so it buys little",
    "classmethod": "unverified descriptor",
    "staticmethod": "unverified descriptor",
    "property": "unverified descriptor",
    "setattr": "attribute stores go through _write_ only",
    "delattr": "attribute deletes go through _write_ only",
    "format": "not needed: f-strings cover it",
    "BaseException": "would let `except BaseException` catch everything",
    "SystemExit": "a script must not end its worker",
    "KeyboardInterrupt": "worker-level signal, not the script's",
    "GeneratorExit": "generator protocol internals",
    "ExceptionGroup": "except* is refused; groups add nothing",
    "exit": "a script must not end its worker",
    "quit": "a script must not end its worker",
}


def make_builtins() -> dict[str, Any]:
    """A fresh builtins dict for script globals (shared by all invocations of one Runner)."""
    table: dict[str, Any] = {name: getattr(_b, name) for name in _PLAIN_BUILTINS}
    wrapped = guards.guarded_builtins()
    table.update({name: wrapped[name] for name in _GUARDED_BUILTINS})
    table["__import__"] = guards.guarded_import  # reached only by the import statement
    table["__build_class__"] = _b.__build_class__  # the class statement; metaclass forced below
    return table


#: Documentation view: every builtin name and the reason it is there.
BUILTINS: dict[str, str] = {**_PLAIN_BUILTINS, **_GUARDED_BUILTINS}

#: The hooks RestrictedPython's compiled code calls, with what each enforces.
GUARDS: dict[str, tuple[Any, str]] = {
    "_getattr_": (guards.guarded_getattr, "no _-names, no frame/code/traceback/format internals; value firewall"),
    "_getitem_": (guards.guarded_getitem, "value firewall on the item"),
    "_getiter_": (guards.guarded_getiter, "value firewall on every item"),
    "_contains_": (guards.guarded_contains, "x in y: y's elements through _getiter_ for script-class x (its __eq__)"),
    "_yield_from_": (guards.guarded_yield_from, "yield from x: x's items through _getiter_ (next() sees them raw)"),
    "_iter_unpack_sequence_": (guards.guarded_iter_unpack, "for a, b in x: unpacking through _getiter_"),
    "_unpack_sequence_": (guards.guarded_unpack, "a, b = x: unpacking through _getiter_"),
    "_write_": (guards.guarded_write, "stores only into script-made dict/list/set/bytearray and script classes"),
    "_inplacevar_": (guards.guarded_inplacevar, "x op= y; list += / dict |= iterate through the guards"),
    "_apply_": (guards.guarded_apply, "f(*a, **k): the compiler already wrapped a and k"),
    "_guarded_mapping_": (guards.guarded_mapping, "**mapping in calls and dict displays"),
    "__metaclass__": (guards.script_class, "records classes the script defines (for _write_)"),
}

# --------------------------------------------------------------------------
# compile-time policy


@dataclass
class CompileFailure:
    """Why a source did not compile: every problem, with the first one's position."""

    problems: list[tuple[int, int, str]] = field(default_factory=list)

    def to_error(self) -> dict[str, Any]:
        line, column, message = self.problems[0]
        return wire.worker_error(
            "compile_error", "CompileError", message, line=line, column=column,
            errors=[f"line {ln}, column {col}: {msg}" for ln, col, msg in self.problems],
        )


class ScriptPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus scriptvisor's rules.

    Additions:
    * imports: only names in ``sandbox.facades.FACADES``, absolute, undotted;
    * list targets unpack through the same guards as tuple targets; a
      starred target is a plain name;
    * ``*x`` in calls and displays iterates through ``_getiter_``, and
      ``**x`` reads through ``_guarded_mapping_`` (both would iterate in C);
    * ``except*`` refused here too, independently of RestrictedPython's version;
    * positions recorded with each problem (line, 1-based column).
    """

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[tuple[int, int, str]] = []

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        line = getattr(node, "lineno", None) or 1
        column = (getattr(node, "col_offset", None) or 0) + 1
        self.problems.append((line, column, info))

    # imports -------------------------------------------------------------
    def _check_facade_name(self, node: ast.AST, module: str | None) -> None:
        from scriptvisor.sandbox.facades import FACADES

        if not module or module not in FACADES:
            self.error(node, f'import of "{module}" is not allowed; importable: '
                             f'{", ".join(sorted(FACADES))}')

    def visit_Import(self, node: ast.Import) -> Any:
        for alias in node.names:
            self._check_facade_name(node, alias.name)
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        if node.level:
            self.error(node, "relative imports are not allowed")
        else:
            self._check_facade_name(node, node.module)
        return super().visit_ImportFrom(node)

    def visit_Global(self, node: ast.Global) -> Any:
        for name in node.names:  # `global _getattr_` names a guard hook
            self.check_name(node, name)
        return self.node_contents_visit(node)

    # syntax refused outright --------------------------------------------
    def visit_TryStar(self, node: ast.AST) -> Any:
        # CPython 3.11-3.13.1 type confusion in except* handling (memory write).
        self.error(node, "except* is not allowed")
        return node

    # C-level unpacking ----------------------------------------------------
    def visit_List(self, node: ast.List) -> Any:
        # A list *target* (`[a, b] = x`, `[*rest] = x`, `for [a, b] in ...`,
        # `with cm as [a]`, `[[n]] = [x]`, comprehensions) unpacks in C exactly
        # like a tuple target, but RestrictedPython guards only ast.Tuple
        # targets.  Rewritten to the tuple target it is equivalent to, it takes
        # the same guarded path (_unpack_sequence_ / _iter_unpack_sequence_:
        # every item, at every nesting level, through _getiter_).  Parents
        # visit their children before they check for ast.Tuple, so the
        # rewrite is in place when they do.
        if isinstance(node.ctx, ast.Store):
            target = ast.Tuple(elts=node.elts, ctx=ast.Store())
            copy_locations(target, node)
            return self.visit(target)
        return super().visit_List(node)

    def visit_Starred(self, node: ast.Starred) -> Any:
        if isinstance(node.ctx, ast.Store) and not isinstance(node.value, ast.Name):
            # `a, *[b] = x` / `a, *(b, c) = x`: the starred list is unpacked
            # again in C, past the unpack guard's spec (RestrictedPython
            # describes nested targets only at fixed positions)
            self.error(node, "a starred target must be a plain name (*rest), "
                             "not a nested sequence; unpack rest in a second statement")
            return node
        node = self.node_contents_visit(node)
        if isinstance(node.ctx, ast.Load):
            node.value = self._hook_call("_getiter_", node.value)
        return node

    def visit_Compare(self, node: ast.Compare) -> Any:
        # `x in y` compares x with every element of y in C; with a script-defined
        # __eq__ on x the elements reach the script: route it through _contains_.
        node = self.node_contents_visit(node)
        if not any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            return node
        if len(node.ops) > 1:
            self.error(node, "chained comparisons with 'in' or 'not in' are not allowed; "
                             "split them with 'and'")
            return node
        call: ast.expr = ast.Call(func=ast.Name("_contains_", ast.Load()),
                                  args=[node.comparators[0], node.left], keywords=[])
        copy_locations(call, node)
        if isinstance(node.ops[0], ast.NotIn):
            call = ast.UnaryOp(op=ast.Not(), operand=call)
            copy_locations(call, node)
        return call

    def visit_Assign(self, node: ast.Assign) -> Any:
        result = super().visit_Assign(node)
        # `l[a:b] = x` iterates x in C (like l.extend(x)): through _getiter_.
        if (result is node and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].slice, ast.Slice)):
            node.value = self._hook_call("_getiter_", node.value)
        return result

    def visit_YieldFrom(self, node: ast.YieldFrom) -> Any:
        # `yield from x` iterates x in C and hands its items to whoever resumes
        # the generator: `next(g)` / `g.send()` never pass through _getiter_.
        node = self.node_contents_visit(node)
        node.value = self._hook_call("_yield_from_", node.value)
        return node

    def visit_keyword(self, node: ast.keyword) -> Any:
        node = self.node_contents_visit(node)
        if node.arg is None:  # f(**mapping)
            node.value = self._hook_call("_guarded_mapping_", node.value)
        return node

    def visit_Dict(self, node: ast.Dict) -> Any:
        node = self.node_contents_visit(node)
        node.values = [self._hook_call("_guarded_mapping_", value) if key is None else value
                       for key, value in zip(node.keys, node.values)]
        return node

    @staticmethod
    def _hook_call(hook: str, value: ast.expr) -> ast.expr:
        """``hook(value)``, placed where ``value`` is (hook: a name from ``GUARDS``)."""
        call = ast.Call(func=ast.Name(hook, ast.Load()), args=[value], keywords=[])
        copy_locations(call, value)
        return call


def compile_script(source: str, filename: str) -> Any:
    """Code object for ``source``, or a ``CompileFailure``. Never raises.

    Runs inside the worker: a compile bomb (deep nesting, huge expressions)
    costs the worker at most a RecursionError/MemoryError, reported here as a
    compile error.
    """
    if not isinstance(source, str):
        return CompileFailure([(1, 1, "source must be text")])
    if len(source) > MAX_SOURCE_CHARS:
        return CompileFailure([(1, 1, f"source is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")])
    try:
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        return CompileFailure([(exc.lineno or 1, exc.offset or 1, f"{type(exc).__name__}: {exc.msg}")])
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        return CompileFailure([(1, 1, f"source too complex to parse ({type(exc).__name__}: {exc})")])
    policy = ScriptPolicy()
    try:
        policy.visit(tree)
    except (RecursionError, MemoryError) as exc:
        return CompileFailure([(1, 1, f"source too deeply nested ({type(exc).__name__})")])
    if policy.problems:
        return CompileFailure(policy.problems)
    try:
        return compile(tree, filename, "exec")
    except SyntaxError as exc:
        return CompileFailure([(exc.lineno or 1, exc.offset or 1, f"{type(exc).__name__}: {exc.msg}")])
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        return CompileFailure([(1, 1, f"source too complex to compile ({type(exc).__name__}: {exc})")])
