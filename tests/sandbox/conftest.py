"""Fixtures for the language-layer tests: a Runner called in-process, no engine."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.sandbox.helpers import invoke, make_runner
from scriptvisor.sandbox.runner import Runner

Run = Callable[..., dict[str, Any]]


@pytest.fixture
def runner() -> Runner:
    return make_runner()


@pytest.fixture
def run(runner: Runner) -> Run:
    """``run(source, *args, fn=..., configuration=...)`` on one Runner (fn defaults to ``script``)."""
    def _run(source: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return invoke(runner, source, *args, **kwargs)
    return _run
