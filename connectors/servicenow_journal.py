"""ServiceNow's admin and journal reads: choice lists, work-note journal entries and the audit trail.

Reads of the system tables (``sys_choice``, ``sys_journal_field``, ``sys_audit``) that sit beside
record I/O: ``ServiceNowJournal`` is a mixin of ``connectors.servicenow.ServiceNowConnector``
whose methods page through the connector's own ``iter_records``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

from connectors.base import SourceRecord
from connectors.servicenow_table import (
    AUDIT_ROW_FIELDS,
    CHOICE_FIELDS,
    JOURNAL_ELEMENTS,
    JOURNAL_FIELDS,
    NOTE_MARKER_RE,
    SYSTEM,
    _check_field,
    _check_sys_id,
    _check_table,
    _dedupe,
    _mod_count,
)
from domain.errors import RejectedError

__all__ = ["ServiceNowJournal"]

# The connector's logger: these reads are the connector's, whichever module holds them.
log = logging.getLogger("connectors.servicenow")


class _Pages(Protocol):
    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]: ...


class ServiceNowJournal:
    """Choice, journal and audit reads, on top of the connector's ``iter_records``."""

    def list_choices(
        self: _Pages, table: str, elements: Sequence[str], *, language: str = "en"
    ) -> list[dict[str, str]]:
        """Active choices of ``elements`` on ``table`` (inherited from task unless overridden)."""
        _check_table(table)
        for element in elements:
            _check_field(element)
        if not elements:
            return []
        names = ",".join(_dedupe([table, "task"]))
        query = (
            f"nameIN{names}^elementIN{','.join(elements)}^inactive=false"
            f"^language={_check_field(language)}^ORDERBYelement^ORDERBYsequence"
        )
        rows = [r.fields for r in self.iter_records("sys_choice", query, CHOICE_FIELDS)]
        # A choice list defined on the table itself replaces the one it inherits from task.
        own = {str(r.get("element")) for r in rows if r.get("name") == table}
        return [
            {k: str(r.get(k) or "") for k in ("element", "value", "label", "dependent_value")}
            for r in rows
            if r.get("name") == table or str(r.get("element")) not in own
        ]

    def journal(self: _Pages, record_id: str, element: str = "work_notes") -> list[dict[str, str]]:
        """Journal entries (``sys_journal_field``) of one record's field, oldest first."""
        _check_sys_id(record_id)
        _check_field(element)
        # Reading work_notes through the record itself is unreliable with raw values; the
        # journal table holds one row per entry.
        query = f"element_id={record_id}^element={element}^ORDERBYsys_created_on"
        rows = self.iter_records("sys_journal_field", query, JOURNAL_FIELDS)
        return [{k: str(r.fields.get(k) or "") for k in JOURNAL_FIELDS} for r in rows]

    def has_note(
        self: _Pages, table: str, record_id: str, marker: str, *, element: str = "work_notes"
    ) -> bool:
        """Whether a journal entry of the record's ``element`` contains ``marker``."""
        _check_table(table)
        _check_sys_id(record_id)
        _check_field(element)
        if not NOTE_MARKER_RE.fullmatch(marker):
            raise RejectedError("invalid note marker", system=SYSTEM)
        query = f"element_id={record_id}^element={element}^valueLIKE{marker}"
        rows = self.iter_records("sys_journal_field", query, ("sys_id",), page_size=1)
        return next(rows, None) is not None

    def overwritten(
        self: _Pages,
        table: str,
        record_id: str,
        *,
        written: SourceRecord,
        marker: str,
        element: str = "work_notes",
        read: SourceRecord | None = None,
    ) -> dict[str, tuple[str, str]]:
        """``{field: (value before our update, our value)}`` where that earlier value was set.

        ``written`` is the record as our update left it (the PATCH's answer, or a re-read whose
        last update is ours); the update is recognised as ours by ``marker`` in its ``element``
        journal entry. We only write fields that were unset when we read them, so a value set
        just before our update was put there by someone else after our read. The Table API has
        no If-Match: when we know the ``sys_mod_count`` we read, one more after our update means
        nobody wrote in between (no request needed). Otherwise the ``sys_audit`` rows of our
        update (``record_checkpoint`` = its count) hold each field's old value.
        """
        _check_table(table)
        _check_sys_id(record_id)
        before, after = _mod_count(read), _mod_count(written)
        if after is None or (before is not None and after <= before + 1):
            return {}
        query = f"tablename={table}^documentkey={record_id}^record_checkpoint={after}"
        rows = [r.fields for r in self.iter_records("sys_audit", query, AUDIT_ROW_FIELDS)]
        if not any(
            r.get("fieldname") == element and marker in str(r.get("newvalue")) for r in rows
        ):
            return {}  # not our update: nothing of ours to answer for
        found: dict[str, tuple[str, str]] = {}
        for row in rows:
            name = str(row.get("fieldname") or "")
            old, new = (str(row.get(k) or "") for k in ("oldvalue", "newvalue"))
            if name not in JOURNAL_ELEMENTS and old and old != new:
                found[name] = (old, new)
        if found:
            log.warning(
                "servicenow: %s/%s was changed by someone else during our update: %s",
                table,
                record_id,
                sorted(found),
            )
        return found
