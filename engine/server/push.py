"""``scriptvisor script push`` / ``script compare``: one script on every node, or a loud no.

When each node serves its own copy of the tenants folder, a save through
one node's API (``PUT /v1/tenants/{t}/scripts/{s}``) changes that node only,
and a failover would silently run the old code.  ``push`` sends the same
source to every node given (each node directly, not through the load
balancer), then reads the script back from every node and compares the
sha256 digests; ``compare`` does that reading for all of a tenant's scripts
(for monitoring, or after an rsync).  Either exits 1 naming each node that
refused or disagrees.  See docs/scaling.md, "Editing scripts on several nodes".

Standard library HTTP only (``urllib``): the CLI needs nothing the server
does not.  The token comes from the environment, never from argv (``ps``
shows argv to every user of the machine).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any, Callable

__all__ = ["compare", "push"]

Echo = Callable[[str], None]


def _call(method: str, url: str, token: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, {"error": {"code": "unreachable", "message": str(getattr(exc, "reason", exc))}}


def _why(status: int, body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return f"{status or 'no answer'} {err.get('code')}: {err.get('message')}"
    return f"HTTP {status}"


def _digests(node: str, tenant: str, token: str) -> tuple[dict[str, str] | None, str]:
    status, body = _call("GET", f"{node.rstrip('/')}/v1/tenants/{tenant}/scripts", token)
    if status != 200 or not isinstance(body, dict):
        return None, _why(status, body)
    return {s["name"]: s["sha256"] for s in body.get("scripts", [])}, ""


def compare(nodes: list[str], tenant: str, token: str, echo: Echo = print) -> int:
    """0 when every node serves the same scripts with the same content, else 1 (each difference named)."""
    seen: dict[str, dict[str, str]] = {}
    failed = False
    for node in nodes:
        digests, why = _digests(node, tenant, token)
        if digests is None:
            echo(f"{node}: cannot list {tenant}'s scripts: {why}")
            failed = True
        else:
            seen[node] = digests
    names = sorted({name for d in seen.values() for name in d})
    for name in names:
        versions = {node: d.get(name) for node, d in seen.items()}
        if len(set(versions.values())) > 1:
            failed = True
            detail = ", ".join(f"{node}={(sha or 'missing')[:12]}" for node, sha in versions.items())
            echo(f"{tenant}/{name}: nodes disagree: {detail}")
    if not failed:
        echo(f"{tenant}: {len(names)} script(s) identical on {len(seen)} node(s)")
    return 1 if failed else 0


def push(nodes: list[str], tenant: str, script: str, source: str, token: str, echo: Echo = print) -> int:
    """PUT ``source`` to every node, then check every node serves exactly it. 0 ok, 1 otherwise."""
    want = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    failed = False
    for node in nodes:
        status, body = _call("PUT", f"{node.rstrip('/')}/v1/tenants/{tenant}/scripts/{script}", token,
                             {"source": source})
        if status == 200:
            kept = body.get("kept_version") if isinstance(body, dict) else None
            echo(f"{node}: saved {tenant}/{script} ({want[:12]})"
                 + (f", previous content kept as version {kept}" if kept else ""))
        else:
            failed = True
            echo(f"{node}: NOT saved: {_why(status, body)}")
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                for p in body["error"].get("problems") or []:
                    echo(f"  {script}.py:{p.get('line')}:{p.get('column')}: {p.get('message')}")
    # read back from every node: what they serve now is what counts
    for node in nodes:
        digests, why = _digests(node, tenant, token)
        have = None if digests is None else digests.get(script)
        if have != want:
            failed = True
            echo(f"{node}: serves {tenant}/{script} as {(have or why or 'missing')[:60]}, not {want[:12]}")
    if failed:
        echo(f"{tenant}/{script}: the nodes do NOT all serve the pushed source; fix the nodes named above "
             "and push again")
    else:
        echo(f"{tenant}/{script}: identical on {len(nodes)} node(s)")
    return 1 if failed else 0
