"""One system per process: the harness's hands inside each measured system.

Run as ``python -m scriptvisor.bench.driver NAME``.  Reads one JSON command per line on
stdin and answers one JSON line on a private copy of stdout (fd 1 itself is
pointed at stderr, so anything a pool's child prints cannot corrupt the
protocol).  Keeping each system in its own process means its threads, its
forked workers and its CPU time are its own: the idle-CPU figure of one peer
never includes another peer's polling thread, and no pool forks a child
from a process that hosts another pool's threads.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from typing import Any, TextIO

__all__ = ["main"]


class Driver:
    def __init__(self, name: str) -> None:
        from scriptvisor.bench.systems import load
        from scriptvisor.bench.systems.base import Killer

        self.system = load(name)
        self.killer = Killer()
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg["cmd"]
        s = self.system
        if cmd == "start":
            s.start(int(msg["workers"]))
            return {"notes": s.notes, "figures": list(s.figures)}
        if cmd == "restart":
            s.close()
            s.start(int(msg["workers"]))
            return {}
        if cmd == "pids":
            if msg.get("warm", True) and s.worker_pids():
                s.warm_up()
            return {"supervisor": s.supervisor_pids(), "workers": s.worker_pids()}
        if cmd == "warm":
            return {"warm_overhead_ms": s.warm()}
        if cmd == "recycle":
            return {"recycle_ms": s.recycle(float(msg.get("watchdog", 10.0)))}
        if cmd == "timeout":
            over, nxt = s.timeout_pair(float(msg["timeout"]))
            return {"overshoot_ms": over, "next_after_timeout_ms": nxt}
        if cmd == "cold":
            return s.cold()
        if cmd == "cpu":
            return s.cpu_per_call(int(msg["n"]))
        if cmd == "throughput":
            return {"per_s": s.throughput(int(msg["batch"]))}
        if cmd == "chaos":
            return s.chaos(self.killer, self.rng, float(msg["timeout"]), float(msg["grace"]))
        if cmd == "close":
            s.close()
            return {}
        raise ValueError(f"unknown command {cmd!r}")


def _serve(name: str, out: TextIO) -> int:
    from scriptvisor.bench.systems.base import WatchdogExpired

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        driver = Driver(name)
    except Exception as exc:
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}", "fatal": True})
        return 1
    reply({"ok": True, "pid": os.getpid()})
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            reply({"ok": True, **driver.handle(msg)})
        except WatchdogExpired as exc:
            # The system is wedged: replace it so the next sample measures
            # the system again, not the wreck of this one.
            traceback.print_exc(file=sys.stderr)
            try:
                driver.system.recover()
                note = "system rebuilt"
            except Exception as rexc:
                note = f"rebuild failed: {rexc}"
            reply({"ok": False, "error": f"WatchdogExpired: {exc} ({note})", "hung": True})
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        if msg.get("cmd") == "close":
            break
    driver.killer.close()
    _reap_children()
    return 0


def _reap_children() -> None:
    """Kill whatever this driver started and left behind (by pid, ours only)."""
    try:
        import psutil
    except ImportError:
        return
    kids = psutil.Process().children(recursive=True)
    for kid in kids:
        try:
            kid.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(kids, timeout=5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return _serve(argv[0], out)


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # No interpreter shutdown: concurrent.futures' atexit hook joins every
    # executor thread ever started, and a pool the chaos run wedged never
    # lets go.  Everything this driver started is already killed and reaped.
    os._exit(code)
