"""Two ways to drive the supervisor: a private selector loop, or asyncio.

The supervisor is written against this small interface and never blocks:
it registers readers/writers for its sockets and asks for one wake-up at its
earliest deadline.  ``SelectorReactor`` runs a loop only while a blocking
caller waits (``Engine``); ``AsyncioReactor`` plugs the same callbacks into a
running asyncio loop (``AsyncEngine``, the HTTP server), so no thread is
needed per in-flight call and none at all for the engine.

Both wait on one selector; the nearest deadline is a timerfd in that selector
(microsecond precision; epoll's own timeout counts whole milliseconds), or
the selector's timeout where no timerfd exists.  There is no polling
interval anywhere.
"""

from __future__ import annotations

import asyncio
import math
import select
import time
from typing import Callable

from .timerfd import TimerFD

Callback = Callable[[], None]


class SelectorReactor:
    """epoll directly (``selectors`` adds a key object and a list per event)."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        self._timer_at: float | None = None
        self._timer_cb: Callback | None = None
        self.tfd = TimerFD.create()
        if self.tfd is not None:
            self.add_reader(self.tfd.fd, self.tfd.drain)

    def _update(self, fd: int) -> None:
        mask = (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )
        old = self._masks.get(fd)
        if old is None:
            if mask:
                self.ep.register(fd, mask)
                self._masks[fd] = mask
        elif not mask:
            try:
                self.ep.unregister(fd)
            except OSError:  # already closed: the kernel dropped it
                pass
            del self._masks[fd]
        elif old != mask:
            self.ep.modify(fd, mask)
            self._masks[fd] = mask

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
        if self.tfd is not None and when != self._timer_at:
            self.tfd.arm(when)
        self._timer_at = when
        self._timer_cb = cb

    def run_once(self, until: float | None = None) -> None:
        """Wait for one batch of events (or the timer, or ``until``) and dispatch it."""
        wake = self._timer_at if self.tfd is None else None  # a timerfd wakes us by itself
        if until is not None and (wake is None or until < wake):
            wake = until
        if wake is None:
            timeout = -1.0
        else:
            # epoll counts whole milliseconds: round up so we never wake early
            timeout = max(0.0, math.ceil((wake - time.monotonic()) * 1000.0) / 1000.0)
        try:
            events = self.ep.poll(timeout)
        except InterruptedError:
            events = []
        readers, writers = self._readers, self._writers
        for fd, mask in events:
            if mask & _OUT:
                cb = writers.get(fd)
                if cb is not None:
                    cb()
            if mask & _IN:
                cb = readers.get(fd)
                if cb is not None:
                    cb()
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            cb = self._timer_cb
            self._timer_at = None
            if cb is not None:
                cb()

    def close(self) -> None:
        if self.tfd is not None:
            self.tfd.close()
        self.ep.close()


_IN = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR


class AsyncioReactor:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._timer_cb: Callback | None = None
        self.tfd = TimerFD.create()
        if self.tfd is not None:
            loop.add_reader(self.tfd.fd, self._on_tfd)

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
        if when == self._timer_at and (self.tfd is not None or self._timer is not None):
            return
        self._timer_at = when
        self._timer_cb = cb
        if self.tfd is not None:
            self.tfd.arm(when)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.loop.call_at(when, self._fire)

    def _on_tfd(self) -> None:
        assert self.tfd is not None
        self.tfd.drain()
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            self._fire()

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        cb = self._timer_cb
        if cb is not None:
            cb()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tfd is not None:
            self.loop.remove_reader(self.tfd.fd)
            self.tfd.close()
            self.tfd = None
