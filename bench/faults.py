"""Fault benchmark: steady load on a real node while faults are injected, one at a time.

    scriptvisor bench faults [--clients 6] [--phase 8] [--faults worker_kill,...] [--out DIR]
    python -m scriptvisor.bench.faults ...

What runs (all on loopback, nothing shared with other users of the machine):

* a **private PostgreSQL cluster** for the migration-mode user store:
  ``initdb``/``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` in a temporary
  folder, on a free port (as user ``postgres`` when run as root).  The store
  restart fault restarts *this* cluster (``pg_ctl restart -m fast``), never
  the machine's own PostgreSQL;
* one **node**: ``scriptvisor serve`` (a subprocess, as an operator starts it)
  with one tenant in automatic migration mode over a seeded SQLite legacy
  database, ``SCRIPTVISOR_USER_STORE_DSN`` pointing at the private cluster,
  a 2 s tenant timeout;
* ``--clients`` client threads, each with its own keep-alive HTTP client,
  sending calls back to back: 30 % ``connection/login`` of an already migrated
  user (bcrypt check against the PostgreSQL store), 70 % a script doing a
  little work.

Each fault gets a phase: 1 s of steady load, the fault, then load until the
phase ends (``--phase`` seconds after the fault, longer if recovery needs it).

==============  ==========================================================
fault           what is done to the node
==============  ==========================================================
worker_kill     SIGKILL a random worker of the zygote, 5 times, 0.5 s apart
zygote_kill     SIGKILL the zygote (the engine must start a new one)
store_restart   ``pg_ctl restart -m fast`` of the private PostgreSQL cluster
sigstop_worker  SIGSTOP a random worker and leave it stopped (its deadline
                must end it)
sigstop_server  SIGSTOP the server process for 2 s, then SIGCONT
sigterm         SIGTERM the server (drain), then start it again on its port
==============  ==========================================================

Per fault it prints: requests **sent**; **answered** (an HTTP response of
any status); **lost** (sent on an open connection, then the connection broke
without an answer: the caller cannot know whether it ran); **hung** (no
answer within the tenant timeout + 13 s); **refused** (the connection was
refused: nothing was sent, so a retry is always safe); the **error codes**
callers saw (``ok: false`` results and error statuses, with counts); and the
**time to recover**: from the fault until the first successful call after
which no call failed (0 when none failed).  Zero lost and zero hung are the
pass lines: the exit status is 1 when any phase misses one.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil

FAULTS = ("worker_kill", "zygote_kill", "store_restart", "sigstop_worker", "sigstop_server", "sigterm")
TENANT = "acme"
TIMEOUT = 2.0            # the tenant's wall clock per call
HUNG_AFTER = TIMEOUT + 13.0   # no answer by then: hung
USERS = [(f"user{i}@example.com", f"secret-{i}", f"user{i}", True) for i in range(12)]
WORK = ("def work(rounds, callback):\n    n = 0\n    for i in range(rounds):\n        n = n + i\n"
        "    callback(None, n)\n")
WORK_ROUNDS = 1_000_000
LOGIN_SHARE = 0.3
#: Pause of a client after a refused connection (its own retry back-off).
REFUSED_BACKOFF = 0.05


# -- the private PostgreSQL cluster -------------------------------------------

class PrivatePostgres:
    """A throw-away PostgreSQL cluster of our own (never the machine's)."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not found:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: install postgresql")
        self.bin = Path(found[-1]).parent
        self.dir = root / "pg"
        self.dir.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(root, "postgres")
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        self._ctl("start")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")

    def _ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  action, *extra)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass


# -- the node ------------------------------------------------------------------

