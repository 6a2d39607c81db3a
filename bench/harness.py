"""Runs the drivers and interleaves their samples: the scheduling half of the bench.

Interleaving is the point: for each figure, round after round, every system
gives one sample before any gives its next, so a burst of machine noise (a
cron job, a page-cache flush) lands on all systems alike instead of on
whichever happened to be measured then.

Each (system, figure) has a sample count and a wall-time budget; a system
whose own mechanics make a sample slow (billiard's 1 s timeout check) stops
at its budget with fewer samples, and the report says so.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .progress import Progress

__all__ = ["DriverFailed", "DriverProc", "Plan", "run_plan"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DriverFailed(Exception):
    """A driver died, answered garbage, or did not answer in time."""


class DriverProc:
    """The harness's handle on one driver subprocess (one system)."""

    def __init__(self, name: str, log_path: str) -> None:
        self.name = name
        env = dict(os.environ)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scriptvisor.bench.driver", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
            env=env,
        )
        self._buf = b""
        self._closing = False
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        hello = self._read(timeout=120.0)
        if not hello.get("ok"):
            self.kill()
            raise DriverFailed(hello.get("error", "driver did not start"))
        self.pid = int(hello["pid"])
        #: figure groups the system takes part in (from its start answer)
        self.figures: set[str] = set()

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise DriverFailed(f"{self.name}: no answer within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise DriverFailed(f"{self.name}: driver exited (code {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise DriverFailed(f"{self.name}: bad answer {line[:80]!r}") from exc

    def request(self, msg: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as exc:
            raise DriverFailed(f"{self.name}: driver gone ({exc})") from exc
        return self._read(timeout)

    def send_close(self) -> None:
        """Ask the driver to stop; ``close`` collects it (all close in parallel)."""
        if self.proc.poll() is None and not self._closing:
            self._closing = True
            try:
                self.proc.stdin.write(b'{"cmd": "close"}\n')  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                pass

    def close(self) -> None:
        self.send_close()
        if self.proc.poll() is None:
            try:
                self._read(timeout=15.0)
                self.proc.wait(timeout=15.0)
            except (DriverFailed, subprocess.TimeoutExpired):
                self.kill()
        self._sel.close()
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Plan:
    """How many samples of what, and how long any one system may spend on them."""

    quick: bool
    groups: list[str]
    counts: dict[str, int]
    budget_s: float
    chaos_budget_s: float
    #: scriptvisor's chaos run is the one with a target (0 hangs in 10,000):
    #: it is bounded by its count, with this as a safety stop only.
    chaos_budget_scriptvisor_s: float
    throughput_batch: int
    idle_s: float
    overshoot_timeout_s: float = 0.05
    chaos_timeout_s: float = 1.0
    chaos_grace_s: float = 2.0
    #: How long the harness waits for any one driver answer before declaring
    #: the whole driver hung (its own watchdogs are shorter than this).
    request_timeout_s: float = 120.0
    #: A recycle sample with no replacement after this long counts as hung.
    recycle_watchdog_s: float = 10.0
    #: No-op calls per CPU-per-call sample.
    cpu_calls: int = 2000
    #: Calls per whole-process CLI batch, and interleaved rounds (median taken).
    cli_calls: int = 2000
    cli_rounds: int = 3


@dataclass
class Collected:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    chaos: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: Wall seconds per phase, to see where a run's time goes.
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, system: str, key: str, value: float) -> None:
        self.samples.setdefault(system, {}).setdefault(key, []).append(float(value))

    def note(self, system: str, key: str, text: str) -> None:
        self.notes.setdefault(system, {})[key] = text

    def error(self, system: str, group: str, text: str, hung: bool = False) -> None:
        errs = self.errors.setdefault(system, {}).setdefault(group, {"count": 0, "hung": 0, "last": ""})
        errs["count"] += 1
        errs["hung"] += int(hung)
        errs["last"] = text[:300]


#: Consecutive failed samples after which a system leaves a figure.
MAX_CONSECUTIVE_ERRORS = 10


def _interleave(
    drivers: dict[str, DriverProc],
    out: Collected,
    group: str,
    label: str,
    n: int,
    budget: dict[str, float],
    request: dict[str, Any],
    keys: dict[str, str] | None,
    request_timeout: float,
) -> None:
    """Round-robin ``request`` over the drivers until each has n samples or its budget.

    ``keys`` maps answer keys to figure keys; None takes every number in the answer.
    """
    done = {name: 0 for name in drivers}
    spent = {name: 0.0 for name in drivers}
    streak = {name: 0 for name in drivers}
    active = [name for name in drivers if name not in out.failed]
    with Progress(label, n * max(1, len(active))) as bar:
        while active:
            for name in list(active):
                drv = drivers[name]
                t0 = time.monotonic()
                try:
                    ans = drv.request(request, timeout=request_timeout)
                except DriverFailed as exc:
                    out.failed[name] = str(exc)
                    drv.kill()
                    active.remove(name)
                    bar.update(n - done[name])
                    continue
                spent[name] += time.monotonic() - t0
                if ans.get("ok"):
                    streak[name] = 0
                    if keys is None:
                        for key, value in ans.items():
                            if type(value) in (int, float):
                                out.add(name, key, value)
                    for src, dst in (keys or {}).items():
                        out.add(name, dst, ans[src])
                    done[name] += 1
                    bar.update(1, name)
                else:
                    streak[name] += 1
                    out.error(name, group, ans.get("error", "?"), hung=bool(ans.get("hung")))
                if done[name] >= n:
                    active.remove(name)
                elif spent[name] >= budget[name]:
                    out.note(name, group, f"stopped by its {budget[name]:.0f} s budget after {done[name]} of {n} samples")
                    active.remove(name)
                    bar.update(n - done[name])
                elif streak[name] >= MAX_CONSECUTIVE_ERRORS:
                    out.note(name, group, f"left after {streak[name]} failed samples in a row")
                    active.remove(name)
                    bar.update(n - done[name])


def _chaos(drivers: dict[str, DriverProc], out: Collected, plan: Plan) -> None:
    n = plan.counts["chaos"]
    stats = {name: {"count": 0, "n": 0, "calls": 0, "outcomes": {}} for name in drivers}
    spent = {name: 0.0 for name in drivers}
    budget = {
        name: plan.chaos_budget_scriptvisor_s if name == "scriptvisor" else plan.chaos_budget_s
        for name in drivers
    }
    msg = {"cmd": "chaos", "timeout": plan.chaos_timeout_s, "grace": plan.chaos_grace_s}
    active = [name for name in drivers if name not in out.failed]
    with Progress("chaos", n * max(1, len(active))) as bar:
        while active:
            for name in list(active):
                st = stats[name]
                t0 = time.monotonic()
                try:
                    ans = drivers[name].request(msg, timeout=plan.chaos_timeout_s + plan.chaos_grace_s + plan.request_timeout_s)
                except DriverFailed as exc:
                    # A driver that cannot answer its own watchdog is hung as a whole.
                    out.failed[name] = str(exc)
                    st["count"] += 1
                    drivers[name].kill()
                    active.remove(name)
                    continue
                spent[name] += time.monotonic() - t0
                if not ans.get("ok"):
                    out.error(name, "chaos", ans.get("error", "?"))
                    st["outcomes"]["driver_error"] = st["outcomes"].get("driver_error", 0) + 1
                else:
                    st["calls"] += 1
                    outcome = ans["outcome"]
                    st["outcomes"][outcome] = st["outcomes"].get(outcome, 0) + 1
                    if outcome == "hang":
                        st["count"] += 1
                    if ans["killed"]:
                        st["n"] += 1
                        bar.update(1, f"{name} hangs={st['count']}")
                if st["n"] >= n:
                    active.remove(name)
                elif spent[name] >= budget[name] or st["calls"] >= 5 * n:
                    out.note(name, "chaos", f"stopped by its {budget[name]:.0f} s budget after {st['n']} of {n} kills")
                    active.remove(name)
                    bar.update(n - st["n"])
    out.chaos = stats


def _idle(drivers: dict[str, DriverProc], out: Collected, plan: Plan) -> None:
    import psutil

    pids: dict[str, dict[str, list[int]]] = {}
    for name, drv in drivers.items():
        if name in out.failed:
            continue
        try:
            ans = drv.request({"cmd": "pids"})
        except DriverFailed as exc:
            out.failed[name] = str(exc)
            continue
        if ans.get("ok"):
            pids[name] = {"supervisor": ans["supervisor"], "workers": ans["workers"]}
        else:
            out.error(name, "idle", ans.get("error", "?"))

    def cpu_of(pid_list: list[int]) -> float:
        total = 0.0
        for pid in pid_list:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    slices = 10
    step = plan.idle_s / slices
    with Progress("idle", slices) as bar:
        before = {name: cpu_of(p["supervisor"]) for name, p in pids.items()}
        t_prev = time.monotonic()
        for _ in range(slices):
            # A measurement interval, not a wait for an event: the figure *is*
            # what the idle processes do during this time.
            time.sleep(step)
            now = time.monotonic()
            for name, p in pids.items():
                after = cpu_of(p["supervisor"])
                out.add(name, "idle_cpu_percent", (after - before[name]) / (now - t_prev) * 100.0)
                before[name] = after
            t_prev = now
            bar.update(1)
    for name, p in pids.items():
        for pid in p["workers"]:
            try:
                uss = psutil.Process(pid).memory_full_info().uss
            except psutil.Error as exc:
                out.error(name, "idle", f"uss of {pid}: {exc}")
                continue
            out.add(name, "idle_worker_uss_mib", uss / 2**20)


def run_plan(names: list[str], plan: Plan, log_dir: str, say: Any = print) -> Collected:
    """Start one driver per system, run the plan's groups interleaved, stop them."""
    out = Collected()
    drivers: dict[str, DriverProc] = {}
    every = drivers  # every started driver; `drivers` narrows per figure group
    t_phase = [time.monotonic()]

    def phase(label: str) -> None:
        now = time.monotonic()
        out.phases[label] = round(now - t_phase[0], 2)
        t_phase[0] = now

    try:
        for name in names:
            try:
                drivers[name] = DriverProc(name, os.path.join(log_dir, f"{name}.log"))
                ans = drivers[name].request({"cmd": "start", "workers": 1}, timeout=180.0)
                if not ans.get("ok"):
                    raise DriverFailed(ans.get("error", "start failed"))
                for key, text in (ans.get("notes") or {}).items():
                    out.note(name, key, text)
                drivers[name].figures = set(ans.get("figures") or ())
            except DriverFailed as exc:
                out.failed[name] = f"could not start: {exc}"
                say(f"  {name}: skipped, {out.failed[name]}")
                if name in drivers:
                    drivers.pop(name).kill()
        phase("start")
        c = plan.counts
        budget = {name: plan.budget_s for name in drivers}

        def taking(group: str) -> dict[str, DriverProc]:
            return {name: d for name, d in every.items() if group in d.figures}

        if "warm" in plan.groups:
            drivers = taking("warm")
            _interleave(drivers, out, "warm", "warm overhead", c["warm"], budget,
                        {"cmd": "warm"}, {"warm_overhead_ms": "warm_overhead_ms"}, plan.request_timeout_s)
            phase("warm")
        if "recycle" in plan.groups:
            drivers = taking("recycle")
            _interleave(drivers, out, "recycle", "recycle", c["recycle"], budget,
                        {"cmd": "recycle", "watchdog": plan.recycle_watchdog_s}, {"recycle_ms": "recycle_ms"}, plan.request_timeout_s)
            phase("recycle")
        if "timeout" in plan.groups:
            drivers = taking("timeout")
            _interleave(drivers, out, "timeout", "overshoot+next", c["timeout"], budget,
                        {"cmd": "timeout", "timeout": plan.overshoot_timeout_s},
                        {"overshoot_ms": "overshoot_ms", "next_after_timeout_ms": "next_after_timeout_ms"}, plan.request_timeout_s)
            phase("timeout")
        if "cold" in plan.groups:
            drivers = taking("cold")
            _interleave(drivers, out, "cold", "cold start", c["cold"], budget,
                        {"cmd": "cold"}, None, plan.request_timeout_s)
            phase("cold")
        if "cpu" in plan.groups:
            drivers = taking("cpu")
            _interleave(drivers, out, "cpu", "cpu per call", c["cpu"], budget,
                        {"cmd": "cpu", "n": plan.cpu_calls}, None, plan.request_timeout_s)
            phase("cpu")
        if "throughput" in plan.groups:
            drivers = taking("throughput")
            _interleave(drivers, out, "throughput", "throughput 1w", c["throughput"], budget,
                        {"cmd": "throughput", "batch": plan.throughput_batch}, {"per_s": "throughput_1w_per_s"}, plan.request_timeout_s)
            phase("throughput_1w")
        if "chaos" in plan.groups:
            drivers = taking("chaos")
            _chaos(drivers, out, plan)
            phase("chaos")
        if "throughput" in plan.groups or "idle" in plan.groups:
            drivers = {n: d for n, d in every.items() if d.figures & {"throughput", "idle"}}
            for name, drv in drivers.items():
                if name in out.failed:
                    continue
                try:
                    ans = drv.request({"cmd": "restart", "workers": 2}, timeout=180.0)
                    if not ans.get("ok"):
                        out.error(name, "restart", ans.get("error", "?"))
                except DriverFailed as exc:
                    out.failed[name] = str(exc)
            phase("restart_2w")
        if "throughput" in plan.groups:
            drivers = taking("throughput")
            _interleave(drivers, out, "throughput", "throughput 2w", c["throughput"], budget,
                        {"cmd": "throughput", "batch": plan.throughput_batch}, {"per_s": "throughput_2w_per_s"}, plan.request_timeout_s)
            phase("throughput_2w")
        if "idle" in plan.groups:
            drivers = taking("idle")
            _idle(drivers, out, plan)
            phase("idle")
    finally:
        for drv in every.values():
            drv.send_close()
        for drv in every.values():
            drv.close()
        phase("stop")
    if "cli" in plan.groups:
        from .cli_batch import measure

        measure(names, out, calls=plan.cli_calls, rounds=plan.cli_rounds, say=say)
        phase("cli")
    return out
