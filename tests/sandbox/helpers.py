"""Call a Runner in-process (no engine): shared by tests/sandbox and tests/security."""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # the package is used from the work tree, not installed
    sys.path.insert(0, ROOT)

from scriptvisor.sandbox.context import WorkerContext  # noqa: E402
from scriptvisor.sandbox.runner import Runner  # noqa: E402
from scriptvisor.sandbox.wire import WorkerLimits  # noqa: E402

SCRIPT_PATH = "/tenants/acme/script.py"


def make_runner(**limits: Any) -> Runner:
    return Runner(WorkerContext(tenant="acme", limits=WorkerLimits(**limits)))


def invoke(runner: Runner, source: str, *args: Any, fn: str = "", path: str = SCRIPT_PATH,
           configuration: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    return runner.invoke(path=path, source=textwrap.dedent(source), source_hash="", function=fn,
                         args=list(args), configuration=configuration or {}, timeout=timeout)


def error_of(outcome: dict[str, Any]) -> dict[str, Any]:
    """The error dict of a failed outcome (asserting it failed)."""
    assert outcome["ok"] is False, outcome
    assert outcome["result"] is None, outcome
    return outcome["error"]


class LeakyIterable:
    """A host object a test plants in ``global_``: iterating, indexing or
    mapping-unpacking it hands out a frame (what the value firewall must stop)."""

    def __iter__(self):
        yield sys._getframe()

    def keys(self):
        return ["k"]

    def __getitem__(self, key):
        return sys._getframe()

    def __len__(self):
        return 1
