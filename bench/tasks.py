"""The workloads the peer pools run: importable, picklable module functions.

Each returns the pid of the process that ran it, so the driver can tell a
replacement worker from the one it killed.  scriptvisor runs the same
workloads as action scripts (see ``bench.systems.scriptvisor_engine``).
"""

from __future__ import annotations

import os

__all__ = ["blob", "noop", "spin"]


def noop() -> int:
    return os.getpid()


def spin() -> int:
    while True:
        pass


def blob(size: int) -> tuple[int, str]:
    # A result large enough that a kill can land while it is being written.
    return os.getpid(), "x" * size
