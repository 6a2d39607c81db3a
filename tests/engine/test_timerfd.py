import select
import time

from scriptvisor.engine.timerfd import TimerFD


def test_timerfd_fires_at_the_armed_instant_and_not_before():
    tfd = TimerFD.create()
    assert tfd is not None, "Linux with glibc provides timerfd"
    try:
        when = time.monotonic() + 0.02
        tfd.arm(when)
        assert select.select([tfd.fd], [], [], 0)[0] == []
        ready, _, _ = select.select([tfd.fd], [], [], 5)
        assert ready == [tfd.fd]
        assert time.monotonic() >= when
        tfd.drain()
        assert select.select([tfd.fd], [], [], 0)[0] == []
    finally:
        tfd.close()


def test_disarmed_timerfd_never_fires():
    tfd = TimerFD.create()
    assert tfd is not None
    try:
        tfd.arm(time.monotonic() + 0.01)
        tfd.arm(None)
        assert select.select([tfd.fd], [], [], 0.05)[0] == []
    finally:
        tfd.close()


def test_backend_is_os_timerfd_where_the_interpreter_has_it():
    import os
    import sys

    from scriptvisor.engine import timerfd
    expected = "os" if sys.version_info >= (3, 13) else "ctypes"
    assert timerfd.BACKEND == expected
    assert hasattr(os, "timerfd_create") == (expected == "os")
