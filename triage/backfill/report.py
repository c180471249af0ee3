"""The evidence an admin reviews before a real run: proposed changes, one row per field.

A dry run (and, if asked, a real one) adds a ``ReportRow`` for each decision the policy made on
each ticket: the ticket, the field, the value it holds now, the value proposed, the confidence,
the enricher's reason, and what would happen (``fill`` / ``suggest`` / ``skip`` / ``shadow``)
and why. ``FileReport`` streams them to ``<path>.csv`` and ``<path>.json`` as they come, so a
run over years of tickets never holds them all in memory. Values are sanitised already (they
are what would be written); the reason and "why" are cut to one line of 300 characters.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Protocol

from connectors.base import SourceRecord
from domain.mapping import FieldMapping
from domain.models import Ticket
from domain.sanitize import sanitize_value

__all__ = ["FileReport", "MemoryReport", "ReportRow", "ReportSink", "report_rows"]

_TEXT_CHARS = 300


@dataclass(frozen=True)
class ReportRow:
    """One proposed (or refused) change of one field of one ticket."""

    ticket: str
    record_id: str
    field: str
    column: str
    old_value: str
    new_value: str
    confidence: float
    action: str
    reason: str
    why: str


COLUMNS = tuple(f.name for f in fields(ReportRow))


class ReportSink(Protocol):
    """Where a run's report rows go."""

    def add(self, rows: Sequence[ReportRow]) -> None:
        """Append rows (a ticket's decisions)."""
        ...


def report_rows(
    record: SourceRecord,
    ticket: Ticket,
    decisions: Sequence[object],
    values: dict[str, str],
    mapping: FieldMapping,
    *,
    shadow: bool,
    writes: bool,
) -> list[ReportRow]:
    """The rows for one ticket's decisions.

    ``values`` is what the write would set (platform columns → raw values); ``writes`` says
    whether the ticket would be written at all (a backfill writes no note-only update), and
    ``shadow`` that shadow mode holds every write back.
    """
    rows: list[ReportRow] = []
    for decision in decisions:
        name = str(getattr(decision, "field", ""))
        column = mapping.fields.get(name, "")
        action = str(getattr(decision, "action", "skip"))
        why = str(getattr(decision, "why", ""))
        if shadow and action != "skip":
            action, why = "shadow", f"shadow mode: recorded, not written ({why})"
        elif action == "write":
            action = "fill" if writes and column in values else "skip"
        elif action == "suggest" and not writes:
            action, why = "skip", "suggest mode: a backfill writes no note-only update"
        new = values.get(column, str(getattr(decision, "value", "")))
        rows.append(
            ReportRow(
                ticket=ticket.number or record.record_id,
                record_id=record.record_id,
                field=name,
                column=column,
                old_value=_one_line(record.fields.get(column)),
                new_value=_one_line(new),
                confidence=round(float(getattr(decision, "confidence", 0.0)), 4),
                action=action,
                reason=_one_line(getattr(decision, "reason", "")),
                why=_one_line(why),
            )
        )
    return rows


def _one_line(value: object) -> str:
    return "" if value is None else sanitize_value(str(value), max_chars=_TEXT_CHARS)


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class MemoryReport:
    """Rows kept in a list (tests, small previews)."""

    def __init__(self) -> None:
        self.rows: list[ReportRow] = []

    def add(self, rows: Sequence[ReportRow]) -> None:
        """Append rows."""
        self.rows.extend(rows)


class FileReport:
    """Streams rows to ``<stem>.csv`` and ``<stem>.json`` (a JSON array); ``close()`` ends them."""

    def __init__(self, path: str | Path) -> None:
        base = Path(path)
        stem = base.with_suffix("") if base.suffix.lower() in (".csv", ".json") else base
        self.csv_path, self.json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._csv: IO[str] = self.csv_path.open("w", newline="", encoding="utf-8")
        self._json: IO[str] = self.json_path.open("w", encoding="utf-8")
        self._writer = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._json.write("[")
        self.count = 0

    def add(self, rows: Sequence[ReportRow]) -> None:
        """Append rows to both files."""
        for row in rows:
            data = asdict(row)
            self._writer.writerow({k: _cell(v) for k, v in data.items()})
            self._json.write(("\n" if self.count == 0 else ",\n") + json.dumps(data))
            self.count += 1

    def close(self) -> None:
        """Finish both files (the JSON array closed)."""
        if self._json.closed:
            return
        self._json.write("\n]\n")
        self._json.close()
        self._csv.close()

    def __enter__(self) -> FileReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
