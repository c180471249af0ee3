"""A request budget shared by every instance of a backfill, slowed down as a whole by 429s.

The platform's quota belongs to the integration user, not to a process: a ServiceNow rate-limit
rule counts one user's requests per hour; Dataverse allows a user 6,000 requests and 20 minutes
of execution time per 5 minutes per web server (dataverse.md §6). A backfill runs in many
Function instances (and the CLI) at once, and live webhooks use the same user, so the backfill
may spend only ``share`` of the quota, counted in one place: a row per **scope** in a store
(Table Storage ``enrichbudget`` in Azure, memory in tests and single-process runs).

Semantics
---------
* **Slots.** Time is cut into slots of ``slot_s`` seconds (default ``period_s / 60``, at least
  1 s); slot ``k`` is ``[k * slot_s, (k + 1) * slot_s)`` of the injected wall clock ``now``.
  The first reservation in a slot opens it: its allowance is ``A = requests * share * factor *
  slot_s / period_s``; the slot's cap is ``floor(carry + A)`` and the fraction left becomes the
  next slot's ``carry``, so a non-integer allowance alternates (2, 3, 2, ...) and the long-run
  rate is exact. Unused whole requests are not carried: an idle minute does not buy a burst.
* **The row** (PartitionKey = scope, RowKey ``budget``) holds the open slot, its cap and what it
  has used, the carry, the shared ``factor``, ``paused_until``, the throttle count and, with
  ``max_execution_s``, the execution seconds counted against the slot.
* **Reservations** are etag-conditional read-modify-writes of the row; a lost race re-reads and
  tries again at once. Refusals need no write: ``used`` only grows within a slot and
  ``paused_until`` only grows, so a cached row that says "full" or "paused" is never wrong.
* **Blocks.** A process reserves ``block`` requests at a time (fewer when the slot has fewer
  left) and hands them to its threads. Grants are valid only in the slot they were reserved in:
  those unused at the slot's end are **lost** (the platform never saw them, but the slot counted
  them), so keep ``block`` small. Measured on Azurite: at ``block`` 1 a lone instance makes 1.02
  Storage operations per request (one conditional update, reusing its own last etag), two
  instances taking turns 3.0 (each write loses the race once: re-read, write again); at 5,
  0.22 and 0.60; a block wastes at most ``block - 1`` requests per instance per slot.
* **Over the allowance** a request sleeps (the injected ``sleep``) until the next slot.
* **Execution time** (``max_execution_s``, Dataverse's 20 minutes): ``slot()`` measures how long
  each request took; those seconds are added to the row at the process's next reservation. A
  slot refuses requests once its execution seconds reach ``max_execution_s * share * factor *
  slot_s / period_s``; seconds beyond that are carried into the next slot as debt.
* **Throttles.** ``throttled(retry_after_s)`` (wire it as ``HttpClient(on_throttle=...)``)
  pauses every holder of the scope until ``now + retry_after_s``, closes the current slot, and
  halves ``factor`` (not below 0.05). Reports arriving while a pause is running (the same
  overload seen by other instances, or parts of one batch answer) extend the pause but do not
  cut again. Every slot that opens after the pause's slot without a new throttle gives back
  0.05 of the factor, so a halved rate is recovered in ten clean slots. Another process learns
  of a pause at its next reservation: with ``block`` > 1 it may still spend the grants it holds
  in the current slot (at most ``block - 1``).
* **Bound.** Grants started in slot ``k`` never exceed the cap the slot opened with:
  ``floor(carry + A) <= ceil(requests * share * slot_s / period_s)``, whatever ``block``, the
  number of instances and threads; over ``n`` consecutive slots at factor 1 the total is at most
  ``n * A + 1``.

Scopes: one per platform user, ``budget_scope("servicenow", "acme.service-now.com", "svc")`` ->
``servicenow:acme.service-now.com:svc``. ``SharedBudget`` stores it under ``scope_key(scope)``
(its ``.scope``), which makes any scope a valid PartitionKey:
``/ \\ # ?``, control characters and ``%`` itself become ``%XX`` (so distinct scopes stay
distinct); one longer than 200 characters is cut and suffixed with a hash of the whole.

Concurrency is not shared: the per-process ``connectors._pacing.Pacer`` keeps its semaphore;
``combine(pacer.slot, budget.slot)`` nests both (the budget innermost, closest to the request).
Thread-safe within a process; correct across processes through the row's etag. Storage errors
surface as ``ConnectorError`` subclasses (``connectors.queue.map_storage_error``).
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from connectors.backfill_budget_slots import (
    CUT,
    MIN_FACTOR,
    RECOVER_STEP,
    Row,
    budget_scope,
    new_row,
    open_slot,
    scope_key,
    throttle_row,
)
from domain.errors import ConfigError

if TYPE_CHECKING:
    from connectors.backfill_budget_rows import MemoryBudgetRows, TableBudgetRows

__all__ = [
    "BUDGET_TABLE",
    "CUT",
    "MIN_FACTOR",
    "RECOVER_STEP",
    "BudgetRows",
    "BudgetStats",
    "MemoryBudgetRows",
    "Row",
    "SharedBudget",
    "TableBudgetRows",
    "budget_scope",
    "combine",
    "scope_key",
]

BUDGET_TABLE = "enrichbudget"
_MIN_WAIT_S = 1e-3  # a wait that rounds to nothing still has to move the clock
_RACES_BEFORE_BACKOFF = 20


def __getattr__(name: str) -> Any:
    # PEP 562: the row backends (and the Table Storage SDK) load on first use (cold start).
    if name in ("MemoryBudgetRows", "TableBudgetRows"):
        return getattr(importlib.import_module("connectors.backfill_budget_rows"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BudgetRows(Protocol):
    """One row per scope with etag-conditional writes (a lost race returns None)."""

    def get(self, scope: str) -> tuple[Row, str] | None:
        """The row and its etag, or None when the scope has no row yet."""

    def insert(self, scope: str, row: Mapping[str, Any]) -> str | None:
        """Create the row; its etag, or None when it exists already."""

    def replace(self, scope: str, row: Mapping[str, Any], etag: str) -> str | None:
        """Replace the row if its etag is still ``etag``; the new etag, or None."""


@dataclass(frozen=True)
class BudgetStats:
    """What this instance did: requests granted, seconds slept (of which paused by a throttle),
    and ``throttled()`` calls it received."""

    granted: int
    waited_s: float
    throttles: int
    paused_s: float


def combine(
    *pacers: Callable[[], AbstractContextManager[None]],
) -> Callable[[], AbstractContextManager[None]]:
    """One pacer entering ``pacers`` in order (the first outermost), leaving them in reverse."""

    @contextmanager
    def slot() -> Iterator[None]:
        with ExitStack() as stack:
            for pacer in pacers:
                stack.enter_context(pacer())
            yield

    return slot


class SharedBudget:
    """A scope's request budget shared through ``rows`` (see the module docstring)."""

    def __init__(
        self,
        rows: BudgetRows,
        *,
        scope: str,
        requests: int,
        period_s: float,
        share: float = 0.8,
        slot_s: float | None = None,
        block: int = 1,
        max_execution_s: float | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests < 1 or not period_s > 0 or not 0 < share <= 1 or block < 1:
            raise ConfigError(
                "budget: requests, period_s and block must be positive, share in (0, 1]"
            )
        if (slot_s is not None and not slot_s > 0) or (
            max_execution_s is not None and not max_execution_s > 0
        ):
            raise ConfigError("budget: slot_s and max_execution_s must be positive")
        self.scope = scope_key(scope)
        self.slot_s = float(slot_s) if slot_s is not None else max(1.0, period_s / 60.0)
        self.per_slot = requests * share * self.slot_s / period_s  # the allowance at factor 1
        self.exec_per_slot = (
            None if max_execution_s is None else max_execution_s * share * self.slot_s / period_s
        )
        self.block = block
        self._rows = rows
        self._now = now
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cached: tuple[Row, str] | None = None
        self._held = 0
        self._held_slot = -1
        self._paused_until = 0.0
        self._pending_exec_s = 0.0
        self._granted = 0
        self._waited_s = 0.0
        self._paused_s = 0.0
        self._throttles = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Block until one request may start, then measure how long it runs."""
        self._acquire()
        started = self._now()
        try:
            yield
        finally:
            spent = max(0.0, self._now() - started)
            if self.exec_per_slot is not None:
                with self._lock:
                    self._pending_exec_s += spent

    def throttled(self, retry_after_s: float) -> None:
        """Pause every holder of the scope until now + ``retry_after_s`` and cut the rate."""
        wait = float(retry_after_s)
        wait = wait if math.isfinite(wait) and wait > 0 else 0.0
        with self._lock:
            now = self._now()
            until = now + wait
            self._throttles += 1
            self._held = 0
            self._paused_until = max(self._paused_until, until)
            while True:
                row, etag = self._row()
                row = throttle_row(row, now, until, self.slot_s)
                if self._write(row, etag):
                    return

    def stats(self) -> BudgetStats:
        """This instance's counters."""
        with self._lock:
            return BudgetStats(self._granted, self._waited_s, self._throttles, self._paused_s)

    def shared_state(self) -> Row | None:
        """The scope's row as stored (factor, paused_until, throttles, ...), for progress."""
        found = self._rows.get(self.scope)
        return None if found is None else found[0]

    # ---- internals ---------------------------------------------------------------------

    def _slot_of(self, t: float) -> int:
        return math.floor(t / self.slot_s)

    def _acquire(self) -> None:
        while True:
            with self._lock:
                now = self._now()
                k = self._slot_of(now)
                paused = now < self._paused_until
                if paused:
                    wait = self._paused_until - now
                elif self._held > 0 and self._held_slot == k:
                    wait = 0.0
                else:
                    self._held = 0
                    wait, paused = self._reserve(now, k)
                if wait <= 0:
                    self._held -= 1
                    self._granted += 1
                    return
                wait = max(wait, _MIN_WAIT_S)
                self._waited_s += wait
                if paused:
                    self._paused_s += wait
            self._sleep(wait)  # outside the lock: other threads may use grants meanwhile

    def _reserve(self, now: float, k: int) -> tuple[float, bool]:
        """Reserve up to ``block`` requests in slot ``k``: (0, False) with ``_held`` set, or
        the seconds to wait and whether it is a pause. Called under ``_lock``."""
        races = 0
        while True:
            row, etag = self._row()
            paused_until = float(row["paused_until"])
            if now < paused_until:
                self._paused_until = max(self._paused_until, paused_until)
                return paused_until - now, True
            row = dict(row)
            opened = open_slot(row, k, self.per_slot, self.exec_per_slot)
            if self._pending_exec_s:
                row["exec_s"] = float(row["exec_s"]) + self._pending_exec_s
            take = min(self.block, int(row["cap"]) - int(row["used"]))
            exec_full = self.exec_per_slot is not None and float(row["exec_s"]) >= float(
                row["exec_cap"]
            )
            if take <= 0 or exec_full:
                wait = (k + 1) * self.slot_s - now
                if not opened and not self._pending_exec_s:
                    return wait, False  # refused from what we know: no write needed
                if self._write(row, etag):
                    self._pending_exec_s = 0.0
                    return wait, False
            else:
                row["used"] = int(row["used"]) + take
                if self._write(row, etag):
                    self._pending_exec_s = 0.0
                    self._held, self._held_slot = take, k
                    return 0.0, False
            races += 1
            if races >= _RACES_BEFORE_BACKOFF:  # a storm of writers: let the others through
                return min(self.slot_s / 20.0, 0.05), False

    def _row(self) -> tuple[Row, str]:
        """The cached row (possibly stale: writes are conditional), else the stored one."""
        while self._cached is None:
            found = self._rows.get(self.scope)
            if found is None:
                fresh = new_row()
                etag = self._rows.insert(self.scope, fresh)
                found = None if etag is None else (fresh, etag)
            self._cached = found
        return self._cached

    def _write(self, row: Row, etag: str) -> bool:
        new = self._rows.replace(self.scope, row, etag)
        self._cached = None if new is None else (row, new)
        return new is not None
