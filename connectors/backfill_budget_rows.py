"""Rows of the shared backfill budget (``connectors.backfill_pacing``): memory and Table Storage.

``MemoryBudgetRows`` serves tests and single-process runs. ``TableBudgetRows`` uses the table
``enrichbudget``, one row per scope: PartitionKey = the scope (``backfill_pacing.scope_key``),
RowKey ``budget``. The table is created on first use (``LazyTable``); every write of an existing row
is an *Update Entity* with ``If-Match: <etag>``, so of several instances racing on a slot
exactly one wins and the others re-read. Storage errors become ``ConnectorError`` subclasses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from connectors.backfill_pacing import BUDGET_TABLE
from connectors.queue import map_storage_error
from connectors.storage_auth import CredentialFactory, default_credential_factory
from connectors.table_state import LazyTable

__all__ = ["ROW_KEY", "MemoryBudgetRows", "TableBudgetRows"]

ROW_KEY = "budget"

Row = dict[str, Any]


class MemoryBudgetRows:
    """Rows in memory (tests, the CLI without storage): every SharedBudget on it shares them."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Row, str]] = {}
        self._lock = threading.Lock()
        self._version = 0

    def get(self, scope: str) -> tuple[Row, str] | None:
        """The row and its etag, or None."""
        with self._lock:
            found = self._rows.get(scope)
            return None if found is None else (dict(found[0]), found[1])

    def insert(self, scope: str, row: Mapping[str, Any]) -> str | None:
        """Create the row unless it exists."""
        with self._lock:
            if scope in self._rows:
                return None
            return self._put(scope, row)

    def replace(self, scope: str, row: Mapping[str, Any], etag: str) -> str | None:
        """Replace the row if ``etag`` is current."""
        with self._lock:
            found = self._rows.get(scope)
            if found is None or found[1] != etag:
                return None
            return self._put(scope, row)

    def _put(self, scope: str, row: Mapping[str, Any]) -> str:
        self._version += 1
        etag = f"v{self._version}"
        self._rows[scope] = (dict(row), etag)
        return etag


class TableBudgetRows:
    """``BudgetRows`` on a Table Storage table, shared by every instance of the app."""

    def __init__(self, client: TableClient) -> None:
        self._table = LazyTable(client)

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str = BUDGET_TABLE,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> TableBudgetRows:
        """Build from the app setting naming the Storage connection (string or identity)."""
        table = LazyTable.from_settings(
            env, connection_setting, table_name, credential_factory=credential_factory
        )
        return cls(table.client)

    def get(self, scope: str) -> tuple[dict[str, Any], str] | None:
        """The scope's row and etag, or None."""
        self._table.ensure()
        try:
            entity = self._table.client.get_entity(scope, ROW_KEY)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise map_storage_error(exc, "read budget") from exc
        row = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        return row, str(entity.metadata["etag"])

    def insert(self, scope: str, row: Mapping[str, Any]) -> str | None:
        """Create the scope's row; None when another instance created it first."""
        self._table.ensure()
        try:
            meta = self._table.client.create_entity(self._entity(scope, row))
        except ResourceExistsError:
            return None
        except AzureError as exc:
            raise map_storage_error(exc, "create budget") from exc
        return str(meta["etag"])

    def replace(self, scope: str, row: Mapping[str, Any], etag: str) -> str | None:
        """Replace the row if ``etag`` is current; None when another instance wrote first."""
        self._table.ensure()
        try:
            meta = self._table.client.update_entity(
                self._entity(scope, row),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except AzureError as exc:
            raise map_storage_error(exc, "update budget") from exc
        return str(meta["etag"])

    @staticmethod
    def _entity(scope: str, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": scope, "RowKey": ROW_KEY, **row}
