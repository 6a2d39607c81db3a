"""A one-line progress bar on stderr; tqdm when installed, else this.

Long runs (the full benchmark takes minutes) need a sign of life, but the
harness must not depend on anything beyond the standard library for it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress("recycle", total) as bar: bar.update(1, note)``."""

    #: Redraw at most this often: redrawing is I/O the measured systems share.
    MIN_INTERVAL = 0.2

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._start = time.monotonic()
        self._tqdm = None
        try:
            from tqdm import tqdm  # optional

            self._tqdm = tqdm(total=self.total, desc=label, file=self.stream, leave=True)
        except ImportError:
            pass

    def update(self, k: int = 1, note: str = "") -> None:
        self.done += k
        if self._tqdm is not None:
            self._tqdm.update(k)
            if note:
                self._tqdm.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.MIN_INTERVAL or self.done >= self.total:
            self._last = now
            self._draw(note)

    def _draw(self, note: str) -> None:
        width = 30
        frac = min(1.0, self.done / self.total)
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = time.monotonic() - self._start
        line = f"\r{self.label:<20} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s {note}"
        self.stream.write(line[:150].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            return
        self._draw("")
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
