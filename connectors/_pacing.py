"""Client-side pacing under Dataverse's service protection limits (per user, 5-minute window).

Dataverse counts, per user and per web server, requests (6,000 per 300 s), combined execution
time (1,200,000 ms per 300 s) and concurrent requests (52); over a limit it answers 429 with
``Retry-After`` (dataverse.md §6). ``Pacer`` keeps one process below all three, with a margin,
so the 429 path (which the HTTP layer honours) stays the exception:

* a semaphore caps requests in flight;
* a sliding window of request start times: a request that would be the ``max_requests``-th in
  the window waits (through the injected ``sleep``) until the oldest one leaves it;
* a sliding window of finished requests' durations: while their sum reaches the execution-time
  budget, new requests wait likewise.

It paces one process. Several Function instances share the same application user: a backfill
shares its request budget across them with ``connectors.backfill_pacing.SharedBudget``
(``combine(pacer.slot, budget.slot)`` nests both), and the platform's 429 with ``Retry-After``
remains the backstop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Pacer"]

WINDOW_S = 300.0
# Below the documented limits (6,000 requests, 20 min execution, 52 concurrent) by ~10 %.
DEFAULT_MAX_REQUESTS = 5400
DEFAULT_MAX_EXECUTION_S = 1080.0
DEFAULT_MAX_CONCURRENT = 48


class Pacer:
    """Thread-safe limiter: ``with pacer.slot(): send()`` waits until a request may start."""

    def __init__(
        self,
        *,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_execution_s: float = DEFAULT_MAX_EXECUTION_S,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        window_s: float = WINDOW_S,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests < 1 or max_concurrent < 1 or window_s <= 0 or max_execution_s <= 0:
            raise ValueError("pacing limits must be positive")
        self.max_requests = max_requests
        self.max_execution_s = max_execution_s
        self.window_s = window_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._in_flight = threading.BoundedSemaphore(max_concurrent)
        self._starts: deque[float] = deque()
        self._durations: deque[tuple[float, float]] = deque()  # (finished at, seconds)
        self._busy_s = 0.0
        self.waited_s = 0.0  # total time slept for pacing, for logs and tests

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one concurrency slot for the request's duration, after any pacing wait."""
        with self._in_flight:
            self._admit()
            started = self._monotonic()
            try:
                yield
            finally:
                self._finished(started)

    def _admit(self) -> None:
        while True:
            with self._lock:
                now = self._monotonic()
                self._prune(now)
                wait = self._wait_s(now)
                if wait <= 0:
                    self._starts.append(now)
                    return
                self.waited_s += wait
            self._sleep(wait)  # outside the lock: other threads may finish meanwhile

    def _wait_s(self, now: float) -> float:
        wait = 0.0
        if len(self._starts) >= self.max_requests:
            # The window slides: the request may start when enough old ones have left it.
            oldest = self._starts[len(self._starts) - self.max_requests]
            wait = oldest + self.window_s - now
        if self._busy_s >= self.max_execution_s and self._durations:
            wait = max(wait, self._durations[0][0] + self.window_s - now)
        # A wait that rounds to nothing still has to move the clock forward.
        return wait if wait <= 0 else max(wait, 1e-3)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()
        while self._durations and self._durations[0][0] <= horizon:
            self._busy_s -= self._durations.popleft()[1]
        if not self._durations:
            self._busy_s = 0.0  # no float drift once the window is empty

    def _finished(self, started: float) -> None:
        with self._lock:
            now = self._monotonic()
            spent = max(0.0, now - started)
            self._durations.append((now, spent))
            self._busy_s += spent
