"""Webservice template timing: what one legacy-API call costs a script (issue 16).

    python -m scriptvisor.bench.webservice_timing            # 60 calls per case
    python -m scriptvisor.bench.webservice_timing --n 200 --json

Starts the reference legacy API (``engine.legacy_api``, bcrypt cost 4 so the
API's own hashing does not dominate) on a loopback port, makes a tenant with
``init --template webservice`` pointed at it, and on a warm worker measures,
through ``engine.connections`` exactly as ``scriptvisor connection`` does:

- ``get_user (webservice)``: one GET through the http facade (keep-alive reused);
- ``login (webservice)``: one POST; the API checks the bcrypt hash;
- ``direct GET (host)``: the same GET from the host with httpx, no engine: the
  floor the facade and the worker add to.

Prints the median and p90 in milliseconds. Timing goals are checked here,
never in tests.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start_api(key: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from scriptvisor.engine.legacy_api import serve; "
         "serve(sys.argv[1], port=0, rounds=4)", key], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("legacy API on "):
        proc.kill()
        raise RuntimeError(f"legacy API did not start: {line!r}")
    return proc, line.removeprefix("legacy API on ")


def measure(n: int = 60) -> dict[str, Any]:
    import httpx

    from scriptvisor.engine import Engine, EngineConfig
    from scriptvisor.engine.connections import connection_for, run_operation_on
    from scriptvisor.engine.hashing import FAST_HASHER
    from scriptvisor.engine.tenantdir import init_tenant
    from scriptvisor.engine.userstore import UserStore

    key = "bench-key"
    proc, base = _start_api(key)
    samples: dict[str, list[float]] = {"get_user (webservice)": [], "login (webservice)": [], "direct GET (host)": []}
    try:
        with tempfile.TemporaryDirectory(prefix="sv-web-timing-") as tmp:
            root = init_tenant(Path(tmp) / "webbench", "webservice")
            toml = (root / "tenant.toml").read_text().replace("http://127.0.0.1:8931/api/", base)
            (root / "tenant.toml").write_text(re.sub(r'(?m)^API_KEY = "[^"]*"', f'API_KEY = "{key}"', toml))
            store = UserStore("webbench", path=str(Path(tmp) / "platform.db"), hasher=FAST_HASHER)
            conn, tenant = connection_for(root, store=store)
            with Engine(EngineConfig(limits=tenant.limits, spares_per_tenant=0)) as eng, \
                    httpx.Client(headers={"Authorization": f"Bearer {key}"}) as direct:
                eng.configure_tenant(conn.tenant, limits=tenant.limits, data_dir=str(tenant.data_dir),
                                     http=tenant.http_policy())
                calls = {
                    "get_user (webservice)": lambda: run_operation_on(eng, conn, "get_user", ["bob@example.com"]),
                    "login (webservice)": lambda: run_operation_on(eng, conn, "login",
                                                                   ["alice@example.com", "wonderland"]),
                    "direct GET (host)": lambda: {"ok": direct.get(base + "users",
                                                                   params={"email": "bob@example.com"}).is_success},
                }
                for call in calls.values():  # warm: worker spawned, code cached, keep-alive open
                    assert call()["ok"]
                for _ in range(n):
                    for case, call in calls.items():
                        started = time.perf_counter()
                        res = call()
                        samples[case].append((time.perf_counter() - started) * 1000)
                        assert res["ok"], res
            store.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {"n": n, "cases": {case: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(_quantile(v, 0.9), 2)}
                              for case, v in samples.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="calls per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    out = measure(args.n)
    if args.json:
        print(json.dumps(out))
    else:
        for case, row in out["cases"].items():
            print(f"{case:<24} median {row['median_ms']:7.2f} ms   p90 {row['p90_ms']:7.2f} ms   (n={out['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
