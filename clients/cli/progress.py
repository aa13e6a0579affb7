"""A progress bar on standard error for long transfers (attachments), redrawn at most ten times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]

_WIDTH = 30
_MIN_BYTES = 1024 * 1024  # smaller transfers finish before a bar would be read


class ProgressBar:
    """`bar(done, total)` draws `label [#####.....]  45%  120.3 MB/s`; `close()` ends the line.

    Drawn only on a terminal (or when `force`), so piped JSON output and logs stay clean.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, force: bool = False) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = force or self._stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled or total < _MIN_BYTES:
            return
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        share = done / total if total else 1.0
        filled = int(share * _WIDTH)
        rate = done / max(now - self._started, 1e-6) / 1e6
        self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {share:4.0%} {rate:7.1f} MB/s")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = False
