"""enrich_record(): re-read → loop guard → claim → enrich → policy → one guarded write.

The pipeline never trusts a webhook payload: it re-reads the record, and skips it when the last
update was made by the integration user (our own write firing the business rule again).

Exactly one write and one note per (record, input), whatever the timing: before writing, the
worker claims ``(system, record, input hash)`` in a ``ClaimStore`` shared by every instance
(Table Storage in the Functions build). A live claim held by another worker means "back off"
(``ClaimedError``, the job is re-queued with a delay); a completed one means "already done".
A write whose outcome is unknown (timeout, dropped connection, 5xx) keeps the claim for a
settle time, so nobody re-reads and re-writes while a late commit may still land; the next
holder first looks for our note carrying this input hash on the record.

Never clobber a person: ServiceNow's Table API has no If-Match, so after the write the
connector reports values someone else set between our read and our write
(``Connector.overwritten``); the pipeline restores them and says so (status ``conflict``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connectors.base import Connector, SourceRecord
from connectors.state import ClaimStore, MemoryClaimStore
from domain.errors import ClaimedError, ConflictError, ConnectorError
from domain.mapping import FieldMapping, to_ticket
from domain.models import EnrichmentResult, Ticket
from enrichers.base import Enricher
from triage.pipeline_plan import (
    NOTE_MARKER_PREFIX,
    Plan,
    decision_rows,
    input_hash,
    make_plan,
    note_marker,
)
from triage.restore import RaceRepair, may_have_landed
from triage.telemetry import Telemetry, current

if TYPE_CHECKING:
    from connectors.shadow import ShadowStore  # Table Storage SDK: only when recording

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_SETTLE_S",
    "NOTE_MARKER_PREFIX",
    "Pipeline",
    "Plan",
    "input_hash",
    "note_marker",
]

log = logging.getLogger(__name__)

#: How long a claim keeps other workers off a job: longer than one job's platform budget.
DEFAULT_LEASE_S = 300.0
#: After a write whose outcome is unknown: time for a late commit to land before a retry looks.
DEFAULT_SETTLE_S = 90.0
#: Conditional writes refused because the record changed (412) before we give up for now.
MAX_CONFLICT_ROUNDS = 3


@dataclass
class Pipeline:
    """Enriches platform records through a connector; all collaborators are passed in."""

    connector: Connector
    mapping: FieldMapping
    enrichers: Sequence[Enricher]
    claims: ClaimStore = field(default_factory=MemoryClaimStore)
    dry_run: bool = False
    lease_s: float = DEFAULT_LEASE_S
    settle_s: float = DEFAULT_SETTLE_S
    #: Shadow mode: record every suggestion here and write nothing to tickets.
    shadow: ShadowStore | None = None
    #: After go-live: every write's decisions recorded too (the improvement report's input).
    decision_log: ShadowStore | None = None
    #: The model's version, recorded with shadow suggestions ("" without a model).
    model_version: str = ""
    now: Callable[[], float] = time.time
    #: Times and traces every platform call when enabled; None: the process's telemetry.
    telemetry: Telemetry | None = None

    def __post_init__(self) -> None:
        telemetry = self.telemetry if self.telemetry is not None else current()
        if telemetry.enabled:
            self.connector = telemetry.measured(self.connector)

    @property
    def repair(self) -> RaceRepair:
        """Restores a person's value our write replaced (ServiceNow has no If-Match)."""
        return self._repair

    @property
    def _repair(self) -> RaceRepair:
        return RaceRepair(self.connector, self.mapping, self.claims, self.lease_s, self.settle_s)

    def enrich_record(self, table: str, record_id: str, *, retry: bool = False) -> EnrichmentResult:
        """Enrich one record; platform errors propagate as ``ConnectorError`` subclasses.

        ``retry`` says an earlier attempt of this job may have written already (the queue
        redelivered it): the record is then checked for our note before anything is written.
        Raises ``ClaimedError`` when another worker is busy with the same record and input.
        """
        record, ticket = self._read(table, record_id)
        user = self.integration_user()
        if user and record.fields.get(self.mapping.last_updated_by) == user:
            # The latest update is ours. If it was a fill whose answer was lost (timeout, drop),
            # nobody checked it for a person's edit it overwrote: do it now. The business rule
            # fires on insert only, so this path is rare (a redelivery or a duplicate job).
            restored = self._repair.restore(record, NOTE_MARKER_PREFIX, current=record)
            if restored:
                return self._result(ticket, "conflict", detail=restored)
            detail = f"last update was made by the integration user {user!r}"
            log.info("skipping %s %s: %s", record.system, record_id, detail)
            return self._result(ticket, "skipped", detail=detail)
        digest = input_hash(ticket)
        key = f"{ticket.system}:{table}:{record_id}:{digest}"
        if self.dry_run:
            return self._enrich(record, ticket, digest, attempt=_Attempt())
        claim = self.claims.claim(key, lease_s=self.lease_s)
        if claim.state == "done":
            return self._result(ticket, "skipped", detail="this text was already enriched")
        if claim.state == "busy":
            raise ClaimedError(
                f"another worker is enriching {record.system} {record_id}",
                retry_after_s=max(1.0, claim.retry_after_s),
            )
        attempt = _Attempt()
        try:
            if (retry or claim.reclaimed) and self._already_written(record, digest):
                # Our earlier write landed although its answer was lost, and someone updated the
                # ticket since (else the loop guard above had answered): their update stands.
                self.claims.complete(claim, "written")
                return self._result(ticket, "skipped", detail="our note for this text is there")
            result = self._enrich_until_current(record, ticket, digest, attempt=attempt)
        except BaseException as exc:
            if attempt.sent and may_have_landed(exc):
                # Timeout, dropped connection, 5xx or a crash after sending: the write may
                # still commit. Let it settle; the next holder looks for our note first.
                self.claims.hold(claim, self.settle_s)
            else:
                self.claims.release(claim)
            raise
        self.claims.complete(claim, result.status)
        return result

    def integration_user(self) -> str | None:
        """Who our own writes appear as: the mapping's name, else the platform's answer."""
        return self.mapping.integration_user or self.connector.own_user()

    def _read(self, table: str, record_id: str) -> tuple[SourceRecord, Ticket]:
        record = self.connector.get(table, record_id, self.mapping.platform_fields())
        return record, self.ticket_of(record)

    def _enrich_until_current(
        self, record: SourceRecord, ticket: Ticket, digest: str, *, attempt: _Attempt
    ) -> EnrichmentResult:
        """Enrich; when a conditional write finds the record changed (412), re-read, re-decide.

        Dataverse refuses our PATCH when its etag no longer matches: a person or a process
        changed the case after our read. Their values are then set on the re-read record, so
        the policy leaves them alone; nothing is ever written blind.
        """
        for round_no in range(1, MAX_CONFLICT_ROUNDS + 1):
            try:
                return self._enrich(record, ticket, digest, attempt=attempt)
            except ConflictError:
                if round_no == MAX_CONFLICT_ROUNDS:
                    raise
                log.info("%s %s changed under us; re-reading", record.system, record.record_id)
                attempt.sent = False  # refused (412): nothing of this round landed
                record, ticket = self._read(record.table, record.record_id)
                digest = input_hash(ticket)
        raise AssertionError("unreachable")  # pragma: no cover

    def _already_written(self, record: SourceRecord, digest: str) -> bool:
        return self.connector.has_note(
            record.table, record.record_id, note_marker(digest), element=self.mapping.note_field
        )

    def plan(self, record: SourceRecord, ticket: Ticket, digest: str) -> Plan:
        """Run the enrichers and the policy on a read record: what would be written, and why.

        Pure but for the enrichers' work: nothing is read or written. The body is sanitised
        at the write boundary and carries our note, whose last line names the mapping version
        and the input (the marker survives the note's length cut).
        """
        return make_plan(self.enrichers, self.mapping, record, ticket, digest)

    def record_shadow(self, record: SourceRecord, ticket: Ticket, digest: str, plan: Plan) -> str:
        """Shadow mode: record the plan's decisions (what would have happened)."""
        assert self.shadow is not None
        return self._record_decisions(self.shadow, record, ticket, digest, plan)

    def log_decisions(self, record: SourceRecord, ticket: Ticket, digest: str, plan: Plan) -> None:
        """After a write: the plan's decisions into the decision log (never fails the job).

        What was written or suggested after go-live, for the same improvement report. The
        ticket is already written: a failure to log is a warning, never a failed job.
        """
        if self.decision_log is None:
            return
        try:
            self._record_decisions(self.decision_log, record, ticket, digest, plan)
        except ConnectorError as exc:
            log.warning("could not log the decisions for %s: %s", record.record_id, exc)

    def ticket_of(self, record: SourceRecord) -> Ticket:
        """The ticket the enrichers read from a platform record (e-mail text as fallback)."""
        ticket = to_ticket(record.fields, self.mapping, record_id=record.record_id)
        if not ticket.description.strip():
            # A case created from an e-mail keeps its text in the e-mail (Dataverse).
            extra = self.connector.fallback_text(record.table, record.record_id)
            if extra:
                ticket = ticket.model_copy(update={"description": extra})
        return ticket

    def _enrich(
        self, record: SourceRecord, ticket: Ticket, digest: str, *, attempt: _Attempt
    ) -> EnrichmentResult:
        plan = self.plan(record, ticket, digest)
        changes, decisions = plan.changes, plan.decisions
        base = {"suggestions": plan.suggestions, "decisions": decisions}
        suggested = any(d.action == "suggest" for d in decisions)
        if self.shadow is not None:
            shadow = self.record_shadow(record, ticket, digest, plan)
            return self._result(ticket, "shadow", detail=shadow, changes=changes, **base)
        if not changes and not suggested:
            detail = "no suggestion cleared the policy"
            return self._result(ticket, "nothing_to_write", detail=detail, **base)
        body, values = plan.body, plan.values
        note_field = plan.note_field
        if not values and not suggested:
            return self._result(ticket, "nothing_to_write", detail="nothing safe to write", **base)
        if self.dry_run:
            return self._result(
                ticket, "dry_run", changes=values, note=body.get(note_field), **base
            )
        if not values:  # suggest mode only: the note carries the suggestions, no field changes
            attempt.sent = True
            self.connector.update(record.table, record.record_id, body, etag=record.etag)
            self.log_decisions(record, ticket, digest, plan)
            return self._result(
                ticket, "suggested", detail="note only", note=body.get(note_field), **base
            )
        attempt.sent = True
        stored = self.connector.update(record.table, record.record_id, body, etag=record.etag)
        log.info("wrote %s to %s %s", sorted(values), record.system, record.record_id)
        self.log_decisions(record, ticket, digest, plan)
        restored = self._repair.restore(record, note_marker(digest), current=stored, read=record)
        status, detail = ("conflict", restored) if restored else ("written", _check(values, stored))
        return self._result(
            ticket,
            status,
            detail=detail,
            changes=values,
            note=body.get(note_field),
            **base,
        )

    def _record_decisions(
        self, store: ShadowStore, record: SourceRecord, ticket: Ticket, digest: str, plan: Plan
    ) -> str:
        """Record each decision (shadow mode: what would have happened; else what did)."""
        rows = decision_rows(
            record,
            ticket,
            digest,
            plan,
            mapping_version=self.mapping.fingerprint,
            model_version=self.model_version,
            at=self.now(),
        )
        if rows:
            store.record(rows)
        return f"shadow mode: {len(rows)} suggestion(s) recorded, nothing written"

    @staticmethod
    def _result(ticket: Ticket, status: str, **kwargs: object) -> EnrichmentResult:
        return EnrichmentResult.model_validate(
            {
                "system": ticket.system,
                "record_id": ticket.record_id,
                "number": ticket.number,
                "status": status,
                **kwargs,
            }
        )


@dataclass
class _Attempt:
    sent: bool = False  # a write request left this worker


def _check(changes: Mapping[str, str], stored: SourceRecord) -> str:
    # ServiceNow silently ignores unknown fields in a PATCH: compare what came back.
    missing = [f for f, v in changes.items() if f in stored.fields and str(stored.fields[f]) != v]
    absent = [f for f in changes if f not in stored.fields]
    if missing or absent:
        log.warning("platform did not store %s as written", sorted(missing + absent))
        return f"not stored as written: {', '.join(sorted(missing + absent))}"
    return "stored"
