"""Atomic file replacement, shared by the token commands and the script store."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(target: Path, text: str, mode: int | None = 0o644) -> None:
    """Replace ``target`` with ``text``: temp file + fsync + rename + directory
    fsync, so a crash leaves the old or the new content, never half of one.
    ``mode=None`` keeps the mode of the file being replaced."""
    if mode is None:
        mode = stat.S_IMODE(target.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # the rename itself is durable once the directory is synced
    dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
