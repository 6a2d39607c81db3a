"""How long the kernel takes to tear down a killed fork, by what its parent had loaded.

Recycle latency starts with the death of the old worker: its socket reports
EOF only after the kernel has unmapped the memory it inherited.  This probe
forks children from a parent that imported nothing, the sandbox, or what
a zygote preloads (the slim one, or with extras: ``wire.EXTRAS``), SIGKILLs
each child and times kill -> EOF.

    python -m scriptvisor.bench.teardown [--n 200]

Each configuration runs in a fresh interpreter so the imports do not mix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_SLIM = ("scriptvisor.sandbox.runner,scriptvisor.sandbox.facades.stdlib,scriptvisor.sandbox.facades.crypto,"
         "scriptvisor.sandbox.facades.passwords,scriptvisor.sandbox.facades.web,scriptvisor.sandbox.facades.db,"
         "scriptvisor.sandbox.confine,scriptvisor.sandbox.worker")
CONFIGS = {
    "bare interpreter": "",
    "sandbox (runner + stdlib facades)": "scriptvisor.sandbox.runner,scriptvisor.sandbox.facades.stdlib",
    # what the engine's zygotes preload (wire.EXTRAS: one zygote per set)
    "slim zygote (every facade, no extras)": _SLIM,
    "zygote with the http extra (httpx)": _SLIM + ",scriptvisor.sandbox.facades.web_client",
    "zygote with every extra (http, postgres, mysql)":
        _SLIM + ",scriptvisor.sandbox.facades.web_client,psycopg,psycopg.rows,psycopg.errors,pymysql,pymysql.cursors",
}

_PROBE = r"""
import gc, importlib, json, os, signal, socket, sys, time
for m in filter(None, sys.argv[1].split(",")):
    importlib.import_module(m)
gc.collect(); gc.freeze()
anon = 0
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("Anonymous:"):
        anon = int(line.split()[1])
out = []
for _ in range(int(sys.argv[2])):
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close(); b.send(b"r"); b.recv(1); os._exit(0)
    b.close(); a.recv(1)
    t0 = time.perf_counter(); os.kill(pid, signal.SIGKILL); a.recv(1)
    out.append((time.perf_counter() - t0) * 1000.0)
    a.close(); os.waitpid(pid, 0)
out.sort()
print(json.dumps({"anon_kib": anon, "p50_ms": out[len(out) // 2], "p90_ms": out[int(len(out) * 0.9)],
                  "modules": len(sys.modules)}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="kills per configuration")
    args = ap.parse_args(argv)
    print(f"{'parent loaded':<55} {'anon MiB':>9} {'kill->EOF p50':>14} {'p90':>8} {'modules':>8}")
    for label, modules in CONFIGS.items():
        proc = subprocess.run([sys.executable, "-c", _PROBE, modules, str(args.n)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout)
        print(f"{label:<55} {r['anon_kib'] / 1024:>9.1f} {r['p50_ms']:>11.3f} ms {r['p90_ms']:>5.3f} ms"
              f" {r['modules']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
