"""Login timing: does a failed login tell an unknown user from a known one? (issue 17, finding 9)

    python -m scriptvisor.bench.login_timing            # 60 rounds per case
    python -m scriptvisor.bench.login_timing --n 200 --json

For each mode of a tenant made from the sqlite template (legacy rows hashed
with bcrypt cost 10, the template default; the platform store with its
default argon2id parameters) it runs failed logins in interleaved rounds, on
a warm worker, through ``engine.connections`` exactly as ``scriptvisor
connection`` and the server do, and prints the median and p90 per case:

- ``unknown``: nobody has that email;
- ``known, wrong password``: a user of the legacy database (not migrated);
- ``migrated, wrong password`` (migration mode): a user already in the store.

The line that matters is the difference of the medians, unknown minus known:
near zero (a few ms of noise on a loaded machine) means no timing oracle.
Timing goals are checked here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(n: int = 60) -> dict[str, Any]:
    from scriptvisor.engine import Engine, EngineConfig
    from scriptvisor.engine.connections import connection_for, run_operation_on
    from scriptvisor.engine.tenantdir import init_tenant
    from scriptvisor.engine.userstore import UserStore

    out: dict[str, Any] = {"n": n, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="sv-login-timing-") as tmp:
        for import_users in (False, True):
            mode = "migration" if import_users else "legacy"
            root = init_tenant(Path(tmp) / mode, "sqlite", import_users=import_users)  # bcrypt cost 10 rows
            store = UserStore(mode, path=str(Path(tmp) / f"{mode}-platform.db"))  # default argon2id
            conn, tenant = connection_for(root, tenant_name=mode, store=store)
            cases = {"unknown": "nobody@example.com", "known, wrong password": "bob@example.com"}
            with Engine(EngineConfig(limits=tenant.limits, spares_per_tenant=0)) as eng:
                eng.configure_tenant(mode, limits=tenant.limits, data_dir=str(tenant.data_dir))
                if import_users:
                    ok = run_operation_on(eng, conn, "login", ["alice@example.com", "wonderland"])
                    assert ok["ok"], ok["error"]
                    cases["migrated, wrong password"] = "alice@example.com"
                samples: dict[str, list[float]] = {case: [] for case in cases}
                for _ in range(3):  # warm the worker, the template's dummy hash and the store
                    for email in cases.values():
                        run_operation_on(eng, conn, "login", [email, "not-the-password"])
                for _ in range(n):
                    for case, email in cases.items():
                        started = time.perf_counter()
                        res = run_operation_on(eng, conn, "login", [email, "not-the-password"])
                        samples[case].append((time.perf_counter() - started) * 1000)
                        assert res["ok"] is False
                        assert res["error"]["user_known"] is (case != "unknown"), (case, res["error"])
            store.close()
            rows = {case: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(_quantile(v, 0.9), 2)}
                    for case, v in samples.items()}
            unknown = rows["unknown"]["median_ms"]
            for case, row in rows.items():
                if case != "unknown":
                    row["unknown_minus_this_ms"] = round(unknown - row["median_ms"], 2)
            out["modes"][mode] = rows
    return out


def render(results: dict[str, Any]) -> str:
    lines = [f"failed logins, {results['n']} rounds per case (median / p90, ms)", "",
             "| mode | case | median | p90 | unknown - this |", "|---|---|---:|---:|---:|"]
    for mode, rows in results["modes"].items():
        for case, row in rows.items():
            diff = row.get("unknown_minus_this_ms")
            lines.append(f"| {mode} | {case} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
                         f"{'' if diff is None else f'{diff:+.1f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="rounds per case (default 60)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = measure(args.n)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
