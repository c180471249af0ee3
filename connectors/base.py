"""The connector protocol: connectors move source-native records and do all platform I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["Connector", "SourceRecord", "System"]

System = Literal["servicenow", "dataverse"]


@dataclass(frozen=True)
class SourceRecord:
    """One record exactly as the platform returned it (raw values, not display values)."""

    system: System
    table: str
    record_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    etag: str | None = None  # Dataverse @odata.etag; None for ServiceNow


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
