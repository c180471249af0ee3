"""enrich_record(): re-read → loop guard → enrich → policy → one write with its work note.

The pipeline never trusts a webhook payload: it re-reads the record. It skips records whose
last update was made by the integration user (our own write firing the business rule again) and
records whose text it already enriched (an input hash, remembered in a ``SeenStore``).

Check-then-write: the ServiceNow Table API has no If-Match, so a person editing the ticket in the
milliseconds between our read and our PATCH could be overwritten. The window is the time it
takes to run the enrichers (well under 10 ms); we accept it, as servicenow.md §12 suggests.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import Connector, SourceRecord
from enrichers.base import Enricher
from enrichers.engine import run_enrichers
from triage.mapping import FieldMapping, to_ticket
from triage.models import EnrichmentResult, Ticket
from triage.policy import decide, render_note, to_changes

__all__ = ["MemorySeenStore", "Pipeline", "SeenStore", "input_hash"]

log = logging.getLogger(__name__)


class SeenStore(Protocol):
    """Remembers which (record, input hash) pairs were already enriched."""

    def seen(self, key: str) -> bool:
        """Whether ``key`` was remembered."""
        ...

    def remember(self, key: str) -> None:
        """Remember ``key``."""
        ...


class MemorySeenStore:
    """A bounded, thread-safe, per-worker store (an Azure Table store can replace it)."""

    def __init__(self, max_items: int = 50_000) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        """Whether ``key`` was remembered."""
        with self._lock:
            return key in self._items

    def remember(self, key: str) -> None:
        """Remember ``key``, forgetting the oldest entry when full."""
        with self._lock:
            self._items[key] = None
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


def input_hash(ticket: Ticket) -> str:
    """A short, stable hash of the text the enrichers read."""
    digest = hashlib.sha256(f"{ticket.title}\x1f{ticket.description}".encode())
    return digest.hexdigest()[:16]


@dataclass
class Pipeline:
    """Enriches platform records through a connector; all collaborators are passed in."""

    connector: Connector
    mapping: FieldMapping
    enrichers: Sequence[Enricher]
    seen: SeenStore = field(default_factory=MemorySeenStore)
    dry_run: bool = False

    def enrich_record(self, table: str, record_id: str) -> EnrichmentResult:
        """Enrich one record; platform errors propagate as ``ConnectorError`` subclasses."""
        record = self.connector.get(table, record_id, self.mapping.platform_fields())
        ticket = to_ticket(record.fields, self.mapping, record_id=record_id)
        skip = self._loop_guard(record, ticket)
        if skip:
            log.info("skipping %s %s: %s", record.system, record_id, skip)
            return self._result(ticket, "skipped", detail=skip)
        chosen = run_enrichers(self.enrichers, ticket)
        decisions = decide(ticket, chosen, self.mapping, raw=record.fields)
        changes = to_changes(decisions, self.mapping)
        base = {"suggestions": tuple(chosen.values()), "decisions": tuple(decisions)}
        if not changes:
            self.seen.remember(self._key(ticket))
            detail = "no suggestion cleared the policy"
            return self._result(ticket, "nothing_to_write", detail=detail, **base)
        note = render_note(decisions, self.mapping) + f"\ninput {input_hash(ticket)}"
        if self.dry_run:
            return self._result(ticket, "dry_run", changes=changes, note=note, **base)
        stored = self.connector.update(table, record_id, {**changes, self.mapping.note_field: note})
        self.seen.remember(self._key(ticket))
        detail = _check_stored(changes, stored)
        log.info("wrote %s to %s %s", sorted(changes), record.system, record_id)
        return self._result(ticket, "written", detail=detail, changes=changes, note=note, **base)

    def _loop_guard(self, record: SourceRecord, ticket: Ticket) -> str | None:
        user = self.mapping.integration_user
        if user and record.fields.get("sys_updated_by") == user:
            return f"last update was made by the integration user {user!r}"
        if self.seen.seen(self._key(ticket)):
            return "text unchanged since this worker last enriched it"
        return None

    def _key(self, ticket: Ticket) -> str:
        return f"{ticket.system}:{ticket.record_id}:{input_hash(ticket)}"

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


def _check_stored(changes: dict[str, str], stored: SourceRecord) -> str:
    # ServiceNow silently ignores unknown fields in a PATCH: compare what came back.
    missing = [f for f, v in changes.items() if f in stored.fields and stored.fields[f] != v]
    absent = [f for f in changes if f not in stored.fields]
    if missing or absent:
        log.warning("platform did not store %s as written", sorted(missing + absent))
        return f"not stored as written: {', '.join(sorted(missing + absent))}"
    return "stored"
