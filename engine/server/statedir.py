"""One engine state directory per server, locked while the server runs.

Engine state is the scratch mount points of a server's workers
(``<state_dir>/scratch/<tenant>/<worker>``) and the tenant -> uid map.  Two
servers on one host must never share the first (worker ids restart at 1 in
every server, so their scratch paths would collide) and must share the second
(the uid map is host-wide, so that no two tenant folders get the same uid).
So by default a server keeps

* its scratch in ``<base>/servers/<host>-<port>`` (its identity: two live
  servers cannot listen on the same address), locked with ``flock`` on
  ``server.lock`` for the server's lifetime, and
* the uid map in ``<base>`` itself (``EngineConfig.uid_dir``), shared by
  every server of the host under its own lock (``engine.uids``),

where ``<base>`` is ``EngineConfig.state_dir`` (``$XDG_RUNTIME_DIR`` or
``/tmp``, then ``scriptvisor-<uid>``).  ``serve --state-dir DIR`` names the
server's directory explicitly; a second server given the same one is refused
with a message naming the pid that holds it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import replace

from scriptvisor.engine.config import EngineConfig

__all__ = ["ServerStateDir", "StateDirBusy", "server_state_dir"]

LOCK_FILE = "server.lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]")


class StateDirBusy(RuntimeError):
    """Another live server holds this state directory."""


def server_state_dir(base: str, host: str, port: int) -> str:
    """The default state directory of the server listening on ``host:port``."""
    return os.path.join(base, "servers", f"{_UNSAFE.sub('_', host)}-{port}")


class ServerStateDir:
    """The locked state directory of one running server (a context manager)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._fd: int | None = None

    def acquire(self) -> "ServerStateDir":
        os.makedirs(self.path, mode=0o711, exist_ok=True)
        fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(
                f"state directory {self.path} is in use by another scriptvisor server (pid {holder}); "
                "give this one its own with --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        # scratch mount points of a previous run of this server (the mounts
        # lived in its zygote's mount namespace: here they are plain folders)
        shutil.rmtree(os.path.join(self.path, "scratch"), ignore_errors=True)
        return self

    def release(self) -> None:
        if self._fd is not None:
            shutil.rmtree(os.path.join(self.path, "scratch"), ignore_errors=True)
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __enter__(self) -> "ServerStateDir":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def engine_config(self, cfg: EngineConfig) -> EngineConfig:
        """``cfg`` with this directory as its state dir; the uid map stays host-wide."""
        return replace(cfg, state_dir=self.path, uid_dir=cfg.uid_dir or cfg.state_dir)
