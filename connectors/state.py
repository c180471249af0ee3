"""State shared by every function instance: the webhook replay guard and per-job write claims.

The Functions host runs many instances and each runs several invocations at once, so a
per-process memory cannot see what a neighbour did. The protocols here are what the flow uses;
``connectors.table_state`` implements them on Azure Table Storage (Azurite in tests) with its
atomic conditional operations, and the memory twins below serve the CLI and unit tests with the
same semantics within one process:

* **Replay guard** — ``first_use(key)`` is ``True`` exactly once per key until it expires.
* **Claims** — before writing to a ticket a worker claims ``(system, record, input hash)``:
  a row holding a lease (``lease_until``). A second worker finding a live lease backs off; one
  finding ``done`` skips; one finding an expired lease (the holder crashed or timed out) takes
  it over, and only one of several racing takers wins (``reclaimed``: look before writing).
  ``complete`` marks the claim done; ``release`` drops it (failure before any write: let the
  next attempt in at once); ``hold`` shortens the lease to a settle time (a write whose outcome
  is unknown may still commit: nobody may re-read and re-write before it has settled).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "Claim",
    "ClaimStore",
    "MemoryClaimStore",
    "MemoryReplayGuard",
    "ReplayGuard",
    "row_key",
]

ClaimState = Literal["acquired", "busy", "done"]


@dataclass(frozen=True)
class Claim:
    """The answer to ``claim``: acquired (write now), busy (back off) or done (skip)."""

    key: str
    state: ClaimState
    token: str = ""
    etag: str | None = None
    retry_after_s: float = 0.0
    #: Acquired from a holder whose lease ran out: its write may have landed; look first.
    reclaimed: bool = False
    outcome: str = ""


class ReplayGuard(Protocol):
    """Remembers signed requests until they expire."""

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """True exactly once per ``key``: the first caller, in any instance."""
        ...

    def purge(self) -> int:
        """Forget expired keys; returns how many."""
        ...


class ClaimStore(Protocol):
    """Atomic per-job claims with leases (see the module docstring)."""

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Try to take ``key`` for ``lease_s`` seconds."""
        ...

    def complete(self, claim: Claim, outcome: str) -> None:
        """Mark an acquired claim done: later claims of the same key answer ``done``."""
        ...

    def release(self, claim: Claim) -> None:
        """Give an acquired claim up (nothing was written): the next claim acquires at once."""
        ...

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Keep an acquired claim ``settle_s`` more seconds, then let it expire."""
        ...

    def purge(self, older_than_s: float) -> int:
        """Forget claims untouched for ``older_than_s`` seconds; returns how many."""
        ...


def row_key(key: str) -> tuple[str, str]:
    """(PartitionKey, RowKey) for a claim key."""
    # Keys hold ':' and ids; hashing keeps them within Table Storage's key alphabet and spreads
    # rows over 256 partitions.
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return digest[:2], digest


# ---- memory ------------------------------------------------------------------------------


class MemoryReplayGuard:
    """A per-process replay guard (CLI and tests); forgets expired keys as it goes."""

    def __init__(self, now: Callable[[], float] = time.time, max_items: int = 100_000) -> None:
        self._now = now
        self._max = max_items
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is offered (until it expires)."""
        with self._lock:
            now = self._now()
            if len(self._seen) >= self._max:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            known = self._seen.get(key)
            if known is not None and known > now:
                return False
            self._seen[key] = expires_at
            return True

    def purge(self) -> int:
        """Forget expired keys."""
        with self._lock:
            now = self._now()
            before = len(self._seen)
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            return before - len(self._seen)


@dataclass
class _Row:
    status: str
    token: str
    lease_until: float
    updated_at: float
    outcome: str = ""


class MemoryClaimStore:
    """Claims within one process (the CLI; unit tests), bounded in size."""

    def __init__(self, now: Callable[[], float] = time.time, max_items: int = 50_000) -> None:
        self._now = now
        self._max = max_items
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Acquire, or report busy/done."""
        with self._lock:
            now = self._now()
            row = self._rows.get(key)
            if row is not None and row.status == "done":
                return Claim(key, "done", outcome=row.outcome)
            if row is not None and row.lease_until > now:
                return Claim(key, "busy", retry_after_s=row.lease_until - now)
            if len(self._rows) >= self._max:
                self._rows.pop(next(iter(self._rows)))
            token = uuid.uuid4().hex
            self._rows[key] = _Row("claimed", token, now + lease_s, now)
            return Claim(key, "acquired", token=token, reclaimed=row is not None)

    def complete(self, claim: Claim, outcome: str) -> None:
        """Mark done if the claim is still ours."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token:
                row.status, row.outcome, row.updated_at = "done", outcome, self._now()

    def release(self, claim: Claim) -> None:
        """Forget the claim if it is still ours."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token and row.status != "done":
                del self._rows[claim.key]

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Let the claim expire ``settle_s`` from now."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token and row.status != "done":
                row.lease_until = row.updated_at = self._now()
                row.lease_until += settle_s

    def purge(self, older_than_s: float) -> int:
        """Forget claims untouched for ``older_than_s`` seconds."""
        with self._lock:
            cutoff = self._now() - older_than_s
            stale = [k for k, r in self._rows.items() if r.updated_at < cutoff]
            for key in stale:
                del self._rows[key]
            return len(stale)
