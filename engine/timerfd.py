"""A CLOCK_MONOTONIC timerfd: the deadline heap's head as a file descriptor.

epoll's timeout counts whole milliseconds (and asyncio rounds up to them), so
a deadline enforced through it fires up to a millisecond late.  A timerfd is
an hrtimer: armed to an absolute ``time.monotonic()`` value it becomes
readable at that instant, and sits in the same selector as the worker
sockets.  Python 3.13 has ``os.timerfd_create``/``os.timerfd_settime_ns``,
used where the interpreter has them; 3.11 and 3.12 go through libc with
ctypes (``BACKEND`` says which).

``TimerFD.create()`` returns None where the call is unavailable; the reactors
then fall back to the selector's own timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import time

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


#: ``os`` on Python 3.13+, ``ctypes`` before (or None: unavailable).
_HAS_OS = hasattr(os, "timerfd_create") and hasattr(os, "timerfd_settime_ns")

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _create = _libc.timerfd_create
    _create.argtypes = [ctypes.c_int, ctypes.c_int]
    _create.restype = ctypes.c_int
    _settime = _libc.timerfd_settime
    _settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    _settime.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _create = _settime = None

BACKEND = "os" if _HAS_OS else ("ctypes" if _create is not None else None)

# time.monotonic() must be CLOCK_MONOTONIC for absolute expiries to line up.
_SAME_CLOCK = time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"


class TimerFD:
    __slots__ = ("fd", "_spec")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._spec = _Itimerspec()

    @classmethod
    def create(cls) -> "TimerFD | None":
        if BACKEND is None or not _SAME_CLOCK:
            return None
        if _HAS_OS:
            try:
                fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
            except OSError:
                return None
            return cls(fd)
        fd = _create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        return None if fd < 0 else cls(fd)

    def arm(self, when: float | None) -> None:
        """Fire once at monotonic time ``when``; None disarms."""
        if _HAS_OS:
            # 0 would disarm: an expiry at or before the clock's start is 1 ns
            ns = 0 if when is None else max(1, int(when * 1e9))
            os.timerfd_settime_ns(self.fd, flags=os.TFD_TIMER_ABSTIME, initial=ns)
            return
        spec = self._spec
        if when is None:
            spec.it_value.tv_sec = spec.it_value.tv_nsec = 0
        else:
            frac, whole = math.modf(max(when, 1e-9))
            spec.it_value.tv_sec = int(whole)
            spec.it_value.tv_nsec = max(1, int(frac * 1e9)) if whole == 0 else int(frac * 1e9)
        if _settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def drain(self) -> None:
        """Consume the expiry count so the fd stops being readable."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
