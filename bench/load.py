"""Bounded HTTP load test of the operator server, on loopback only.

    .venv/bin/python bench/load.py [--requests 2000] [--login-requests 300] [--concurrency 8] [--json]

Starts a real server (``scriptvisor serve`` code path, port 0) on 127.0.0.1
with one tenant holding a no-op script and the SQLite login template, sends a
fixed number of requests per scenario with a fixed number of concurrent
clients, and prints requests/s and latency percentiles (client-observed,
request sent -> response read).  Bounded in count and in time: each scenario
stops at its request count or its time budget, whichever comes first.  Exits 1
if any request failed (non-200 or ``ok`` false), so it doubles as a smoke test.

The login scenario is dominated by bcrypt (cost 10, ~50 ms of CPU per call on
this class of machine), so its throughput is about cores / bcrypt time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

NOOP = "def noop(callback):\n    callback(None, None)\n"


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, round(q / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[k]


def make_tenants(root: Path) -> str:
    from scriptvisor.engine.server.auth import create_token
    from scriptvisor.engine.tenantdir import init_tenant

    folder = init_tenant(root / "bench", "sqlite", import_users=False)
    (folder / "scripts" / "noop.py").write_text(NOOP)
    cores = os.cpu_count() or 2
    toml = (folder / "tenant.toml").read_text()
    (folder / "tenant.toml").write_text(
        toml.replace("[limits]\n", f"[limits]\nmax_concurrency = {cores}\nmax_queue = 1024\n", 1)
    )
    return create_token(root, "bench")


def start_server(tenants: Path) -> tuple[subprocess.Popen[str], str]:
    code = "import sys; from scriptvisor.engine.server.run import serve; sys.exit(serve(sys.argv[1], '127.0.0.1', 0, log_file=sys.argv[2]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tenants), str(tenants / "oplog.jsonl")],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


async def scenario(url: str, token: str, path: str, body: dict[str, Any], *, requests: int,
                   concurrency: int, budget_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    remaining = requests
    deadline = time.perf_counter() + budget_s
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # TCP_NODELAY: httpx writes headers and body separately; without it Nagle
    # plus delayed ACKs add ~40 ms to every keep-alive request on loopback
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, transport=transport) as client:
        await client.post(path, json=body)  # warm the tenant's workers; not counted

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200 and r.json().get("ok") is True
                    if not ok:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = sorted(latencies)
    return {
        "requests": len(ms),
        "failed": len(failures),
        "first_failures": failures[:3],
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(ms) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(percentile(ms, 50), 3), "p90": round(percentile(ms, 90), 3),
            "p99": round(percentile(ms, 99), 3), "max": round(ms[-1], 3) if ms else None,
            "mean": round(statistics.fmean(ms), 3) if ms else None,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="no-op requests (default 2000)")
    ap.add_argument("--login-requests", type=int, default=300, help="SQLite login requests (default 300)")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per scenario at most (default 60)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    opts = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="sv-load-") as tmp:
        tenants = Path(tmp)
        token = make_tenants(tenants)
        proc, url = start_server(tenants)
        try:
            report = {
                "server": url,
                "concurrency": opts.concurrency,
                "cores": os.cpu_count(),
                "noop": asyncio.run(scenario(
                    url, token, "/v1/tenants/bench/scripts/noop", {"args": []},
                    requests=opts.requests, concurrency=opts.concurrency, budget_s=opts.budget)),
                "sqlite_login": asyncio.run(scenario(
                    url, token, "/v1/tenants/bench/scripts/login", {"args": ["alice@example.com", "wonderland"]},
                    requests=opts.login_requests, concurrency=opts.concurrency, budget_s=opts.budget)),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            report_rc = proc.wait(60)
        report["server_exit"] = report_rc
    failed = report["noop"]["failed"] + report["sqlite_login"]["failed"]
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"server {report['server']}  cores={report['cores']}  concurrency={report['concurrency']}")
        print(f"{'scenario':<14}{'requests':>9}{'failed':>8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for name in ("noop", "sqlite_login"):
            s = report[name]
            lat = s["latency_ms"]
            print(f"{name:<14}{s['requests']:>9}{s['failed']:>8}{s['requests_per_s']:>9}"
                  f"{lat['p50']:>9}{lat['p90']:>9}{lat['p99']:>9}{lat['max']:>9}")
            for f in s["first_failures"]:
                print(f"  failure: {f}")
        print(f"server exit status {report['server_exit']}")
    return 1 if failed or report["server_exit"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
