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

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectors.base import Connector, SourceRecord
from connectors.state import ClaimStore, MemoryClaimStore
from domain.errors import ClaimedError, ConnectorError, ThrottledError, UnavailableError
from domain.mapping import FieldMapping, to_ticket
from domain.models import EnrichmentResult, Ticket
from domain.sanitize import NOTE_MAX_CHARS, sanitize_note, sanitize_write
from enrichers.base import Enricher
from enrichers.engine import run_enrichers
from triage.policy import decide, render_note, to_changes, write_limits

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_SETTLE_S",
    "NOTE_MARKER_PREFIX",
    "Pipeline",
    "input_hash",
    "note_marker",
]

log = logging.getLogger(__name__)

#: How long a claim keeps other workers off a job: longer than one job's platform budget.
DEFAULT_LEASE_S = 300.0
#: After a write whose outcome is unknown: time for a late commit to land before a retry looks.
DEFAULT_SETTLE_S = 90.0


def input_hash(ticket: Ticket) -> str:
    """A short, stable hash of the text the enrichers read."""
    digest = hashlib.sha256(f"{ticket.title}\x1f{ticket.description}".encode())
    return digest.hexdigest()[:16]


#: How the last line of our note starts; the rest is the input hash.
NOTE_MARKER_PREFIX = "input "


