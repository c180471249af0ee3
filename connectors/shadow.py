"""Shadow mode's record: what we would have written, for the admin's evidence before go-live.

In shadow mode the worker writes nothing to tickets; each suggestion it would have acted on is
recorded here instead (ticket, field, value, confidence, reason, the enricher that made it, the
decision and why, the mapping and model versions). ``python -m triage report`` later joins these
records with the values people finally set. Table Storage in the Functions build (one row per
ticket, field and input; a re-run of the same input overwrites its own rows), memory for tests.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError
from azure.data.tables import TableClient, UpdateMode

from connectors.queue import map_storage_error
from connectors.storage_auth import CredentialFactory, default_credential_factory
from connectors.table_state import LazyTable

__all__ = ["SHADOW_TABLE", "MemoryShadowStore", "ShadowRecord", "ShadowStore", "TableShadowStore"]

SHADOW_TABLE = "enrichshadow"


@dataclass(frozen=True)
class ShadowRecord:
    """One suggestion as shadow mode saw it."""

    system: str
    table: str
    record_id: str
    number: str
    field: str
    value: str
    confidence: float
    reason: str
    source: str
    action: str  # what would have happened: write, suggest or skip
    why: str
    input_hash: str
    mapping_version: str
    model_version: str
    at: float


class ShadowStore(Protocol):
    """Where shadow mode records suggestions."""

    def record(self, rows: list[ShadowRecord]) -> None:
        """Save ``rows`` (idempotent per ticket, field and input)."""
        ...

    def since(self, timestamp: float) -> Iterator[ShadowRecord]:
        """Every record made at or after ``timestamp``."""
        ...


def _row_key(row: ShadowRecord) -> tuple[str, str]:
    partition = f"{row.system}-{row.table}"
    key = hashlib.sha256(f"{row.record_id}:{row.field}:{row.input_hash}".encode()).hexdigest()
    return partition, key


class MemoryShadowStore:
    """Shadow records in memory (tests, the CLI)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], ShadowRecord] = {}
        self._lock = threading.Lock()

    def record(self, rows: list[ShadowRecord]) -> None:
        """Save ``rows``; the same ticket, field and input replaces its earlier row."""
        with self._lock:
            for row in rows:
                self._rows[_row_key(row)] = row

    def since(self, timestamp: float) -> Iterator[ShadowRecord]:
        """Every record made at or after ``timestamp``, oldest first."""
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda r: r.at)
        return iter([r for r in rows if r.at >= timestamp])


class TableShadowStore:
    """Shadow records in Table Storage (``enrichshadow``), one entity per record."""

    def __init__(self, client: TableClient) -> None:
        self._table = LazyTable(client)

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str = SHADOW_TABLE,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> TableShadowStore:
        """Build from the app setting naming the Storage connection (string or identity)."""
        table = LazyTable.from_settings(
            env, connection_setting, table_name, credential_factory=credential_factory
        )
        return cls(table.client)

    def record(self, rows: list[ShadowRecord]) -> None:
        """Upsert ``rows`` (a re-run of the same input replaces its own rows)."""
        self._table.ensure()
        for row in rows:
            partition, key = _row_key(row)
            entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": key, **asdict(row)}
            entity["at_iso"] = datetime.fromtimestamp(row.at, UTC).isoformat()
            try:
                self._table.client.upsert_entity(entity, mode=UpdateMode.REPLACE)
            except AzureError as exc:
                raise map_storage_error(exc, "record shadow suggestion") from exc

    def since(self, timestamp: float) -> Iterator[ShadowRecord]:
        """Every record made at or after ``timestamp`` (a filtered query; order not kept)."""
        self._table.ensure()
        fields = ShadowRecord.__dataclass_fields__
        try:
            for entity in self._table.client.query_entities(
                "at ge @t", parameters={"t": timestamp}
            ):
                yield ShadowRecord(**{k: entity[k] for k in fields})
        except AzureError as exc:
            raise map_storage_error(exc, "read shadow suggestions") from exc
