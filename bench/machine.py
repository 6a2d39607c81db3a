"""What the numbers were measured on: they mean nothing without it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "system": platform.system(),
    }
    try:
        import psutil

        info["memory_mib"] = round(psutil.virtual_memory().total / 2**20)
        info["cpu_affinity"] = len(psutil.Process().cpu_affinity())
    except (ImportError, AttributeError, OSError):
        pass
    return info
