"""The systems the benchmark compares, by the name results.json uses.

Each entry builds a ``System`` lazily, so a missing optional peer costs an
ImportError caught by ``load`` (and a printed reason), never a failed run.
"""

from __future__ import annotations

import importlib
from typing import Callable

from .base import System

__all__ = ["ALL_SYSTEMS", "FLOORS", "load", "missing_requirement"]


def _scriptvisor() -> System:
    from .scriptvisor_engine import ScriptvisorSystem

    return ScriptvisorSystem()


def _pebble(context: str) -> Callable[[], System]:
    def build() -> System:
        from .pebble_pool import PebbleSystem

        return PebbleSystem(context)

    return build


def _billiard() -> System:
    from .billiard_pool import BilliardSystem

    return BilliardSystem()


def _futures() -> System:
    from .futures_pool import FuturesSystem

    return FuturesSystem()


def _floor() -> System:
    from .floor_fork import FloorSystem

    return FloorSystem()


def _fresh() -> System:
    from .fresh_interpreter import FreshInterpreterSystem

    return FreshInterpreterSystem()


#: name -> (modules it needs, factory). Order is the report's column order.
ALL_SYSTEMS: dict[str, tuple[tuple[str, ...], Callable[[], System]]] = {
    "scriptvisor": (("scriptvisor.engine",), _scriptvisor),
    "pebble_fork": (("pebble",), _pebble("fork")),
    "pebble_forkserver": (("pebble",), _pebble("forkserver")),
    "billiard": (("billiard",), _billiard),
    "futures": ((), _futures),
    "python_per_call": ((), _fresh),
    # not a peer: what the machine charges (bare fork, socketpair ping-pong)
    "floor": ((), _floor),
}

#: Systems that are yardsticks, not peers: never the "best peer".
FLOORS = frozenset({"floor"})


def missing_requirement(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name not in ALL_SYSTEMS:
        return f"unknown system {name!r} (known: {', '.join(ALL_SYSTEMS)})"
    for module in ALL_SYSTEMS[name][0]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not installed ({exc}); pip install 'scriptvisor[bench]'"
    return None


def load(name: str) -> System:
    system = ALL_SYSTEMS[name][1]()
    system.name = name
    return system
