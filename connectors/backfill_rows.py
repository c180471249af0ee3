"""The checkpoint store's row layer: the row backend protocol, the row codec and the memory rows.

``connectors.backfill_state.RowCheckpointStore`` keeps its logic on any backend with
insert-if-absent and etag-conditional replace (``_Rows``); this module holds that protocol, how a
``Checkpoint`` becomes a row and back (``_to_row`` / ``_from_row``, window keys ``w000042``, the
run id check) and ``_MemoryRows``, the in-process backend of ``MemoryCheckpointStore``. The file
and Table Storage backends are in ``connectors.backfill_stores``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from connectors.backfill_models import COUNT_NAMES, Checkpoint, Counts
from domain.errors import ConfigError

__all__ = ["Row"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Row = dict[str, Any]


class _Rows(Protocol):
    def insert(self, partition: str, key: str, data: Row) -> bool: ...
    def insert_many(self, partition: str, rows: Sequence[tuple[str, Row]]) -> None: ...
    def get(self, partition: str, key: str) -> tuple[Row, str] | None: ...
    def replace(self, partition: str, key: str, data: Row, etag: str) -> str | None: ...
    def list(self, partition: str) -> list[tuple[str, Row, str]]: ...


def _key(index: int) -> str:
    return f"w{index:06d}"


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError("a run id is 1-64 letters, digits, '_', '.' or '-'")


def _to_row(cp: Checkpoint, now: float) -> Row:
    row: Row = {
        "kind": "window",
        "status": cp.status,
        "start": cp.start,
        "end": cp.end,
        "last_time": cp.last_time,
        "last_id": cp.last_id,
        "reason": cp.reason,
        "owner": cp.owner,
        "lease_until": float(cp.lease_until),
        "attempts": cp.attempts,
        "updated_at": float(now),
    }
    row.update({n: getattr(cp.counts, n) for n in COUNT_NAMES})
    row["details"] = json.dumps(dict(cp.counts.details), sort_keys=True)
    row["cursor"] = cp.cursor
    return row


def _from_row(run_id: str, index: int, row: Row, etag: str) -> Checkpoint:
    scanned, filled, skipped, failed = (int(row.get(n, 0)) for n in COUNT_NAMES)
    counts = Counts(scanned, filled, skipped, failed, _details(row.get("details")))
    return Checkpoint(
        run_id,
        index,
        status=row.get("status", "pending"),
        start=str(row.get("start", "")),
        end=str(row.get("end", "")),
        last_time=str(row.get("last_time", "")),
        last_id=str(row.get("last_id", "")),
        counts=counts,
        reason=str(row.get("reason", "")),
        owner=str(row.get("owner", "")),
        lease_until=float(row.get("lease_until", 0.0)),
        attempts=int(row.get("attempts", 0)),
        etag=etag,
        cursor=str(row.get("cursor", "")),
    )


def _details(raw: object) -> tuple[tuple[str, int], ...]:
    try:
        data = json.loads(str(raw)) if raw else {}
    except ValueError:
        return ()
    if not isinstance(data, dict):
        return ()
    return tuple(sorted((str(k), int(v)) for k, v in data.items() if isinstance(v, int)))


class _MemoryRows:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, tuple[Row, str]]] = {}
        self.lock = threading.Lock()

    def insert(self, partition: str, key: str, data: Row) -> bool:
        with self.lock:
            part = self.data.setdefault(partition, {})
            if key in part:
                return False
            part[key] = (dict(data), uuid.uuid4().hex)
            return True

    def insert_many(self, partition: str, rows: Sequence[tuple[str, Row]]) -> None:
        for key, data in rows:
            self.insert(partition, key, data)

    def get(self, partition: str, key: str) -> tuple[Row, str] | None:
        with self.lock:
            found = self.data.get(partition, {}).get(key)
            return None if found is None else (dict(found[0]), found[1])

    def replace(self, partition: str, key: str, data: Row, etag: str) -> str | None:
        with self.lock:
            part = self.data.get(partition, {})
            if key not in part or part[key][1] != etag:
                return None
            new = uuid.uuid4().hex
            part[key] = (dict(data), new)
            return new

    def list(self, partition: str) -> list[tuple[str, Row, str]]:
        with self.lock:
            return [(k, dict(r), e) for k, (r, e) in self.data.get(partition, {}).items()]