class NodeProcess:
    def __init__(self, tenants: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.tenants, self.port, self.env, self.log = tenants, port, env, log
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scriptvisor.engine.cli", "serve", "--tenants", str(self.tenants),
             "--port", str(self.port), "--log-file", str(self.log)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # blocks until the port is bound (or the node died)
        if "listening on " not in line:
            self.proc.kill()
            raise RuntimeError(f"node did not start: {line!r}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def zygote(self) -> psutil.Process | None:
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "scriptvisor.engine.zygote" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                pass
        return None

    def workers(self) -> list[psutil.Process]:
        z = self.zygote()
        try:
            return z.children() if z else []
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(60)


# -- load ----------------------------------------------------------------------

@dataclass
class Call:
    start: float
    end: float
    outcome: str       # "ok", an error code, or lost / hung / refused
    answered: bool


@dataclass
class Load:
    url: str
    token: str
    clients: int
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        return threads

    def stop(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(HUNG_AFTER + 10)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        timeout = httpx.Timeout(HUNG_AFTER, connect=5.0)
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                          timeout=timeout) as client:
            while not self._stop.is_set():
                if rng.random() < LOGIN_SHARE:
                    email, password, _, _ = rng.choice(USERS)
                    path, body = f"/v1/tenants/{TENANT}/connection/login", {"args": [email, password]}
                else:
                    path, body = f"/v1/tenants/{TENANT}/scripts/work", {"args": [WORK_ROUNDS]}
                call = self._one(client, path, body)
                with self._lock:
                    self.calls.append(call)
                if call.outcome == "refused":
                    self._stop.wait(REFUSED_BACKOFF)

    @staticmethod
    def _one(client: httpx.Client, path: str, body: dict[str, Any]) -> Call:
        start = time.monotonic()
        try:
            r = client.post(path, json=body)
        except httpx.ConnectError:
            return Call(start, time.monotonic(), "refused", False)
        except httpx.TimeoutException:
            return Call(start, time.monotonic(), "hung", False)
        except httpx.TransportError:
            return Call(start, time.monotonic(), "lost", False)
        end = time.monotonic()
        try:
            data = r.json()
        except ValueError:
            return Call(start, end, f"http_{r.status_code}", True)
        if r.status_code == 200 and data.get("ok") is True:
            return Call(start, end, "ok", True)
        err = data.get("error") or {}
        code = err.get("code", "?")
        name = err.get("name")
        label = f"{r.status_code} {code}" + (f" ({name})" if name and name not in (code,) and code in (
            "engine_unavailable", "script_error") else "")
        return Call(start, end, label, True)


# -- faults --------------------------------------------------------------------

def _busy_worker(node: NodeProcess, rng: random.Random) -> psutil.Process | None:
    """A worker running a call (it used CPU in the last 0.1 s), else any worker.

    An idle spare or standby is an easy victim (the engine just replaces it);
    the faults are meant to hit calls in flight.
    """
    workers = node.workers()
    before = {}
    for w in workers:
        try:
            before[w.pid] = sum(w.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    time.sleep(0.1)  # the sampling window
    busy = []
    for w in workers:
        try:
            if w.pid in before and sum(w.cpu_times()[:2]) > before[w.pid]:
                busy.append(w)
        except psutil.NoSuchProcess:
            pass
    pool = busy or workers
    return rng.choice(pool) if pool else None


def _signal_worker(node: NodeProcess, sig: int, rng: random.Random) -> bool:
    victim = _busy_worker(node, rng)
    if victim is None:
        return False
    try:
        victim.send_signal(sig)
        return True
    except psutil.NoSuchProcess:
        return False


def inject(fault: str, node: NodeProcess, pg: PrivatePostgres, rng: random.Random) -> str:
    """Do ``fault`` to the node; returns a note of what was done."""
    if fault == "worker_kill":
        n = 0
        for i in range(5):
            n += _signal_worker(node, signal.SIGKILL, rng)
            if i < 4:
                time.sleep(0.5)  # spacing of the injected faults (the load runs meanwhile)
        return f"{n} workers SIGKILLed"
    if fault == "zygote_kill":
        z = node.zygote()
        if z is None:
            return "no zygote found"
        z.kill()
        return f"zygote {z.pid} SIGKILLed"
    if fault == "store_restart":
        t = time.monotonic()
        pg.restart()
        return f"private PostgreSQL restarted (pg_ctl restart -m fast, {time.monotonic() - t:.1f} s)"
    if fault == "sigstop_worker":
        return "a worker SIGSTOPped" if _signal_worker(node, signal.SIGSTOP, rng) else "no worker found"
    if fault == "sigstop_server":
        node.proc.send_signal(signal.SIGSTOP)
        time.sleep(2.0)  # the fault's length
        node.proc.send_signal(signal.SIGCONT)
        return "server SIGSTOPped for 2 s"
    if fault == "sigterm":
        t = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(60)
        drained = time.monotonic() - t
        node.start()
        return f"server SIGTERMed (drained and exited {code} in {drained:.1f} s), restarted"
    raise ValueError(f"unknown fault {fault!r}")


# -- one phase -----------------------------------------------------------------

@dataclass
class Row:
    fault: str
    note: str
    sent: int
    answered: int
    ok: int
    lost: int
    hung: int
    refused: int
    codes: dict[str, int]
    recover_s: float | None

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.hung == 0


def _recovery(calls: list[Call], t0: float) -> float | None:
    """Seconds from the fault to the first ok call after which no call failed."""
    ordered = sorted(calls, key=lambda c: c.end)
    last_bad = max((i for i, c in enumerate(ordered) if c.outcome != "ok"), default=None)
    if last_bad is None:
        return 0.0
    after = next((c for c in ordered[last_bad + 1:] if c.outcome == "ok"), None)
    return None if after is None else max(0.0, after.end - t0)


def run_phase(fault: str, node: NodeProcess, pg: PrivatePostgres, token: str, clients: int,
              phase: float, rng: random.Random, log: Callable[[str], None]) -> Row:
    load = Load(node.url, token, clients)
    threads = load.run()
    time.sleep(1.0)  # steady load before the fault
    t0 = time.monotonic()
    note = inject(fault, node, pg, rng)
    log(f"  {fault}: {note}")
    time.sleep(phase)  # load keeps running; the phase length is the measurement window
    load.stop(threads)
    calls = load.calls
    codes = collections.Counter(c.outcome for c in calls if c.outcome != "ok")
    return Row(
        fault=fault, note=note, sent=len(calls), answered=sum(c.answered for c in calls),
        ok=sum(c.outcome == "ok" for c in calls), lost=codes.get("lost", 0), hung=codes.get("hung", 0),
        refused=codes.get("refused", 0), codes=dict(codes.most_common()), recover_s=_recovery(calls, t0),
    )


# -- setup and report ----------------------------------------------------------

def _tenant(root: Path) -> str:
    from scriptvisor.engine.server import auth
    from scriptvisor.engine.tenantdir import init_tenant, seed_sqlite

    folder = init_tenant(root / TENANT, "sqlite", import_users=True, seed_rounds=4)
    legacy = folder / "data" / "legacy.db"
    legacy.unlink()
    seed_sqlite(legacy, users=USERS, rounds=4, schema=(folder / "schema.sql").read_text(encoding="utf-8"))
    (folder / "scripts" / "work.py").write_text(WORK)
    toml = folder / "tenant.toml"
    text = toml.read_text(encoding="utf-8")
    import re

    text, n = re.subn(r"(?m)^timeout\s*=.*$", f"timeout = {TIMEOUT}", text)
    if n != 1:
        raise RuntimeError(f"{toml}: expected one 'timeout =' line in [limits]")
    toml.write_text(text, encoding="utf-8")
    return auth.create_token(root, TENANT)


def table(rows: list[Row]) -> str:
    out = ["| fault | sent | answered | ok | lost | hung | refused | error codes seen (count) | recover s | pass |",
           "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        codes = ", ".join(f"{k} ({v})" for k, v in r.codes.items() if k not in ("lost", "hung")) or "none"
        rec = "never" if r.recover_s is None else f"{r.recover_s:.2f}"
        out.append(f"| {r.fault} | {r.sent} | {r.answered} | {r.ok} | {r.lost} | {r.hung} | {r.refused} | "
                   f"{codes} | {rec} | {'yes' if r.passed else 'NO'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scriptvisor.bench.faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=6, help="concurrent clients (default %(default)s)")
    ap.add_argument("--phase", type=float, default=8.0, help="seconds of load after each fault (default %(default)s)")
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of: " + ", ".join(FAULTS))
    ap.add_argument("--out", help="folder for results.md and results.json")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        ap.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    rng = random.Random(args.seed)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="scriptvisor-faults-"))
    os.chmod(work, 0o755)
    pg = node = None
    rows: list[Row] = []
    try:
        log(f"private PostgreSQL cluster in {work / 'pg'} ...")
        pg = PrivatePostgres(work)
        tenants = work / "tenants"
        tenants.mkdir()
        token = _tenant(tenants)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, SCRIPTVISOR_USER_STORE_DSN=pg.dsn, SCRIPTVISOR_NODE_ID="bench-node")
        node = NodeProcess(tenants, port, env, work / "node.jsonl")
        # migrate every user once (first logins), so the phases measure steady logins
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for email, password, _, _ in USERS:
                for attempt in range(3):  # a first login (migration) may run out of the 2 s on a busy machine
                    r = c.post(f"/v1/tenants/{TENANT}/connection/login", json={"args": [email, password]})
                    if r.status_code == 200 and r.json().get("ok"):
                        break
                else:
                    raise RuntimeError(f"warm-up login failed: {r.status_code} {r.text}")
        log(f"node on {node.url}, {args.clients} clients, {args.phase:g} s after each fault")
        for fault in faults:
            rows.append(run_phase(fault, node, pg, token, args.clients, args.phase, rng, log))
    finally:
        if node is not None:
            node.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    text = table(rows)
    cmd = "python -m scriptvisor.bench.faults " + " ".join(sys.argv[1:] if argv is None else argv)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(f"Command: `{cmd.strip()}`\n\n{text}\n\n" + "\n".join(
            f"- {r.fault}: {r.note}" for r in rows) + "\n", encoding="utf-8")
        (out / "results.json").write_text(json.dumps({
            "command": cmd.strip(), "clients": args.clients, "phase_s": args.phase,
            "rows": [{**r.__dict__, "passed": r.passed} for r in rows]}, indent=2), encoding="utf-8")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
