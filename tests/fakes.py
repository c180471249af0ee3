"""Fakes with behaviour (not mocks with expectations) for pipeline and service tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import SourceRecord
from domain.errors import ConflictError, ConnectorError
from domain.models import Suggestion, Ticket

#: ServiceNow's journal field and Dataverse's annotation pseudo-field: a note, not a value.
NOTE_FIELDS = ("work_notes", "annotation")


class FakeConnector:
    """An in-memory ServiceNow-like table that records updates; can be told to fail.

    Keeps ``sys_mod_count`` and an audit trail like ServiceNow, so ``overwritten`` works the
    same way: ``person_edits`` are applied (as a person) just before the next update, and
    ``commit_then_fail`` applies the next update and then raises it (a late commit).
    """

    system = "servicenow"

    def __init__(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        self.records: dict[str, dict[str, Any]] = records or {}
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.notes: list[tuple[str, str]] = []
        self.audit: list[dict[str, str]] = []
        self.fail_next: list[ConnectorError] = []
        self.commit_then_fail: list[Exception] = []
        self.fail_update: list[ConnectorError] = []  # refused before anything is applied
        self.person_edits: list[tuple[str, dict[str, str]]] = []
        self.emails: dict[str, str] = {}  # record id -> the first e-mail's body
        self.own_user_id: str | None = None  # what own_user() answers (Dataverse: WhoAmI)
        self.integer_fields: set[str] = set()  # answered as int after a write (option sets)
        self.refuse_stale = False  # Dataverse-like: a stale etag is refused with 412
        self.person_edits_per_update = 0  # 0: all pending edits land before the next update
        self.user = "svc_ticket_enricher"

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def etag_of(self, record_id: str) -> str:
        return f'W/"{self.records[record_id].get("sys_mod_count") or 0}"'

    def get(self, table: str, record_id: str, fields: Sequence[str]) -> SourceRecord:
        self._maybe_fail()
        from domain.errors import NotFoundError

        if record_id not in self.records:
            raise NotFoundError("No Record found", system="servicenow", status_code=404)
        rec = self.records[record_id]
        fields_read = {f: rec.get(f, "") for f in fields}
        etag = self.etag_of(record_id) if self.refuse_stale else None
        return SourceRecord("servicenow", table, record_id, fields_read, etag=etag)

    def apply(self, record_id: str, values: Mapping[str, str], user: str) -> None:
        """Write ``values`` as ``user``: bump sys_mod_count, audit each changed field."""
        rec = self.records[record_id]
        count = int(rec.get("sys_mod_count") or 0) + 1
        for name, value in values.items():
            old = "" if name in NOTE_FIELDS else str(rec.get(name, ""))
            self.audit.append(
                {"documentkey": record_id, "fieldname": name, "oldvalue": old,
                 "newvalue": value, "user": user, "record_checkpoint": str(count)}
            )  # fmt: skip
        note = next((values[k] for k in NOTE_FIELDS if k in values), None)
        if note is not None:
            self.notes.append((record_id, note))
        rec.update({k: v for k, v in values.items() if k not in NOTE_FIELDS})
        rec.update(sys_updated_by=user, sys_mod_count=str(count))

    def update(
        self, table: str, record_id: str, changes: Mapping[str, str], *, etag: str | None = None
    ) -> SourceRecord:
        self._maybe_fail()
        if self.fail_update:
            raise self.fail_update.pop(0)
        for _ in range(min(self.person_edits_per_update or 10**6, len(self.person_edits))):
            who, edit = self.person_edits.pop(0)
            self.apply(record_id, edit, who)
        if self.refuse_stale and etag is not None and etag != self.etag_of(record_id):
            raise ConflictError("412 version mismatch", system="dataverse", status_code=412)
        values = dict(changes)
        self.apply(record_id, values, self.user)
        for name in NOTE_FIELDS:
            values.pop(name, None)
        self.updates.append((record_id, values))
        if self.commit_then_fail:
            raise self.commit_then_fail.pop(0)
        stored = {
            k: int(v) if k in self.integer_fields else v for k, v in self.records[record_id].items()
        }
        return SourceRecord("servicenow", table, record_id, stored)

    def own_user(self) -> str | None:
        return self.own_user_id

    def fallback_text(self, table: str, record_id: str) -> str | None:
        return self.emails.get(record_id)

    def has_note(self, table: str, record_id: str, marker: str, *, element: str) -> bool:
        return any(rid == record_id and marker in note for rid, note in self.notes)

    def overwritten(
        self,
        table: str,
        record_id: str,
        *,
        written: SourceRecord,
        marker: str,
        element: str,
        read: SourceRecord | None = None,
    ) -> dict[str, tuple[str, str]]:
        after = int(written.fields.get("sys_mod_count") or 0)
        if read is not None and after <= int(read.fields.get("sys_mod_count") or 0) + 1:
            return {}
        rows = [
            r
            for r in self.audit
            if r["documentkey"] == record_id and r["record_checkpoint"] == str(after)
        ]
        if not any(r["fieldname"] == element and marker in r["newvalue"] for r in rows):
            return {}
        return {
            r["fieldname"]: (r["oldvalue"], r["newvalue"])
            for r in rows
            if r["fieldname"] != element and r["oldvalue"] and r["oldvalue"] != r["newvalue"]
        }

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
