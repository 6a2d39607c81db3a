"""The supervisor's link to its zygote: start it, talk to it, restart it with back-off.

The zygote (``engine.zygote``) is an exec'd helper that does all forking.
``ZygoteLink`` owns its process (through an injected ``starter``, so tests
can play the zygote on a socketpair), its framed channel and its lifecycle:

    DOWN --start()--> STARTING --hello--> READY --EOF--> DOWN (restart scheduled)

When the zygote dies the link reports it (``on_exit``) and schedules a
restart on the supervisor's deadline heap: at once after the first death,
then after an exponentially growing delay (``BACKOFF_FIRST`` doubling up to
``BACKOFF_MAX``) while deaths keep coming; a zygote that stayed up for
``BACKOFF_RESET`` seconds resets the series.  The link never gives up: a host
that heals (memory freed, a file restored) gets its engine back by itself.
``retry_after()`` tells callers refused meanwhile when to come back.

A link serves one set of preloaded extras (``wire.EXTRAS``, its zygote's
"flavour"; the first frame it sends is ``preload {extras}``): the supervisor
keeps one link per set in use, each with its own restarts and back-off.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import subprocess
import sys
from typing import Any, Callable, Protocol

from scriptvisor.sandbox import wire

from .deadlines import Deadline, Deadlines
from .worker import Channel

log = logging.getLogger("scriptvisor.supervisor")

__all__ = ["LinkState", "ZygoteLink", "popen_zygote"]

#: Delay before the second restart in a series; it doubles for each further one.
BACKOFF_FIRST = 0.25
#: Longest delay between restarts.
BACKOFF_MAX = 30.0
#: A zygote that lived this long after its hello starts a fresh series.
BACKOFF_RESET = 60.0
#: How long to wait for a dead zygote's exit status before SIGKILL + wait.
EXIT_WAIT = 2.0


class ZygoteProcess(Protocol):
    pid: int

    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


def popen_zygote(fd: int) -> ZygoteProcess:
    """The real starter: ``python -s -m scriptvisor.engine.zygote FD`` (fork+exec).

    A scrubbed environment: nothing of the supervisor's (secrets) reaches the
    zygote, hence no worker.  The zygote finds ``scriptvisor`` where this
    interpreter does (site-packages, or an editable install's finder).
    """
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    return subprocess.Popen(
        [sys.executable, "-s", "-m", "scriptvisor.engine.zygote", str(fd)],
        pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/",
    )


class LinkState(enum.Enum):
    DOWN = "down"          # no zygote; a restart may be scheduled
    STARTING = "starting"  # started, no hello yet
    READY = "ready"        # said hello: spawns are served


class ZygoteLink:
    def __init__(self, reactor: Any, deadlines: Deadlines, *,
                 starter: Callable[[int], ZygoteProcess] = popen_zygote,
                 on_message: Callable[[dict[str, Any]], None],
                 on_exit: Callable[[int | None], None], extras: tuple[str, ...] = ()) -> None:
        self.extras = tuple(extras)
        self.reactor = reactor
        self.deadlines = deadlines
        self.clock = deadlines.clock
        self.starter = starter
        self.on_message = on_message
        self.on_exit = on_exit
        self.state = LinkState.DOWN
        self.process: ZygoteProcess | None = None
        self.chan: Channel | None = None
        self.layers: dict[str, Any] = {}
        #: what the zygote said of itself in its hello (modules, rss_kb)
        self.size: dict[str, Any] = {}
        self.deaths = 0               # deaths in the current series
        self.restarts = 0             # restarts ever (a counter for stats)
        self.hello_at: float | None = None
        self.restart: Deadline | None = None
        self.enabled = False          # restarts wanted (False once stopped)

    # -- state ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state is LinkState.READY

    @property
    def flavour(self) -> str:
        """``slim``, or the extras it preloads joined by ``+`` (for logs and stats)."""
        return "+".join(self.extras) or "slim"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def backing_off(self) -> bool:
        """Down, with its restart waiting out a back-off delay."""
        return (self.state is LinkState.DOWN and self.restart is not None and self.restart.pending
                and self.restart.when > self.clock())

    def retry_after(self) -> float:
        """Seconds until the zygote is expected back (at least 1, for Retry-After)."""
        if self.restart is not None and self.restart.pending:
            return max(1.0, math.ceil(self.restart.when - self.clock()))
        return 1.0

    @staticmethod
    def backoff(deaths: int) -> float:
        """Delay before the restart after the ``deaths``-th death of a series."""
        if deaths <= 1:
            return 0.0
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (deaths - 2))

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        self.enabled = True
        self.restart = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = self.starter(theirs.fileno())
        except OSError as exc:
            ours.close()
            theirs.close()
            log.error("cannot start the %s zygote: %s", self.flavour, exc)
            self._died(None)
            return
        theirs.close()
        chan = Channel(ours, wire.DEFAULT_MAX_FRAME)
        fd = chan.fd
        chan.want_write = lambda on: (self.reactor.add_writer(fd, chan.flush) if on
                                      else self.reactor.remove_writer(fd))
        self.chan = chan
        self.state = LinkState.STARTING
        self.reactor.add_reader(fd, self._on_readable)
        try:
            chan.send(wire.encode({"t": "preload", "extras": list(self.extras)}))
        except OSError:
            pass  # gone already: its EOF is read next and restarts it

    def send(self, frame: bytes, fd: int | None = None) -> None:
        """Queue a frame (and a passed fd) for the zygote. ``OSError`` when it is gone."""
        if self.chan is None:
            if fd is not None:
                os.close(fd)
            raise BrokenPipeError("the zygote is not running")
        try:
            self.chan.send(frame, fd)
        except OSError:
            # Gone, its EOF not yet read: no more spawns until that EOF
            # arrives and the restart is scheduled the usual way.
            self.state = LinkState.DOWN
            raise

    def _on_readable(self) -> None:
        chan = self.chan
        if chan is None:
            return
        try:
            messages = chan.read()
        except wire.FrameError as exc:
            log.error("zygote broke the protocol: %s", exc.message)
            messages = None
        if messages is None:
            self._died(self._reap())
            return
        for msg in messages:
            if msg["t"] == "hello":
                self.state = LinkState.READY
                self.hello_at = self.clock()
                layers = msg.get("layers")
                self.layers = layers if type(layers) is dict else {}
                self.size = {k: msg[k] for k in ("modules", "rss_kb") if type(msg.get(k)) is int}
            self.on_message(msg)

    def _close_channel(self) -> None:
        chan, self.chan = self.chan, None
        if chan is not None:
            self.reactor.remove_reader(chan.fd)
            self.reactor.remove_writer(chan.fd)
            chan.close()

    def _reap(self) -> int | None:
        proc = self.process
        if proc is None:
            return None
        try:
            return proc.wait(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def _died(self, status: int | None) -> None:
        self._close_channel()
        now = self.clock()
        if self.hello_at is not None and now - self.hello_at >= BACKOFF_RESET:
            self.deaths = 0
        self.deaths += 1
        self.hello_at = None
        self.state = LinkState.DOWN
        self.on_exit(status)
        if not self.enabled:
            return
        delay = self.backoff(self.deaths)
        if delay:
            log.error("%s zygote died %d times in a row (status %s); restarting it in %.2f s",
                      self.flavour, self.deaths, status, delay)
        else:
            log.warning("%s zygote exited (status %s); restarting it", self.flavour, status)
        self.restarts += 1
        self.restart = self.deadlines.after(delay, self.start)

    def stop(self) -> None:
        """Ask the zygote to stop, wait for it (it reaps its workers). Idempotent."""
        self.enabled = False
        self.deadlines.cancel(self.restart)
        self.restart = None
        if self.chan is not None:
            try:
                self.chan.send(wire.encode({"t": "stop"}))
                self.chan.sock.setblocking(True)
                self.chan.flush()
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_channel()
        self.state = LinkState.DOWN
