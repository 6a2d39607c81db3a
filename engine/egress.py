"""Network egress per tenant at the OS level: nftables rules on each worker uid.

A root supervisor runs each tenant's workers under the tenant's own uid
(``engine.uids``).  This module gives every engine instance one nftables
table, ``inet scriptvisor_<pid>_<hash of state_dir>``, with an output chain
that, for each of *its* tenant uids ``U``, accepts TCP to exactly the
(host, port) pairs the tenant declares (``Tenant.egress``: its
``[[databases]]`` endpoints, and ``[[http]]`` endpoints where declared) and
rejects everything else that uid sends (TCP reset, ICMP for the rest)::

    meta skuid U ip  daddr . tcp dport @v4_U accept
    meta skuid U ip6 daddr . tcp dport @v6_U accept
    meta skuid U reject

so a worker with full code execution (the language layer assumed broken)
cannot connect to an undeclared host:port, even on a port Landlock allows.
Landlock's TCP port rule (``landlock_net``, ABI >= 4) stays as the fallback
where nftables is not usable: ports only, no hosts.

Sharing the host with other engine instances: a rule keyed on a uid would
also hit another instance's tenant running under the same uid, so uids are
unique host-wide (``engine.uids`` claims each one in ``/run/scriptvisor/uids``),
two instances on the same uid map (same state dir, so the same tenant) both
police its uid (a packet must pass both tables), each deletes its table at
exit, and removes tables of dead instances (their pid is gone) at start.

``probe()`` backs ``scriptvisor doctor``: the layer's state and, when it is
inactive, why.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
from typing import Any, Iterable

log = logging.getLogger("scriptvisor.egress")

__all__ = ["Egress", "probe"]

TABLE_PREFIX = "scriptvisor_"
NFT_TIMEOUT = 5.0
_TABLE = re.compile(r"^scriptvisor_(\d+)_[0-9a-f]{8}$")


def _nft() -> str | None:
    return shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)


class _Lib:
    """libnftables through ctypes: a rule change costs ~1 ms instead of an ``nft`` process
    (it sits on the path of a tenant's first spawn)."""

    def __init__(self) -> None:
        import ctypes

        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, command: str, json_out: bool = False) -> subprocess.CompletedProcess[str]:
        self.lib.nft_ctx_output_set_flags(self.ctx, 1 << 4 if json_out else 0)  # NFT_CTX_OUTPUT_JSON
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, command.encode())
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode(errors="replace")
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        return subprocess.CompletedProcess(command, rc, out, err)


_lib: _Lib | None = None


