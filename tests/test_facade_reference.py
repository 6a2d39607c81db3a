"""docs/facades.md is generated from the facade registry and docstrings, and stays in step with the code."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from scriptvisor.engine import facadedoc
from scriptvisor.engine.cli import main
from scriptvisor.sandbox import facades

PAGE = Path(__file__).resolve().parents[1] / "docs" / "facades.md"


def test_docs_facades_md_is_what_the_code_generates() -> None:
    assert PAGE.read_text(encoding="utf-8") == facadedoc.generate(), (
        "docs/facades.md is stale: run `scriptvisor facades > docs/facades.md`")


def test_scriptvisor_facades_prints_the_page() -> None:
    out = CliRunner().invoke(main, ["facades"])
    assert out.exit_code == 0 and out.output == facadedoc.generate()


def test_every_facade_function_and_error_has_one_line() -> None:
    assert facadedoc.missing_descriptions() == []
    page = facadedoc.generate()
    for name in facades.FACADES:
        assert f"\n### {name}\n" in page
    assert "| `remaining()` | function | Seconds left before this invocation's hard deadline. |" in page
    for err in ("WrongUsernameOrPasswordError", "ValidationError", "UnauthorizedError", "NotAllowed"):
        assert f"`{err}" in page


def test_a_new_facade_is_picked_up_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Greeter:
        """Greetings for tests."""

        def hello(self, name: str) -> str:
            """Say hello to ``name``."""
            return "hello " + name

        def undocumented(self) -> None:
            return None

    module = types.ModuleType("fake_facade_module")
    module.greeter = _Greeter()
    monkeypatch.setitem(__import__("sys").modules, "fake_facade_module", module)
    monkeypatch.setitem(facades.FACADES, "greeter", "fake_facade_module:greeter")
    monkeypatch.setattr(facades, "_cache", {})  # the loader caches facades by name
    page = facadedoc.generate()
    assert "\n### greeter\n\nGreetings for tests.\n" in page
    assert "| `hello(name)` | function | Say hello to `name`. |" in page
    assert facadedoc.missing_descriptions() == ["greeter.undocumented()"]
