"""The packages import in one direction only (issue 13).

    sandbox/          never imports scriptvisor.engine
    sandbox/wire.py   imports the standard library only (the contract both sides share)
    engine/ (core)    never imports scriptvisor.engine.server
    engine/server/    may import the core and the sandbox

The check reads the source (``ast``), so it sees imports inside functions,
under ``if TYPE_CHECKING:`` and in ``try:`` blocks as well as module-level
ones, relative imports resolved against the file's package, and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.

``engine/cli.py`` is the command-line front end: it starts the HTTP server
(``scriptvisor serve``) and runs the token and push commands, so it sits above
both the core and the server, like ``engine/server/`` itself.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = ROOT / "sandbox"
ENGINE = ROOT / "engine"
SERVER = ENGINE / "server"
#: engine modules outside engine/server/ that may import the server: the front ends.
FRONT_ENDS = {ENGINE / "cli.py"}


def _package_of(path: Path) -> list[str]:
    """``scriptvisor.engine.x`` for engine/x.py, as a list of parts (the installed names)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["scriptvisor", *rel.parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_names(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path`` (or ``source`` as if it were ``path``)."""
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    here = _package_of(path)
    package = here if is_package else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.level - 1 > len(package) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import leaves the scriptvisor package")
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from scriptvisor.engine import server`` imports the submodule
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _modules(folder: Path, *, skip: Path | None = None) -> list[Path]:
    files = sorted(folder.rglob("*.py"))
    assert files, f"no modules under {folder}"
    return [f for f in files if skip is None or skip not in f.parents]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(files: list[Path], forbidden) -> list[str]:
    """``file:line: imports name`` for each import statement with a name ``forbidden(name)`` holds for
    (one line per statement: ``from x.server.tenants import a, b`` names the module once)."""
    bad: list[str] = []
    for f in files:
        seen: set[int] = set()
        for line, name in imported_names(f):
            if line not in seen and forbidden(name):
                seen.add(line)
                bad.append(f"{f.relative_to(ROOT)}:{line}: imports {name}")
    return bad


def _report(bad: list[str], rule: str) -> str:
    return f"{rule}:\n  " + "\n  ".join(bad)


def test_sandbox_never_imports_the_engine():
    bad = _violations(_modules(SANDBOX), lambda name: _within(name, "scriptvisor.engine"))
    assert not bad, _report(bad, "the sandbox never imports the engine (share code through sandbox/wire.py)")


def test_wire_imports_only_the_standard_library():
    stdlib = sys.stdlib_module_names
    bad = _violations([SANDBOX / "wire.py"], lambda name: name.split(".")[0] not in stdlib)
    assert not bad, _report(bad, "sandbox/wire.py is the contract both sides import: standard library only")


def test_engine_core_never_imports_the_server():
    for front in FRONT_ENDS:
        assert front.is_file(), f"{front} is listed as a front end but does not exist"
    core = [f for f in _modules(ENGINE, skip=SERVER) if f not in FRONT_ENDS]
    bad = _violations(core, lambda name: _within(name, "scriptvisor.engine.server"))
    assert not bad, _report(bad, "the engine's core never imports the HTTP server (engine/server/)")


def test_the_checker_sees_every_kind_of_import():
    """The rules above pass only if ``imported_names`` would have seen a violation."""
    fake = ENGINE / "_probe.py"  # never written: only its path places the source in a package
    source = (
        "import os\n"
        "from . import server\n"
        "from .server.tenants import Tenant\n"
        "def f():\n"
        "    from scriptvisor.engine.server import app\n"
        "    import importlib\n"
        "    importlib.import_module('scriptvisor.engine.server.run')\n"
        "if False:\n"
        "    from ..sandbox import wire\n"
    )
    names = {name for _, name in imported_names(fake, source)}
    assert {"os", "scriptvisor.engine.server", "scriptvisor.engine.server.tenants",
            "scriptvisor.engine.server.tenants.Tenant", "scriptvisor.engine.server.app",
            "scriptvisor.engine.server.run", "scriptvisor.sandbox.wire"} <= names
