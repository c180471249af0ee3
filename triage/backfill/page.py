"""One page of a backfill window: decide each ticket, claim, write the page in batches.

For every record of the page (read once, in the window's stable order) the same policy as live
enrichment decides (``Pipeline.plan``). A backfill writes only tickets that get at least one
value (suggest-mode fields ride along in the note): a note-only update on a years-old ticket
helps nobody and would be repeated by the next run. Shadow mode records and writes nothing; a
dry run writes nothing and reports.

Exactly once, as live: each write is claimed on ``(system, table, record, input hash)`` in the
claim store live webhooks use, so a ticket being enriched live (busy claim) is left to it and
revisited, and one already written for this text (done claim) is skipped. The page's writes go
through the platform's batch endpoint (``BatchConnector.update_many``: ServiceNow Batch API,
Dataverse ``$batch`` with one change set per case and If-Match); each outcome is settled like
``Pipeline.enrich_record`` settles its write: written → claim done, decisions logged, a person's
racing edit restored (ServiceNow); 412 → re-read and re-decided through the live path;
provably not applied → claim released; unknown (timeout, 5xx) → claim held for the settle time.

Each record ends ``filled``, ``skipped`` or ``failed`` with a reason, or ``pending``: not
finished now (busy live claim, throttled, outcome unknown) and to be read again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from connectors.base import SourceRecord
from connectors.state import Claim
from domain.errors import (
    ClaimedError,
    ConflictError,
    ConnectorError,
    NotFoundError,
    ThrottledError,
    UnavailableError,
)
from domain.models import Ticket
from triage.backfill.report import ReportSink, report_rows
from triage.pipeline import Pipeline, Plan, input_hash, note_marker

__all__ = ["Outcome", "PageWork", "process_page"]

log = logging.getLogger(__name__)

Kind = Literal["filled", "skipped", "failed", "pending"]


@dataclass(frozen=True)
class Outcome:
    """What became of one record of the page."""

    kind: Kind
    reason: str = ""
    fields: tuple[str, ...] = ()


@dataclass
class PageWork:
    """The page's outcomes (one per record, in page order) and why the window must pause."""

    outcomes: list[Outcome]
    retry_after_s: float = 0.0
    #: ``""`` (the page is finished), ``busy``, ``throttled`` or ``unknown``.
    stop: str = ""

    @property
    def first_pending(self) -> int | None:
        """The page position of the first record not finished, or None."""
        return next((i for i, o in enumerate(self.outcomes) if o.kind == "pending"), None)


@dataclass
class _Item:
    pos: int
    record: SourceRecord
    ticket: Ticket
    digest: str
    plan: Plan
    claim: Claim | None = None
    fields: tuple[str, ...] = field(default_factory=tuple)


def process_page(
    pipeline: Pipeline,
    records: Sequence[SourceRecord],
    *,
    dry_run: bool,
    look_first: bool = False,
    report: ReportSink | None = None,
) -> PageWork:
    """Decide, claim and write one page; see the module docstring.

    ``look_first``: the window was taken over from a worker that may have died mid-write, so a
    ticket is checked for our note before it is written. Raises only for failures of the whole
    page's reading side (the enrichers never raise; platform write failures become outcomes).
    """
    work = PageWork([Outcome("pending")] * len(records))
    mapping = pipeline.mapping
    user = pipeline.integration_user()
    columns = {column: name for name, column in mapping.fields.items()}
    items: list[_Item] = []
    for pos, record in enumerate(records):
        if user and record.fields.get(mapping.last_updated_by) == user:
            work.outcomes[pos] = Outcome("skipped", "last update is ours")
            continue
        ticket = pipeline.ticket_of(record)
        digest = input_hash(ticket)
        plan = pipeline.plan(record, ticket, digest)
        values = plan.values
        shadow = pipeline.shadow is not None
        if report is not None:
            report.add(
                report_rows(
                    record, ticket, plan.decisions, values, mapping,
                    shadow=shadow, writes=bool(values),
                )
            )  # fmt: skip
        if shadow:
            if not dry_run:  # a dry run records nothing anywhere: the report is its output
                pipeline.record_shadow(record, ticket, digest, plan)
            work.outcomes[pos] = Outcome("skipped", "shadow mode")
            continue
        if not values:
            suggested = any(d.action == "suggest" for d in plan.decisions)
            why = "only suggestions (no note-only updates)" if suggested else "nothing to fill"
            work.outcomes[pos] = Outcome("skipped", why)
            continue
        filled = tuple(sorted(columns.get(c, c) for c in values))
        if dry_run:
            work.outcomes[pos] = Outcome("filled", "dry run", filled)
            continue
        items.append(_Item(pos, record, ticket, digest, plan, fields=filled))
    _claim(pipeline, items, work, look_first=look_first)
    _write(pipeline, [i for i in items if i.claim is not None], work)
    return work