def note_marker(digest: str) -> str:
    """The line our note ends with; finding it on a record means this input was written."""
    return f"{NOTE_MARKER_PREFIX}{digest}"


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

    def enrich_record(self, table: str, record_id: str, *, retry: bool = False) -> EnrichmentResult:
        """Enrich one record; platform errors propagate as ``ConnectorError`` subclasses.

        ``retry`` says an earlier attempt of this job may have written already (the queue
        redelivered it): the record is then checked for our note before anything is written.
        Raises ``ClaimedError`` when another worker is busy with the same record and input.
        """
        record = self.connector.get(table, record_id, self.mapping.platform_fields())
        ticket = to_ticket(record.fields, self.mapping, record_id=record_id)
        user = self.mapping.integration_user
        if user and record.fields.get("sys_updated_by") == user:
            # The latest update is ours. If it was a fill whose answer was lost (timeout, drop),
            # nobody checked it for a person's edit it overwrote: do it now. The business rule
            # fires on insert only, so this path is rare (a redelivery or a duplicate job).
            restored = self._restore_overwritten(record, NOTE_MARKER_PREFIX, current=record)
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
            result = self._enrich(record, ticket, digest, attempt=attempt)
        except BaseException as exc:
            if attempt.sent and _may_have_landed(exc):
                # Timeout, dropped connection, 5xx or a crash after sending: the write may
                # still commit. Let it settle; the next holder looks for our note first.
                self.claims.hold(claim, self.settle_s)
            else:
                self.claims.release(claim)
            raise
        self.claims.complete(claim, result.status)
        return result

    def _already_written(self, record: SourceRecord, digest: str) -> bool:
        return self.connector.has_note(
            record.table, record.record_id, note_marker(digest), element=self.mapping.note_field
        )

    def _enrich(
        self, record: SourceRecord, ticket: Ticket, digest: str, *, attempt: _Attempt
    ) -> EnrichmentResult:
        chosen = run_enrichers(self.enrichers, ticket)
        decisions = decide(ticket, chosen, self.mapping, raw=record.fields)
        changes = to_changes(decisions, self.mapping)
        base = {"suggestions": tuple(chosen.values()), "decisions": tuple(decisions)}
        if not changes:
            detail = "no suggestion cleared the policy"
            return self._result(ticket, "nothing_to_write", detail=detail, **base)
        note_field = self.mapping.note_field
        marker = note_marker(digest)
        # The marker must survive the note's length cut: cut the rest, then append it.
        text = sanitize_note(
            render_note(decisions, self.mapping), max_chars=NOTE_MAX_CHARS - len(marker) - 1
        )
        body = sanitize_write(
            {**changes, note_field: f"{text}\n{marker}"},
            note_field=note_field,
            limits=write_limits(self.mapping),
        )
        values = {k: v for k, v in body.items() if k != note_field}
        if not values:
            return self._result(ticket, "nothing_to_write", detail="nothing safe to write", **base)
        if self.dry_run:
            return self._result(
                ticket, "dry_run", changes=values, note=body.get(note_field), **base
            )
        attempt.sent = True
        stored = self.connector.update(record.table, record.record_id, body)
        log.info("wrote %s to %s %s", sorted(values), record.system, record.record_id)
        restored = self._restore_overwritten(
            record, note_marker(digest), current=stored, read=record
        )
        status, detail = ("conflict", restored) if restored else ("written", _check(values, stored))
        return self._result(
            ticket,
            status,
            detail=detail,
            changes=values,
            note=body.get(note_field),
            **base,
        )

    def _restore_overwritten(
        self,
        record: SourceRecord,
        marker: str,
        *,
        current: SourceRecord,
        read: SourceRecord | None = None,
    ) -> str:
        """Put back what a person set between our read and our write; '' when nothing was.

        ``current`` is the record as it is now (our update's answer, or a fresh read); a field
        is restored only while it still holds our value, so a later correction stands.
        """
        note_field = self.mapping.note_field
        try:
            theirs = self.connector.overwritten(
                record.table,
                record.record_id,
                written=current,
                marker=marker,
                element=note_field,
                read=read,
            )
        except ConnectorError as exc:
            log.warning("could not check %s for concurrent edits: %s", record.record_id, exc)
            return ""
        canonical = {platform: name for name, platform in self.mapping.fields.items()}
        restore = {
            f: old
            for f, (old, ours) in theirs.items()
            if f in canonical
            and self.mapping.writes(canonical[f])
            and not self.mapping.is_unset(canonical[f], old)
            and str(current.fields.get(f, ours)) == ours
        }
        if not restore:
            return ""
        names = ", ".join(canonical[f] for f in sorted(restore))
        # Two workers may find the same clobber (a duplicate job on the loop-guard path): the
        # update being repaired is claimed, so one restore and one note are written.
        key = f"{record.system}:{record.table}:{record.record_id}:restore:{_count(current)}"
        claim = self.claims.claim(key, lease_s=self.lease_s)
        if claim.state != "acquired":
            return f"a person's value is being restored: {names}"
        note = sanitize_note(
            f"{self.mapping.note_prefix} Someone set {names} while this ticket was being filled "
            "automatically; their value is kept and the automatic value withdrawn."
        )
        try:
            self.connector.update(record.table, record.record_id, {**restore, note_field: note})
        except BaseException as exc:
            if _may_have_landed(exc):
                self.claims.hold(claim, self.settle_s)
            else:
                self.claims.release(claim)
            raise
        self.claims.complete(claim, "restored")
        log.warning("restored %s on %s %s", sorted(restore), record.system, record.record_id)
        return f"a person's value restored: {names}"

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


def _may_have_landed(exc: BaseException) -> bool:
    """False for failures that prove the platform did not apply the write.

    Every ``ConnectorError`` but ``UnavailableError`` is an answer refusing the request (4xx,
    auth) or a request we refused to send; 429 is refused before processing.
    """
    if isinstance(exc, ThrottledError):
        return False
    return isinstance(exc, UnavailableError) or not isinstance(exc, ConnectorError)


def _count(record: SourceRecord) -> str:
    """The record's update count as a key part (ServiceNow sys_mod_count; else its etag)."""
    value = record.fields.get("sys_mod_count", record.etag)
    return "".join(c for c in str(value) if c.isalnum())[:40]


def _check(changes: Mapping[str, str], stored: SourceRecord) -> str:
    # ServiceNow silently ignores unknown fields in a PATCH: compare what came back.
    missing = [f for f, v in changes.items() if f in stored.fields and stored.fields[f] != v]
    absent = [f for f in changes if f not in stored.fields]
    if missing or absent:
        log.warning("platform did not store %s as written", sorted(missing + absent))
        return f"not stored as written: {', '.join(sorted(missing + absent))}"
    return "stored"
