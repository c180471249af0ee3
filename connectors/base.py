"""The connector protocol: connectors move source-native records and do all platform I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from domain.errors import ConnectorError, UnavailableError

__all__ = [
    "BatchConnector",
    "Connector",
    "RecordPage",
    "SourceRecord",
    "System",
    "Update",
    "WriteOutcome",
]

System = Literal["servicenow", "dataverse"]


@dataclass(frozen=True)
class SourceRecord:
    """One record exactly as the platform returned it (raw values, not display values)."""

    system: System
    table: str
    record_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    etag: str | None = None  # Dataverse @odata.etag; None for ServiceNow


@dataclass(frozen=True)
class RecordPage:
    """One page of a query, in the query's order (``read_page``).

    ``more``: the query may have rows after this page. ``cursor``: Dataverse's
    ``@odata.nextLink`` to continue with (None on the last page); always None on ServiceNow,
    where the caller pages by keyset (its query continues after the last record it saw).
    """

    records: list[SourceRecord]
    more: bool
    cursor: str | None = None


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one update of a batch: ``record`` (as ``update()`` returns it) or ``error``.

    ``may_have_run`` is False only when the write provably did not apply (never sent, refused
    before processing with 401/403/429, left unserviced, 404/412, a change set rolled back):
    then it may be sent again as is. When True and ``error`` is set, the outcome is unknown:
    re-read the record (and look for our note) before writing again.
    """

    record_id: str
    record: SourceRecord | None = None
    error: ConnectorError | None = None
    may_have_run: bool = True

    @property
    def ok(self) -> bool:
        """Whether the update was applied and answered."""
        return self.record is not None

    def result(self) -> SourceRecord:
        """The stored record, or raise the error (what ``update()`` would have done)."""
        if self.record is None:
            raise self.error or UnavailableError("no answer for this update", system="unknown")
        return self.record


# (record_id, changes as update() takes them (the note field included), etag read or None)
Update = tuple[str, Mapping[str, str], str | None]


class Connector(Protocol):
    """What the pipeline needs from a ticket platform."""

    system: System

    def get(self, table: str, record_id: str, fields: Sequence[str]) -> SourceRecord:
        """Read one record's raw field values."""
        ...

    def update(
        self,
        table: str,
        record_id: str,
        changes: Mapping[str, str],
        *,
        etag: str | None = None,
    ) -> SourceRecord:
        """Write raw field values in one request and return the record as stored.

        ``changes`` may include a journal field (ServiceNow ``work_notes``), so the note lands
        atomically with the values it describes. Such a write is not idempotent: connectors
        retry it only when the platform provably did not apply it (429, connect failures).
        """
        ...

    def own_user(self) -> str | None:
        """The id under which our own writes appear (``last updated by``), when the platform
        can tell us (Dataverse ``WhoAmI``); None when the mapping must name it (ServiceNow)."""
        ...

    def fallback_text(self, table: str, record_id: str) -> str | None:
        """Text to enrich when the record's description is empty, if the platform keeps one.

        Dataverse: a case created from an e-mail has its text in the first e-mail activity
        (an HTML body). ServiceNow keeps the e-mail in the description: None.
        """
        ...

    def has_note(self, table: str, record_id: str, marker: str, *, element: str) -> bool:
        """Whether a note on the record (journal entry, annotation) contains ``marker``.

        Lets a retried job see that its earlier write landed although the call failed.
        """
        ...

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
        """Set values that our update (whose note holds ``marker``) replaced.

        ``{field: (their value, our value)}``; ``written`` is the record as our update left it,
        ``read`` the record as we read it before, when known. Platforms with conditional writes
        (Dataverse If-Match) refuse such an update instead and return ``{}``; ServiceNow's
        Table API has none, so its connector finds them after the fact (sys_mod_count, then
        sys_audit) for the caller to restore.
        """
        ...

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        """Yield every record matching a platform query, paging in a stable order."""
        ...


class BatchConnector(Connector, Protocol):
    """A connector that reads one page at a time and writes many records per request (backfills).

    Not part of ``Connector``: the live pipeline (and its test fakes) need neither.
    """

    def read_page(
        self,
        table: str,
        query: str,
        fields: Sequence[str],
        *,
        limit: int,
        cursor: str | None = None,
        order: str | None = None,
    ) -> RecordPage:
        """Read ONE page of at most ``limit`` records matching ``query`` in a stable order."""
        ...

    def update_many(self, table: str, updates: Sequence[Update]) -> list[WriteOutcome]:
        """Write each ``(record_id, changes, etag)``; one outcome per update, in order."""
        ...