def _claim(pipeline: Pipeline, items: list[_Item], work: PageWork, *, look_first: bool) -> None:
    for item in items:
        record = item.record
        key = f"{item.ticket.system}:{record.table}:{record.record_id}:{item.digest}"
        claim = pipeline.claims.claim(key, lease_s=pipeline.lease_s)
        if claim.state == "done":
            work.outcomes[item.pos] = Outcome("skipped", "already enriched")
            continue
        if claim.state == "busy":
            # Live enrichment (or another worker) holds it: leave it, read it again later.
            work.retry_after_s = max(work.retry_after_s, claim.retry_after_s, 1.0)
            work.stop = work.stop or "busy"
            continue
        if (look_first or claim.reclaimed) and _has_note(pipeline, record, item.digest):
            pipeline.claims.complete(claim, "written")
            work.outcomes[item.pos] = Outcome("skipped", "our note is there")
            continue
        item.claim = claim


def _has_note(pipeline: Pipeline, record: SourceRecord, digest: str) -> bool:
    return pipeline.connector.has_note(
        record.table, record.record_id, note_marker(digest), element=pipeline.mapping.note_field
    )


def _write(pipeline: Pipeline, items: list[_Item], work: PageWork) -> None:
    if not items:
        return
    table = items[0].record.table
    updates = [(i.record.record_id, dict(i.plan.body), i.record.etag) for i in items]
    outcomes = pipeline.connector.update_many(table, updates)  # type: ignore[attr-defined]
    for item, outcome in zip(items, outcomes, strict=True):
        assert item.claim is not None
        if outcome.record is not None:
            _written(pipeline, item, outcome.record, work)
            continue
        error = outcome.error
        if isinstance(error, ConflictError):
            # Changed since our read (412): the live path re-reads and re-decides.
            pipeline.claims.release(item.claim)
            work.outcomes[item.pos] = _redo(pipeline, item, work)
        elif isinstance(error, NotFoundError):
            pipeline.claims.release(item.claim)
            work.outcomes[item.pos] = Outcome("skipped", "deleted meanwhile")
        elif outcome.may_have_run:
            # Unknown outcome: let a late commit settle; the next reading looks for our note.
            pipeline.claims.hold(item.claim, pipeline.settle_s)
            work.retry_after_s = max(work.retry_after_s, pipeline.settle_s)
            work.stop = "unknown"
        elif isinstance(error, ThrottledError) or error is None:
            pipeline.claims.release(item.claim)
            wait = (error.retry_after_s if error else None) or 1.0
            work.retry_after_s = max(work.retry_after_s, wait)
            work.stop = work.stop or "throttled"
        else:
            pipeline.claims.release(item.claim)
            work.outcomes[item.pos] = Outcome("failed", type(error).__name__)


def _written(pipeline: Pipeline, item: _Item, stored: SourceRecord, work: PageWork) -> None:
    assert item.claim is not None
    record = item.record
    pipeline.log_decisions(record, item.ticket, item.digest, item.plan)
    try:
        restored = pipeline.repair.restore(
            record, note_marker(item.digest), current=stored, read=record
        )
    except ConnectorError as exc:  # the write stands; the restore is retried by nobody: log
        log.warning("could not restore a person's value on %s: %s", record.record_id, exc)
        restored = ""
    pipeline.claims.complete(item.claim, "conflict" if restored else "written")
    reason = "a person's racing edit kept" if restored else "written"
    work.outcomes[item.pos] = Outcome("filled", reason, item.fields)


def _redo(pipeline: Pipeline, item: _Item, work: PageWork) -> Outcome:
    record = item.record
    try:
        result = pipeline.enrich_record(record.table, record.record_id, retry=False)
    except ClaimedError as exc:
        work.retry_after_s = max(work.retry_after_s, exc.retry_after_s)
        work.stop = work.stop or "busy"
        return Outcome("pending")
    except ThrottledError as exc:
        work.retry_after_s = max(work.retry_after_s, exc.retry_after_s or 1.0)
        work.stop = work.stop or "throttled"
        return Outcome("pending")
    except UnavailableError:
        work.retry_after_s = max(work.retry_after_s, pipeline.settle_s)
        work.stop = work.stop or "unknown"
        return Outcome("pending")
    except ConflictError:
        return Outcome("failed", "changed repeatedly while being written")
    except ConnectorError as exc:
        return Outcome("failed", type(exc).__name__)
    if result.status in ("written", "conflict"):
        columns = {column: name for name, column in pipeline.mapping.fields.items()}
        filled = tuple(sorted(columns.get(c, c) for c in result.changes))
        return Outcome("filled", "written after re-read", filled)
    return Outcome("skipped", result.detail or result.status)
