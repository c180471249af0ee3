"""The values a backfill's checkpoint store keeps: counts, checkpoints, leases, run status.

``Counts`` keeps the four totals an admin reads first (scanned, filled, skipped, failed) and
``details``: how many tickets per reason (``skipped:nothing cleared the policy``,
``failed:RejectedError``) and fields filled per field (``filled:category``), so the summary
can say *why* without a second store. Details are capped (``MAX_DETAILS`` keys; the rest is
counted under ``<kind>:other``) so a row stays small whatever the reasons say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "COUNT_NAMES",
    "MAX_DETAILS",
    "Checkpoint",
    "Counts",
    "LeaseState",
    "RunStatus",
    "WindowLease",
    "WindowStatus",
]

WindowStatus = Literal["pending", "running", "done", "failed"]
LeaseState = Literal["acquired", "busy", "done", "failed", "missing", "released"]
COUNT_NAMES = ("scanned", "filled", "skipped", "failed")
MAX_DETAILS = 40
_DETAIL_CHARS = 80


@dataclass(frozen=True)
class Counts:
    """Tickets scanned, filled, skipped and failed, and ``details`` (why, which field)."""

    scanned: int = 0
    filled: int = 0
    skipped: int = 0
    failed: int = 0
    details: tuple[tuple[str, int], ...] = ()

    def __add__(self, other: Counts) -> Counts:
        a, b = self, other
        return Counts(
            a.scanned + b.scanned,
            a.filled + b.filled,
            a.skipped + b.skipped,
            a.failed + b.failed,
            merge_details(a.details, b.details),
        )

    def detail(self, key: str) -> int:
        """The count kept under ``key`` (0 when absent)."""
        return dict(self.details).get(key, 0)

    def by_kind(self, kind: str) -> dict[str, int]:
        """The details of one kind (``filled``, ``skipped``, ``failed``) without the prefix."""
        prefix = f"{kind}:"
        return {k[len(prefix) :]: v for k, v in self.details if k.startswith(prefix)}


def merge_details(
    a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, int], ...]:
    """Add two detail tuples; past ``MAX_DETAILS`` keys the smallest fold into ``<kind>:other``."""
    total: dict[str, int] = {}
    for key, value in (*a, *b):
        key = key[:_DETAIL_CHARS]
        total[key] = total.get(key, 0) + value
    if len(total) > MAX_DETAILS:
        keep = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
        folded = dict(keep[: MAX_DETAILS - 3])
        for key, value in keep[MAX_DETAILS - 3 :]:
            other = f"{key.split(':', 1)[0]}:other"
            folded[other] = folded.get(other, 0) + value
        total = folded
    return tuple(sorted(total.items()))


@dataclass(frozen=True)
class Checkpoint:
    """One window's row as stored: ``last_time`` is ISO-8601 UTC ("" before the first record).

    ``cursor`` is the platform's own continuation where it has one (Dataverse: the
    ``@odata.nextLink`` of the next page to read), "" otherwise.
    """

    run_id: str
    index: int
    status: WindowStatus = "pending"
    start: str = ""
    end: str = ""
    last_time: str = ""
    last_id: str = ""
    counts: Counts = field(default_factory=Counts)
    reason: str = ""
    owner: str = ""
    lease_until: float = 0.0
    attempts: int = 0
    etag: str | None = None
    cursor: str = ""


@dataclass(frozen=True)
class WindowLease:
    """The answer to ``acquire``: ``acquired`` (work from ``checkpoint``), or why not."""

    state: LeaseState
    checkpoint: Checkpoint | None = None
    token: str = ""
    lease_s: float = 0.0
    retry_after_s: float = 0.0
    #: Taken over from a holder whose lease ran out (it may have been killed mid-window).
    reclaimed: bool = False


@dataclass(frozen=True)
class RunStatus:
    """A run's progress aggregated over its windows."""

    run_id: str
    windows: int
    by_status: Mapping[str, int]
    counts: Counts
    failures: tuple[tuple[int, str], ...] = ()
    spec: Mapping[str, Any] = field(default_factory=dict)
    #: Tickets taken from the run's ``limit`` so far (0 without a limit).
    taken: int = 0

    @property
    def state(self) -> str:
        """``missing``, ``pending``, ``running``, ``done`` or ``failed`` (finished, some failed)."""
        if self.windows == 0:
            return "missing"
        done, failed = self.by_status.get("done", 0), self.by_status.get("failed", 0)
        if done + failed == self.windows:
            return "failed" if failed else "done"
        return "pending" if self.by_status.get("pending", 0) == self.windows else "running"
