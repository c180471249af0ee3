"""Row backends of the backfill checkpoint store: a local JSON file and Azure Table Storage.

``connectors.backfill_state`` holds the one logic (``RowCheckpointStore``) and the memory
backend; these two give it the same semantics on disk (the CLI without storage: the file is
replaced atomically under a file lock) and in Table Storage (every instance of the app).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from connectors.backfill_state import BACKFILL_TABLE, Row, RowCheckpointStore
from connectors.queue import map_storage_error
from connectors.storage_auth import CredentialFactory, default_credential_factory
from connectors.table_state import LazyTable
from domain.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per file
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileCheckpointStore", "TableCheckpointStore"]


class _FileRows:
    """Rows in one JSON file: every change reads, edits and atomically replaces it, under an
    advisory lock (``<file>.lock``) so several local processes share it safely."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, list[Any]]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(f"{self.path}.lock", "a+b") as lock_file:
            if fcntl is not None:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                data = self._read()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    self._write(data)
            finally:
                if fcntl is not None:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, list[Any]]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read checkpoint file {self.path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"checkpoint file {self.path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise ConfigError(f"checkpoint file {self.path} is not a JSON object")
        return data

    def _write(self, data: Mapping[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def insert(self, partition: str, key: str, data: Row) -> bool:
        with self._locked() as rows:
            part = rows.setdefault(partition, {})
            if key in part:
                return False
            part[key] = [data, uuid.uuid4().hex]
            return True

    def insert_many(self, partition: str, rows: Sequence[tuple[str, Row]]) -> None:
        with self._locked() as data:  # one rewrite of the file for the whole run
            part = data.setdefault(partition, {})
            for key, row in rows:
                part.setdefault(key, [row, uuid.uuid4().hex])

    def get(self, partition: str, key: str) -> tuple[Row, str] | None:
        with self._locked() as rows:
            found = rows.get(partition, {}).get(key)
            return None if found is None else (dict(found[0]), str(found[1]))

    def replace(self, partition: str, key: str, data: Row, etag: str) -> str | None:
        with self._locked() as rows:
            part = rows.get(partition, {})
            if key not in part or part[key][1] != etag:
                return None
            new = uuid.uuid4().hex
            part[key] = [data, new]
            return new

    def list(self, partition: str) -> list[tuple[str, Row, str]]:
        with self._locked() as rows:
            return [(k, dict(r), str(e)) for k, (r, e) in rows.get(partition, {}).items()]


class FileCheckpointStore(RowCheckpointStore):
    """Checkpoints in a local JSON file (the CLI without storage); survives a killed process."""

    def __init__(self, path: str | Path, now: Callable[[], float] = time.time) -> None:
        super().__init__(_FileRows(Path(path)), now)


# ---- Table Storage -----------------------------------------------------------------------


class _TableRows:
    """Rows in a table: PartitionKey = run id, RowKey = ``run`` or ``w<index>``."""

    def __init__(self, client: TableClient) -> None:
        self._table = LazyTable(client)

    def insert(self, partition: str, key: str, data: Row) -> bool:
        self._table.ensure()
        try:
            self._table.client.create_entity({"PartitionKey": partition, "RowKey": key, **data})
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise map_storage_error(exc, "create backfill row") from exc
        return True

    def insert_many(self, partition: str, rows: Sequence[tuple[str, Row]]) -> None:
        """Entity-group transactions of 100 (one partition); a chunk holding a row that
        exists already (a repeated or crashed create) falls back to row-by-row inserts."""
        self._table.ensure()
        for at in range(0, len(rows), 100):
            chunk = rows[at : at + 100]
            ops = [("create", {"PartitionKey": partition, "RowKey": k, **r}) for k, r in chunk]
            try:
                self._table.client.submit_transaction(ops)
            except TableTransactionError:
                for key, data in chunk:
                    self.insert(partition, key, data)
            except AzureError as exc:
                raise map_storage_error(exc, "create backfill windows") from exc

    def get(self, partition: str, key: str) -> tuple[Row, str] | None:
        self._table.ensure()
        try:
            entity = self._table.client.get_entity(partition, key)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise map_storage_error(exc, "read checkpoint") from exc
        return _plain(entity), str(entity.metadata["etag"])

    def replace(self, partition: str, key: str, data: Row, etag: str) -> str | None:
        self._table.ensure()
        try:
            meta = self._table.client.update_entity(
                {"PartitionKey": partition, "RowKey": key, **data},
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None  # another holder changed it first
        except AzureError as exc:
            raise map_storage_error(exc, "update checkpoint") from exc
        return str(meta["etag"])

    def list(self, partition: str) -> list[tuple[str, Row, str]]:
        self._table.ensure()
        try:
            entities = list(
                self._table.client.query_entities(
                    "PartitionKey eq @run", parameters={"run": partition}
                )
            )
        except AzureError as exc:
            raise map_storage_error(exc, "list checkpoints") from exc
        return [(str(e["RowKey"]), _plain(e), str(e.metadata["etag"])) for e in entities]


def _plain(entity: Mapping[str, Any]) -> Row:
    return {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}


class TableCheckpointStore(RowCheckpointStore):
    """Checkpoints on Azure Table Storage (table ``enrichbackfill``), shared by all instances."""

    def __init__(self, client: TableClient, now: Callable[[], float] = time.time) -> None:
        super().__init__(_TableRows(client), now)

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str = BACKFILL_TABLE,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> TableCheckpointStore:
        """Build from the app setting naming the Storage connection (string or identity)."""
        table = LazyTable.from_settings(
            env, connection_setting, table_name, credential_factory=credential_factory
        )
        return cls(table.client)