def _run(nft: str, args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    """``nft ARGS`` (``-f -`` reads ``script``), through libnftables when it loads."""
    global _lib
    if _lib is None:
        try:
            _lib = _Lib()
        except (OSError, AttributeError):
            _lib = False  # type: ignore[assignment]
    if _lib:
        json_out = args[:1] == ["-j"]
        rest = args[1:] if json_out else args
        return _lib.run(script if rest == ["-f", "-"] else " ".join(rest), json_out)
    return subprocess.run([nft, *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def probe() -> tuple[bool, str]:
    """Can this host and user run the nftables egress layer? ``(usable, reason)``."""
    if os.geteuid() != 0:
        return False, "supervisor is not root (no per-tenant uid to match, no nftables); Landlock ports only"
    nft = _nft()
    if nft is None:
        return False, "the nft command is missing (apt-get install nftables); Landlock ports only"
    name = f"{TABLE_PREFIX}probe_{os.getpid()}"
    res = _run(nft, ["-f", "-"], f"add table inet {name}\n"
                                 f"add chain inet {name} o {{ type filter hook output priority 0; }}\n"
                                 f"add set inet {name} s {{ type ipv4_addr . inet_service; }}\n"
                                 f"add rule inet {name} o meta skuid 0 ip daddr . tcp dport @s accept\n"
                                 f"delete table inet {name}\n")
    if res.returncode != 0:
        return False, f"nftables refused a probe table ({res.stderr.strip()[:200]}); Landlock ports only"
    return True, "nftables: each tenant uid may open TCP only to its declared host:port pairs"


def _resolve(host: str) -> tuple[list[str], list[str], bool]:
    """(IPv4 addresses, IPv6 addresses, needs DNS) for a declared host."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        v4, v6 = [], []
        try:
            for fam, _t, _p, _c, addr in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                (v4 if fam == socket.AF_INET else v6).append(addr[0])
        except OSError as exc:
            log.warning("egress: cannot resolve declared host %s: %s", host, exc)
        return sorted(set(v4)), sorted(set(v6)), True
    return ([str(ip)], [], False) if ip.version == 4 else ([], [str(ip)], False)


class Egress:
    """One engine instance's nftables table. ``active`` False: see ``reason``."""

    def __init__(self, state_dir: str, uid_base: int) -> None:
        self.state_dir = state_dir
        self.uid_base = uid_base
        self.table = f"{TABLE_PREFIX}{os.getpid()}_{hashlib.sha256(state_dir.encode()).hexdigest()[:8]}"
        self.active = False
        self.reason = "not started"
        self._nft: str | None = None
        self._rules: dict[int, tuple[tuple[str, int], ...]] = {}   # uid -> pairs installed
        self._refused: set[int] = set()

    # -- life cycle --------------------------------------------------------
    def start(self) -> "Egress":
        usable, why = probe()
        if not usable:
            self.reason = why
            return self
        self._nft = _nft()
        self._remove_dead_tables()
        res = _run(self._nft, ["-f", "-"], f"add table inet {self.table}\n"
                   f"add chain inet {self.table} out {{ type filter hook output priority 0; policy accept; }}\n")
        if res.returncode != 0:
            self.reason = f"cannot create nftables table: {res.stderr.strip()[:200]}"
            self.close()
            return self
        self.active = True
        self.reason = f"nftables table inet {self.table}: declared host:port pairs per tenant uid"
        return self

    def close(self) -> None:
        if self.active and self._nft is not None:
            res = _run(self._nft, ["delete", "table", "inet", self.table])
            if res.returncode != 0:
                log.warning("egress: cannot delete table %s: %s", self.table, res.stderr.strip())
        self.active = False
        self._rules.clear()

    def _remove_dead_tables(self) -> None:
        for name in self._scriptvisor_tables():
            m = _TABLE.match(name)
            if m and not _alive(int(m.group(1))):
                _run(self._nft, ["delete", "table", "inet", name])  # type: ignore[arg-type]

    def _scriptvisor_tables(self) -> list[str]:
        res = _run(self._nft, ["-j", "list", "tables", "inet"])  # type: ignore[arg-type]
        try:
            items = json.loads(res.stdout or "{}").get("nftables", [])
        except ValueError:
            return []
        return [i["table"]["name"] for i in items if "table" in i and i["table"]["name"].startswith(TABLE_PREFIX)]

    # -- per tenant uid ----------------------------------------------------
    def allow(self, uid: int | None, pairs: Iterable[tuple[str, int]]) -> bool:
        """Let ``uid`` reach exactly ``pairs`` (idempotent). False when not enforced for it."""
        if not self.active or uid is None or uid in self._refused:
            return False
        want = tuple(sorted(set((str(h), int(p)) for h, p in pairs)))
        if self._rules.get(uid) == want:
            return True
        # Another live instance sharing our uid map (same state dir: the same
        # tenant) may police this uid too.  We install ours regardless: its table
        # goes when that instance exits, and skipping ours left the uid with no
        # rules at all from then on.  Both tables apply to each packet, so the uid
        # reaches what both declare (fail closed when they differ).  (Looking the
        # other tables up first, only to log it, cost an nft listing on every
        # new tenant's first spawn.)
        v4: list[str] = []
        v6: list[str] = []
        dns = False
        for host, port in want:
            a4, a6, needs_dns = _resolve(host)
            v4 += [f"{a} . {port}" for a in a4]
            v6 += [f"{a} . {port}" for a in a6]
            dns = dns or needs_dns
        lines = []
        if uid in self._rules:
            lines.append(f"flush set inet {self.table} v4_{uid}")
            lines.append(f"flush set inet {self.table} v6_{uid}")
        else:
            lines.append(f"add set inet {self.table} v4_{uid} {{ type ipv4_addr . inet_service; }}")
            lines.append(f"add set inet {self.table} v6_{uid} {{ type ipv6_addr . inet_service; }}")
            if dns:
                lines.append(f"add rule inet {self.table} out meta skuid {uid} udp dport 53 accept")
                lines.append(f"add rule inet {self.table} out meta skuid {uid} tcp dport 53 accept")
            lines.append(f"add rule inet {self.table} out meta skuid {uid} ip daddr . tcp dport @v4_{uid} accept")
            lines.append(f"add rule inet {self.table} out meta skuid {uid} ip6 daddr . tcp dport @v6_{uid} accept")
            lines.append(f"add rule inet {self.table} out meta skuid {uid} meta l4proto tcp reject with tcp reset")
            lines.append(f"add rule inet {self.table} out meta skuid {uid} reject")
        if v4:
            lines.append(f"add element inet {self.table} v4_{uid} {{ {', '.join(v4)} }}")
        if v6:
            lines.append(f"add element inet {self.table} v6_{uid} {{ {', '.join(v6)} }}")
        res = _run(self._nft, ["-f", "-"], "\n".join(lines) + "\n")  # type: ignore[arg-type]
        if res.returncode != 0:
            log.error("egress: rules for uid %d not installed: %s", uid, res.stderr.strip()[:300])
            return False
        self._rules[uid] = want
        return True

    def describe(self) -> dict[str, Any]:
        return {"active": self.active, "reason": self.reason, "table": self.table if self.active else None,
                "uids": {str(u): [list(p) for p in pairs] for u, pairs in self._rules.items()}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
