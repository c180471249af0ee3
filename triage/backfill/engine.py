"""Run one window of a backfill: lease it, read it page by page, checkpoint after each page.

``WindowRunner.run(spec, index)`` is what a queue message of the backfill queue triggers, and
what the CLI calls window after window. The window's lease (``CheckpointStore.acquire``) makes
a duplicate delivery harmless (``busy`` or ``done``); a worker killed at any point leaves a
lease that runs out, and whoever takes it over resumes from the last checkpoint, looking for
our note before writing the first page again.

Reading: ServiceNow pages by keyset (the window's query continues after the checkpoint's
``(time, sys_id)``, never an offset: the records we fill leave the query); Dataverse follows
its own ``@odata.nextLink`` (a paging cookie holding the last row's position), stored as the
checkpoint's cursor. Each page is decided, claimed and written in batches
(``triage.backfill.page``), then the checkpoint moves to the page's end, or, when the page
could not finish (a live enrichment holds a ticket, throttling, an unknown write outcome), to
just before the first unfinished record; the window is then given back with a wait.

Counting: each record the checkpoint moves past is counted once (filled, skipped or failed,
with its reason); a record written but not yet passed is counted filled at once (the query will
not return it again). So the totals add up however often a window is resumed.

A window gives itself back after ``time_budget_s`` (Functions time out) and is re-queued; a
transient failure (5xx, timeout, 429) gives it back with a wait; a permanent one (4xx, a query
the platform refuses, a bad setting) or too many attempts fails it with its reason.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from connectors.backfill_models import Counts, WindowLease
from connectors.backfill_state import CheckpointStore
from connectors.base import SourceRecord
from domain.errors import (
    ClaimedError,
    ConfigError,
    ConnectorError,
    EnrichmentError,
    ThrottledError,
    TransientError,
)
from triage.backfill.page import Outcome, PageWork, process_page
from triage.backfill.report import ReportSink
from triage.backfill.spec import BackfillSpec
from triage.backfill.windows import (
    Position,
    Window,
    parse_time,
    position_of,
    time_field,
    window_order,
    window_query,
)
from triage.pipeline import Pipeline

__all__ = ["WindowOutcome", "WindowRunner", "tally"]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

log = logging.getLogger(__name__)

State = Literal["done", "continue", "busy", "retry", "failed", "missing"]
DEFAULT_LEASE_S = 600.0
DEFAULT_TIME_BUDGET_S = 240.0
DEFAULT_MAX_ATTEMPTS = 200  # acquisitions, pauses included: a backstop only


@dataclass(frozen=True)
class WindowOutcome:
    """How a call to ``run`` ended: ``done``/``failed`` (final), or when to come back."""

    state: State
    counts: Counts = field(default_factory=Counts)
    retry_after_s: float = 0.0
    reason: str = ""


@dataclass
class WindowRunner:
    """Carries out windows of backfill runs; every collaborator is passed in."""

    pipeline: Pipeline
    store: CheckpointStore
    report: ReportSink | None = None
    lease_s: float = DEFAULT_LEASE_S
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    monotonic: Callable[[], float] = time.monotonic
    #: Called after each page with what it added (the CLI's progress bar).
    progress: Callable[[Counts], None] | None = None

    def run(self, spec: BackfillSpec, index: int) -> WindowOutcome:
        """Work on window ``index`` of ``spec``'s run until it is done or must pause."""
        lease = self.store.acquire(spec.run_id, index, lease_s=self.lease_s)
        if lease.state == "busy":
            return WindowOutcome("busy", retry_after_s=max(1.0, lease.retry_after_s))
        if lease.state in ("done", "failed"):
            return WindowOutcome(lease.state)  # a duplicate delivery: nothing to do
        if lease.state != "acquired" or lease.checkpoint is None:
            return WindowOutcome("missing", reason="no such window")
        if lease.checkpoint.attempts > self.max_attempts:
            reason = f"gave up after {lease.checkpoint.attempts - 1} attempts"
            self.store.fail(lease, reason)
            return WindowOutcome("failed", reason=reason)
        try:
            return self._work(spec, lease)
        except ClaimedError as exc:  # our lease was taken over (we were too slow): let go
            return WindowOutcome("busy", retry_after_s=max(1.0, exc.retry_after_s))
        except ThrottledError as exc:
            return self._give_back(lease, exc.retry_after_s or 30.0, f"throttled: {exc}")
        except TransientError as exc:
            return self._give_back(lease, 0.0, f"transient: {exc}")
        except (ConnectorError, ConfigError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("backfill %s window %d failed: %s", spec.run_id, index, reason)
            self.store.fail(lease, reason)
            return WindowOutcome("failed", reason=reason[:300])

    def _work(self, spec: BackfillSpec, lease: WindowLease) -> WindowOutcome:
        assert lease.checkpoint is not None
        cp = lease.checkpoint
        window = Window(
            spec.run_id,
            cp.index,
            parse_time(cp.start),
            parse_time(cp.end),
            time_field(spec.system, spec.by),
        )
        started = self.monotonic()
        # Taken over from a worker that may have died mid-write: its landed writes made our
        # user the last updater, which the query leaves out. Only where it cannot (no usable
        # user id) are the first page's tickets checked for our note, one read each.
        look_first = lease.reclaimed and not self._excludes_ours(spec)
        total = Counts()
        while True:
            wanted = self.store.take(spec.run_id, spec.page_size)
            if wanted <= 0:
                self.store.finish(lease)
                return WindowOutcome("done", total, reason="the run's limit is reached")
            records, more, cursor = self._read(spec, window, lease, wanted)
            if len(records) < wanted:
                self.store.take(spec.run_id, len(records) - wanted)  # give back the unread
            work = process_page(
                self.pipeline,
                records,
                dry_run=spec.dry_run,
                look_first=look_first,
                report=self.report,
            )
            look_first = False
            lease, delta = self._checkpoint(spec, window, lease, records, work, cursor)
            total = total + delta
            if self.progress is not None:
                self.progress(delta)
            if work.stop:
                self.store.release(lease)
                wait = max(1.0, work.retry_after_s)
                return WindowOutcome("busy", total, wait, reason=work.stop)
            if not more:
                self.store.finish(lease)
                return WindowOutcome("done", total)
            if self.monotonic() - started > self.time_budget_s:
                self.store.release(lease)
                return WindowOutcome("continue", total, reason="time budget used")

    def _excludes_ours(self, spec: BackfillSpec) -> bool:
        user = self.pipeline.integration_user()
        if not user:
            return False
        return spec.system == "servicenow" or bool(_GUID.fullmatch(user))

    def _read(
        self, spec: BackfillSpec, window: Window, lease: WindowLease, limit: int
    ) -> tuple[list[SourceRecord], bool, str]:
        assert lease.checkpoint is not None
        cp, mapping = lease.checkpoint, self.pipeline.mapping
        connector: Any = self.pipeline.connector
        fields = _fields(mapping.platform_fields(), window.field, mapping.last_updated_by)
        if spec.system == "dataverse" and cp.cursor:
            page = connector.read_page(spec.table, "", fields, limit=limit, cursor=cp.cursor)
        else:
            after = None
            if spec.system == "servicenow" and cp.last_id:
                after = Position(parse_time(cp.last_time), cp.last_id)
            query = window_query(
                window,
                spec.system,
                mapping,
                spec.query,
                after=after,
                exclude_user=self.pipeline.integration_user(),
            )
            order = window_order(window, spec.system, mapping)
            if spec.system == "servicenow":
                page = connector.read_page(spec.table, query, fields, limit=limit)
            else:
                page = connector.read_page(spec.table, query, fields, limit=limit, order=order)
        return list(page.records), bool(page.more), page.cursor or ""

    def _checkpoint(
        self,
        spec: BackfillSpec,
        window: Window,
        lease: WindowLease,
        records: Sequence[SourceRecord],
        work: PageWork,
        cursor: str,
    ) -> tuple[WindowLease, Counts]:
        """Move the checkpoint as far as the page got; count what it moved past."""
        assert lease.checkpoint is not None
        cp = lease.checkpoint
        pending = work.first_pending
        if pending is None:
            passed = len(records)
        elif spec.system == "servicenow":
            passed = pending  # keyset: resume at the first unfinished record
        else:
            passed = 0  # Dataverse resumes at a page boundary: this page is read again
        delta = tally(work.outcomes, passed)
        if passed == 0 and pending is not None:
            last_time, last_id, next_cursor = cp.last_time, cp.last_id, cp.cursor
        elif records:
            last = position_of(window, records[passed - 1].record_id, records[passed - 1].fields)
            last_time, last_id = last.time.isoformat(), last.record_id
            next_cursor = cursor if pending is None else cp.cursor
        else:
            last_time, last_id, next_cursor = cp.last_time, cp.last_id, cp.cursor
        lease = self.store.advance(
            lease, last_time=last_time, last_id=last_id, delta=delta, cursor=next_cursor
        )
        return lease, delta

    def _give_back(self, lease: WindowLease, wait_s: float, reason: str) -> WindowOutcome:
        try:
            self.store.release(lease)
        except EnrichmentError as exc:  # the lease runs out by itself
            log.warning("could not give a backfill window back: %s", exc)
        return WindowOutcome("retry", retry_after_s=wait_s, reason=reason[:300])


def tally(outcomes: Sequence[Outcome], passed: int) -> Counts:
    """Counts for a page: every record before ``passed``, and any filled one after it."""
    details: dict[str, int] = {}
    totals = {"filled": 0, "skipped": 0, "failed": 0}
    for pos, outcome in enumerate(outcomes):
        if outcome.kind == "pending" or (pos >= passed and outcome.kind != "filled"):
            continue
        totals[outcome.kind] += 1
        if outcome.kind == "filled":
            for name in outcome.fields:
                details[f"filled:{name}"] = details.get(f"filled:{name}", 0) + 1
        else:
            key = f"{outcome.kind}:{outcome.reason or 'unknown'}"
            details[key] = details.get(key, 0) + 1
    scanned = sum(totals.values())
    return Counts(scanned, totals["filled"], totals["skipped"], totals["failed"],
                  tuple(sorted(details.items())))  # fmt: skip


def _fields(fields: Sequence[str], *extra: str) -> list[str]:
    out = list(fields)
    for name in extra:
        if name and name not in out:
            out.append(name)
    return out
