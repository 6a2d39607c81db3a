"""requirements/lock.txt and runtime.txt agree with pyproject.toml (scripts/lock.sh writes both).

A dependency added to pyproject.toml without re-running scripts/lock.sh fails
here (and in scripts/install.sh's pip check) with the command to run.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = "run: bash scripts/lock.sh (docs/dependencies.md)"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a uv/pip-tools requirements file."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", line)
        if m:
            pins[_norm(m.group(1))] = (m.group(2), frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", line)))
    return pins


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return {_norm(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in reqs}


def test_every_declared_dependency_is_locked_with_hashes():
    lock = _pins(ROOT / "requirements" / "lock.txt")
    missing = _declared("test", "bench") - set(lock)
    assert not missing, f"in pyproject.toml but not in requirements/lock.txt: {sorted(missing)}; {FIX}"
    unhashed = [name for name, (_v, hashes) in lock.items() if not hashes]
    assert not unhashed, f"pinned without hashes: {unhashed}; {FIX}"


def test_runtime_lock_is_the_locks_subset_for_the_default_install():
    lock = _pins(ROOT / "requirements" / "lock.txt")
    runtime = _pins(ROOT / "requirements" / "runtime.txt")
    assert _declared() <= set(runtime), f"requirements/runtime.txt lacks {sorted(_declared() - set(runtime))}; {FIX}"
    differ = {name: (pin[0], lock.get(name, ("-",))[0]) for name, pin in runtime.items()
              if name not in lock or lock[name][0] != pin[0] or not pin[1] <= lock[name][1]}
    assert not differ, f"runtime.txt and lock.txt disagree (runtime, lock): {differ}; {FIX}"
    assert not {"pytest", "pebble", "billiard"} & set(runtime), "runtime.txt must not carry the extras"


def test_restrictedpython_is_locked_inside_the_supported_range():
    version = _pins(ROOT / "requirements" / "lock.txt")["restrictedpython"][0]
    assert version.split(".")[0] == "9", version
