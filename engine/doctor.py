"""``scriptvisor doctor``: which OS confinement layers this host provides, and why not.

The same facts back the engine's start-up check (``require_all_layers``):
a layer the host cannot provide is always reported, never skipped silently.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from scriptvisor.sandbox import confine, landlock

__all__ = ["layers", "missing", "run_doctor"]


def layers(config: Any = None) -> list[dict[str, Any]]:
    """One ``{"name", "active", "detail"}`` per layer, in the order workers apply them."""
    avail = confine.available(config)
    order = [name for name in confine.LAYERS if name in avail]
    order += sorted(set(avail) - set(order))
    return [{"name": name, "active": bool(avail[name][0]), "detail": avail[name][1]}
            for name in order]


def missing(config: Any = None) -> list[dict[str, Any]]:
    """The layers that are not active (empty when the host provides everything)."""
    return [layer for layer in layers(config) if not layer["active"]]


def run_doctor(config: Any = None) -> tuple[str, bool]:
    """The report ``scriptvisor doctor`` prints, and whether every layer is active."""
    rows = layers(config)
    width = max(len(r["name"]) for r in rows)
    head = (f"scriptvisor doctor: uid {os.geteuid()}, {platform.system()} {platform.release()} "
            f"{platform.machine()}, Python {sys.version.split()[0]}, "
            f"Landlock ABI {landlock.abi_version()}")
    lines = [head, ""]
    for r in rows:
        mark = "active     " if r["active"] else "UNAVAILABLE"
        lines.append(f"  {r['name']:<{width}}  {mark}  {r['detail']}")
    all_active = all(r["active"] for r in rows)
    lines.append("")
    if all_active:
        lines.append("all layers active")
    else:
        names = ", ".join(r["name"] for r in rows if not r["active"])
        lines.append(f"not active: {names}"
                     + ("; the engine refuses to start with require_all_layers=True"
                        if config is None or getattr(config, "require_all_layers", False) is False
                        else "; require_all_layers=True: the engine will refuse to start"))
    return "\n".join(lines), all_active
