"""Fakes with behaviour (not mocks with expectations) for pipeline and service tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import SourceRecord
from triage.errors import ConnectorError
from triage.models import Suggestion, Ticket


class FakeConnector:
    """An in-memory ServiceNow-like table that records updates; can be told to fail."""

    system = "servicenow"

    def __init__(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        self.records: dict[str, dict[str, Any]] = records or {}
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.notes: list[tuple[str, str]] = []
        self.fail_next: list[ConnectorError] = []
        self.user = "svc_ticket_enricher"

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def get(self, table: str, record_id: str, fields: Sequence[str]) -> SourceRecord:
        self._maybe_fail()
        from triage.errors import NotFoundError

        if record_id not in self.records:
            raise NotFoundError("No Record found", system="servicenow", status_code=404)
        rec = self.records[record_id]
        return SourceRecord("servicenow", table, record_id, {f: rec.get(f, "") for f in fields})

    def update(
        self, table: str, record_id: str, changes: Mapping[str, str], *, etag: str | None = None
    ) -> SourceRecord:
        self._maybe_fail()
        values = dict(changes)
        note = values.pop("work_notes", None)
        if note is not None:
            self.notes.append((record_id, note))
        self.updates.append((record_id, values))
        self.records[record_id].update(values)
        self.records[record_id]["sys_updated_by"] = self.user
        return SourceRecord("servicenow", table, record_id, dict(self.records[record_id]))

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        for rid in sorted(self.records):
            yield self.get(table, rid, fields)


@dataclass
class FixedEnricher:
    """Suggests fixed values: lets pipeline tests control confidences exactly."""

    suggestions: list[Suggestion]
    name: str = "fixed"
    calls: list[Ticket] = field(default_factory=list)

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        self.calls.append(ticket)
        return self.suggestions


def suggestion(field: str, value: str, confidence: float = 0.99) -> Suggestion:
    return Suggestion(field=field, value=value, confidence=confidence, reason="test", source="t")
