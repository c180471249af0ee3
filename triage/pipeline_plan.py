"""The pipeline's pure half: the input hash and note marker, the ``Plan`` and its record rows.

``make_plan`` runs the enrichers and the policy on a read record and returns what would be
written (sanitised at the write boundary, our note ending with the input marker);
``decision_rows`` turns a plan's decisions into the rows the shadow store and the decision log
keep. Nothing here reads or writes a platform; ``triage.pipeline`` re-exports every name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.base import SourceRecord
from domain.mapping import FieldMapping
from domain.models import Decision, Suggestion, Ticket
from domain.sanitize import NOTE_MAX_CHARS, sanitize_note, sanitize_value, sanitize_write
from enrichers.base import Enricher
from enrichers.engine import run_enrichers
from triage.policy import decide, render_note, to_changes, write_limits

if TYPE_CHECKING:
    from connectors.shadow import ShadowRecord  # Table Storage SDK: only when recording

__all__ = [
    "NOTE_MARKER_PREFIX",
    "Plan",
    "decision_rows",
    "input_hash",
    "make_plan",
    "note_marker",
]


def input_hash(ticket: Ticket) -> str:
    """A short, stable hash of the text the enrichers read."""
    digest = hashlib.sha256(f"{ticket.title}\x1f{ticket.description}".encode())
    return digest.hexdigest()[:16]


#: How the last line of our note starts; the rest is the input hash.
NOTE_MARKER_PREFIX = "input "


def note_marker(digest: str) -> str:
    """The line our note ends with; finding it on a record means this input was written."""
    return f"{NOTE_MARKER_PREFIX}{digest}"


@dataclass(frozen=True)
class Plan:
    """What the enrichers and the policy propose for one record (see ``Pipeline.plan``)."""

    suggestions: tuple[Suggestion, ...]
    decisions: tuple[Decision, ...]
    #: Platform values the policy would write (before sanitising).
    changes: Mapping[str, str]
    #: The sanitised write: values and the note.
    body: Mapping[str, str]
    note_field: str

    @property
    def values(self) -> dict[str, str]:
        """The sanitised field values of the body (the note left out)."""
        return {k: v for k, v in self.body.items() if k != self.note_field}

    @property
    def note(self) -> str:
        """The note the write carries."""
        return self.body.get(self.note_field, "")


def make_plan(
    enrichers: Sequence[Enricher],
    mapping: FieldMapping,
    record: SourceRecord,
    ticket: Ticket,
    digest: str,
) -> Plan:
    """Run the enrichers and the policy on a read record: what would be written, and why.

    Pure but for the enrichers' work: nothing is read or written. The body is sanitised
    at the write boundary and carries our note, whose last line names the mapping version
    and the input (the marker survives the note's length cut).
    """
    chosen = run_enrichers(enrichers, ticket)
    decisions = decide(ticket, chosen, mapping, raw=record.fields)
    changes = to_changes(decisions, mapping)
    note_field = mapping.note_field
    marker = f"mapping {mapping.fingerprint}, {note_marker(digest)}"
    text = sanitize_note(
        render_note(decisions, mapping), max_chars=NOTE_MAX_CHARS - len(marker) - 1
    )
    body = sanitize_write(
        {**changes, note_field: f"{text}\n{marker}"},
        note_field=note_field,
        limits=write_limits(mapping),
    )
    return Plan(tuple(chosen.values()), tuple(decisions), changes, body, note_field)


def decision_rows(
    record: SourceRecord,
    ticket: Ticket,
    digest: str,
    plan: Plan,
    *,
    mapping_version: str,
    model_version: str,
    at: float,
) -> list[ShadowRecord]:
    """One row per decision of the plan, for the shadow store or the decision log."""
    sources = {s.field: s.source for s in plan.suggestions}
    from connectors.shadow import ShadowRecord

    return [
        ShadowRecord(
            system=record.system,
            table=record.table,
            record_id=record.record_id,
            number=ticket.number or "",
            field=d.field,
            value=d.value,
            confidence=d.confidence,
            reason=sanitize_value(d.reason, max_chars=300),
            source=sources.get(d.field, ""),
            action=d.action,
            why=sanitize_value(d.why, max_chars=300),
            input_hash=digest,
            mapping_version=mapping_version,
            model_version=model_version,
            at=at,
        )
        for d in plan.decisions
    ]
