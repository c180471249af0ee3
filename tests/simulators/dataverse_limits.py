"""Service protection limits of the Dataverse simulator (dataverse.md §6).

Per user, over a sliding window (300 s on the simulator's clock): the number of requests
(``0x80072322``), their combined execution time (``0x80072321``, modelled as a configurable
cost per request) and, at any instant, the number of concurrent requests (``0x80072326``).
A blocked request answers 429 with ``Retry-After`` (seconds) and is not counted.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict, deque
from dataclasses import dataclass

from tests.simulators import Clock

__all__ = ["Limits", "ServiceProtection", "Throttled"]


@dataclass
class Limits:
    """The documented defaults; tests lower them."""

    requests: int = 6000
    window_s: float = 300.0
    execution_ms: int = 1_200_000
    concurrent: int = 52
    cost_ms: int = 0  # modelled execution time of each request


@dataclass(frozen=True)
class Throttled:
    """Why a request was refused: error code, message and Retry-After seconds."""

    code: str
    message: str
    retry_after_s: int


class ServiceProtection:
    """Sliding-window request and execution-time counters and a concurrency gauge per user."""

    def __init__(self, clock: Clock, limits: Limits | None = None) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._seen: dict[str, deque[tuple[float, int]]] = defaultdict(deque)  # (time, cost ms)
        self._inflight: dict[str, int] = defaultdict(int)

    def enter(self, user: str) -> Throttled | None:
        """Count a request of ``user``; on success the caller must call ``leave(user)``."""
        lim, now = self.limits, self.clock.now()
        with self._lock:
            seen = self._seen[user]
            while seen and seen[0][0] <= now - lim.window_s:
                seen.popleft()
            if self._inflight[user] >= lim.concurrent:
                return Throttled(
                    "0x80072326",
                    f"Number of concurrent requests exceeded the limit of {lim.concurrent}.",
                    1,
                )
            wait = math.ceil(seen[0][0] + lim.window_s - now) if seen else 1
            if len(seen) >= lim.requests:
                return Throttled(
                    "0x80072322",
                    f"Number of requests exceeded the limit of {lim.requests} over time window "
                    f"of {int(lim.window_s)} seconds.",
                    max(1, wait),
                )
            if sum(cost for _, cost in seen) >= lim.execution_ms:
                return Throttled(
                    "0x80072321",
                    f"Combined execution time of incoming requests exceeded limit of "
                    f"{lim.execution_ms:,} milliseconds over time window of "
                    f"{int(lim.window_s)} seconds. Decrease number of concurrent requests or "
                    "reduce the duration of requests and try again later.",
                    max(1, wait),
                )
            seen.append((now, lim.cost_ms))
            self._inflight[user] += 1
            return None

    def leave(self, user: str) -> None:
        """A request counted by ``enter`` has been answered."""
        with self._lock:
            self._inflight[user] = max(0, self._inflight[user] - 1)

    def reset(self) -> None:
        """Forget every window (not in-flight requests)."""
        with self._lock:
            self._seen.clear()
