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

__all__ = ["egress", "egress_text", "layers", "missing", "run_doctor"]


def layers(config: Any = None) -> list[dict[str, Any]]:
    """One ``{"name", "active", "detail"}`` per layer, in the order workers apply them."""
    from scriptvisor.engine import egress

    avail = confine.available(config)
    order = [name for name in confine.LAYERS if name in avail]
    order += sorted(set(avail) - set(order))
    rows = [{"name": name, "active": bool(avail[name][0]), "detail": avail[name][1]} for name in order]
    usable, why = egress.probe()
    if usable and config is not None and not getattr(config, "egress", True):
        usable, why = False, "disabled (EngineConfig.egress = False); Landlock ports only"
    rows.append({"name": "egress_nft", "active": usable, "detail": why})
    return rows


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


def egress(tenants_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Per tenant under ``tenants_dir``: what its scripts may connect to, as the OS layers get it.

    ``{"tenant", "egress": [[address, port]...], "http": [{"name", "base_url",
    "addresses", "port"}], "allowed_ports", "error"}``; declared HTTP hosts
    are resolved now, as a load by the server would.
    """
    from pathlib import Path

    from scriptvisor.engine.tenants import TenantConfigError, load_tenant

    rows: list[dict[str, Any]] = []
    for entry in sorted(Path(tenants_dir).iterdir()):
        if not entry.is_dir() or entry.name.startswith(".") or not (entry / "tenant.toml").exists():
            continue
        try:
            tenant = load_tenant(entry)
        except TenantConfigError as exc:
            rows.append({"tenant": entry.name, "error": str(exc)})
            continue
        rows.append({
            "tenant": tenant.name,
            "egress": [list(pair) for pair in tenant.egress],
            "http": [{"name": ep.name, "base_url": ep.base_url, "addresses": list(ep.addresses),
                      "port": ep.port} for ep in tenant.http],
            "allowed_ports": list(tenant.limits.allowed_ports),
            "error": None,
        })
    return rows


def egress_text(rows: list[dict[str, Any]]) -> str:
    """The egress part of ``scriptvisor doctor --tenants DIR``."""
    lines = ["", "declared egress per tenant (address:port pairs for the OS egress rules):"]
    if not rows:
        lines.append("  (no tenants)")
    for row in rows:
        if row.get("error"):
            lines.append(f"  {row['tenant']}: not loaded: {row['error']}")
            continue
        pairs = ", ".join(f"{host}:{port}" for host, port in row["egress"]) or "none"
        lines.append(f"  {row['tenant']}: {pairs}   (Landlock ports: "
                     f"{', '.join(str(p) for p in row['allowed_ports']) or 'none'})")
        for ep in row["http"]:
            lines.append(f"    http {ep['name']} = {ep['base_url']} -> {', '.join(ep['addresses'])}")
    return "\n".join(lines)

