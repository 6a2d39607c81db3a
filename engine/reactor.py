"""Two ways to drive the supervisor: a private selector loop, or asyncio.

The supervisor is written against this small interface and never blocks:
it registers readers/writers for its sockets and asks for one wake-up at its
earliest deadline.  ``SelectorReactor`` runs a loop only while a blocking
caller waits (``Engine``); ``AsyncioReactor`` plugs the same callbacks into a
running asyncio loop (``AsyncEngine``, the HTTP server), so no thread is
needed per in-flight call and none at all for the engine.

Both wait on one selector with the nearest deadline as the timeout: there is
no polling interval anywhere.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from typing import Callable

Callback = Callable[[], None]


class SelectorReactor:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._timer_at: float | None = None
        self._timer_cb: Callback | None = None

    def _update(self, fd: int) -> None:
        mask = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        try:
            key = self.sel.get_key(fd)
        except KeyError:
            key = None
        if key is None:
            if mask:
                self.sel.register(fd, mask)
        elif not mask:
            self.sel.unregister(fd)
        elif key.events != mask:
            self.sel.modify(fd, mask)

    def add_reader(self, fd: int, cb: Callback) -> None:
        self._readers[fd] = cb
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, cb: Callback) -> None:
        self._writers[fd] = cb
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def call_at(self, when: float | None, cb: Callback) -> None:
        """One timer, re-armed by the supervisor to its earliest deadline (monotonic)."""
        self._timer_at = when
        self._timer_cb = cb

    def run_once(self, until: float | None = None) -> None:
        """Wait for one batch of events (or the timer, or ``until``) and dispatch it."""
        now = time.monotonic()
        wake = self._timer_at
        if until is not None and (wake is None or until < wake):
            wake = until
        timeout = None if wake is None else max(0.0, wake - now)
        events = self.sel.select(timeout)
        for key, mask in events:
            fd = key.fd
            if mask & selectors.EVENT_WRITE:
                cb = self._writers.get(fd)
                if cb is not None:
                    cb()
            if mask & selectors.EVENT_READ:
                cb = self._readers.get(fd)
                if cb is not None:
                    cb()
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            cb = self._timer_cb
            self._timer_at = None
            if cb is not None:
                cb()

    def close(self) -> None:
        self.sel.close()


class AsyncioReactor:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def add_reader(self, fd: int, cb: Callback) -> None:
        self.loop.add_reader(fd, cb)

    def remove_reader(self, fd: int) -> None:
        self.loop.remove_reader(fd)

    def add_writer(self, fd: int, cb: Callback) -> None:
        self.loop.add_writer(fd, cb)

    def remove_writer(self, fd: int) -> None:
        self.loop.remove_writer(fd)

    def call_at(self, when: float | None, cb: Callback) -> None:
        # asyncio's clock is time.monotonic(), the same as the supervisor's.
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._fire, cb)

    def _fire(self, cb: Callback) -> None:
        self._timer = None
        self._timer_at = None
        cb()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
