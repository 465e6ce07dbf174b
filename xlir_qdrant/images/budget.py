"""How much full-size decoding runs at once, counted in bytes of decoded pixels.

Decode threads take their share from one DecodeBudget before a picture is decoded and give it
back once it has been reduced, so memory follows the pixels in flight rather than the number
of files: eight threads may decode eight 12 MP JPEGs side by side, but not eight 100 MP PNGs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

# What decoding may hold at once by default. With the process itself (~0.3 GB with the bundled
# model) this keeps indexing under 1 GB (bench/ingest.py --mix); a single picture larger than
# this decodes alone.
DEFAULT_DECODE_BYTES = 256 * 2**20


class DecodeBudget:
    """A byte budget shared by threads. Takers are served first come, first served, so a large
    picture is not overtaken for ever by small ones; one that needs more than the whole budget
    waits until nothing else is held, then decodes alone."""

    def __init__(self, limit: int = DEFAULT_DECODE_BYTES) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self.peak = 0  # the most ever held at once (what tests and benchmarks read)
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        self.take(n)
        try:
            yield
        finally:
            self.give(n)

    def take(self, n: int) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: ticket == self._serving and (self.held == 0 or self.held + n <= self.limit))
            self._serving += 1
            self.held += n
            self.peak = max(self.peak, self.held)
            self._cond.notify_all()

    def give(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()
