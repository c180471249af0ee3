"""Staged faults on writes: commit and answer late, commit and hang up, or commit late.

These stage the races a client with a read timeout meets on a non-idempotent write (a PATCH
carrying a journal entry): the write may have landed although the client saw a timeout, or it
may land only after the client gave up and a redelivered job re-read the record.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = ["StagedWrite", "WriteFaultKind", "WriteFaults"]

WriteFaultKind = Literal[
    "commit_then_delay", "commit_then_drop", "delay_then_commit", "refuse", "drop_uncommitted"
]


@dataclass(frozen=True)
class StagedWrite:
    """What to do with one write: ``delay_s`` is the hold before answering or committing."""

    kind: WriteFaultKind
    delay_s: float = 0.0
    status: int = 503  # for "refuse": the 5xx answered instead of applying the write


class WriteFaults:
    """A FIFO of staged write faults plus a count of staged writes still in flight.

    Thread-safe. ``take`` hands the next fault to a write and counts it in flight until
    ``done``; ``wait_idle`` blocks until nothing is in flight.
    """

    def __init__(self) -> None:
        self._queue: deque[StagedWrite] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()

    def stage(
        self, kind: WriteFaultKind, count: int, delay_s: float = 0.0, status: int = 503
    ) -> None:
        """Apply ``kind`` to the next ``count`` writes (after those staged before)."""
        if count < 0 or delay_s < 0:
            raise ValueError("count and delay_s must not be negative")
        with self._cond:
            self._queue.extend(StagedWrite(kind, delay_s, status) for _ in range(count))

    def take(self) -> StagedWrite | None:
        """The fault for the write arriving now (counted in flight), or None."""
        with self._cond:
            if not self._queue:
                return None
            self._in_flight += 1
            return self._queue.popleft()

    def done(self) -> None:
        """A write handed out by ``take`` has committed (or failed) and been answered."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop faults not yet handed out; writes in flight finish as staged."""
        with self._cond:
            self._queue.clear()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no staged write is in flight; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
