import os

import psutil
import pytest

from scriptvisor.engine import Engine, EngineConfig, TenantLimits

NOOP = "def noop(callback):\n    callback(None, 1)\n"
ECHO = "def echo(value, callback):\n    callback(None, value)\n"
SPIN = "def spin(callback):\n    while True:\n        pass\n"
COUNTER = (
    "def counter(callback):\n"
    "    global_['n'] = global_.get('n', 0) + 1\n"
    "    callback(None, global_['n'])\n"
)


def make_config(**kw):
    kw.setdefault("debug_exec", True)
    kw.setdefault("limits", TenantLimits(timeout=5.0))
    return EngineConfig(**kw)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(make_config(state_dir=str(tmp_path / "state"))).start()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory):
    eng = Engine(make_config(state_dir=str(tmp_path_factory.mktemp("state")))).start()
    yield eng
    eng.close()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def descendants():
    """Live (non-zombie) descendants of this process; ones that vanish while we look are gone."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_dead(pid, timeout=5.0):
    """True once ``pid`` has exited (pidfd becomes readable; no polling)."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture
def rigs():
    """``rigs(**config)`` -> a supervisor on fake processes and a fake clock (``fakes.Rig``), closed after the test."""
    from .fakes import Rig

    made: list[Rig] = []

    def make(**kw):
        rig = Rig(**kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()
