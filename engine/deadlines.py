"""Every timed action of the supervisor in one heap, each entry carrying its own action.

In the spirit of trio's ``Deadlines``: ``at(when, action)`` schedules a
callable and returns its ``Deadline``; ``cancel`` drops the action at once
(so a finished job or a dead worker is not kept alive by its timer); ``fire``
runs every due action and re-arms the reactor's single timer to the new head.
There is no polling interval: the reactor wakes exactly at the head.

Cancelled entries stay in the heap holding nothing and are compacted away
when they outnumber the live ones, so cancelling is O(1) and the heap's size
stays within twice the number of live deadlines (plus a small constant).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable

__all__ = ["Deadline", "Deadlines"]

Action = Callable[[], None]


class Deadline:
    """One scheduled action. ``action`` is None once it ran or was cancelled."""

    __slots__ = ("when", "action")

    def __init__(self, when: float, action: Action) -> None:
        self.when = when
        self.action: Action | None = action

    @property
    def pending(self) -> bool:
        return self.action is not None


class Deadlines:
    """A min-heap of ``Deadline``s driving one reactor timer.

    ``clock`` is the monotonic clock (injected: tests use a fake one) and
    ``arm(when)`` sets the reactor's single timer (``None`` disarms it).
    """

    #: Compact when more than this many cancelled entries make up over half the heap.
    COMPACT_AFTER = 1024

    def __init__(self, clock: Callable[[], float], arm: Callable[[float | None], None]) -> None:
        self.clock = clock
        self._arm = arm
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._armed: float | None = None

    def __len__(self) -> int:
        """Entries still pending."""
        return len(self._heap) - self._cancelled

    @property
    def size(self) -> int:
        """Entries in the heap, cancelled ones included (bounded; see the module doc)."""
        return len(self._heap)

    def at(self, when: float, action: Action) -> Deadline:
        d = Deadline(when, action)
        heapq.heappush(self._heap, (when, next(self._seq), d))
        if self._cancelled > self.COMPACT_AFTER and self._cancelled * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2].action is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
        if self._armed is None or when < self._armed:
            self._armed = when
            self._arm(when)
        return d

    def after(self, delay: float, action: Action) -> Deadline:
        return self.at(self.clock() + delay, action)

    def cancel(self, d: Deadline | None) -> None:
        if d is not None and d.action is not None:
            d.action = None
            self._cancelled += 1

    def fire(self) -> None:
        """Run every due action (each may schedule or cancel others), then re-arm."""
        self._armed = None
        heap = self._heap
        now = self.clock()
        while heap and heap[0][0] <= now:
            _, _, d = heapq.heappop(heap)
            action = d.action
            if action is None:
                self._cancelled = max(0, self._cancelled - 1)
                continue
            d.action = None
            action()
            now = self.clock()
        if heap:
            self._armed = heap[0][0]
            self._arm(self._armed)
        else:
            self._arm(None)

    def clear(self) -> None:
        for _, _, d in self._heap:
            d.action = None
        self._heap.clear()
        self._cancelled = 0
        self._armed = None
        self._arm(None)
