"""Backfill checkpoints: one row per run and one per window, shared by every instance.

A window row holds its status (``pending`` → ``running`` → ``done`` | ``failed``), the last
record read (time + id, the stable order's position), counts (scanned, filled, skipped,
failed), the reason of a failure, and a **lease** naming the worker holding it. Every change
is conditional on the etag the holder last saw, so when a window is delivered twice, or a
worker that lost its lease wakes up, exactly one holder advances it; the other gets
``ClaimedError``. A killed worker's window is taken over once its lease expires and resumes
from the checkpoint.

One logic (``RowCheckpointStore``) runs on three row backends with the same semantics:
Azure Table Storage (``TableCheckpointStore``, Azurite in tests), a local JSON file replaced
atomically under a file lock (``FileCheckpointStore``, the CLI without storage) and memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from connectors.queue import map_storage_error
from connectors.table_state import LazyTable
from domain.errors import ClaimedError, ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per file
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BACKFILL_TABLE",
    "Checkpoint",
    "CheckpointStore",
    "Counts",
    "FileCheckpointStore",
    "MemoryCheckpointStore",
    "RowCheckpointStore",
    "RunStatus",
    "TableCheckpointStore",
    "WindowLease",
]

BACKFILL_TABLE = "enrichbackfill"
WindowStatus = Literal["pending", "running", "done", "failed"]
LeaseState = Literal["acquired", "busy", "done", "failed", "missing", "released"]
_RUN_ROW = "run"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REASON_CHARS = 300
_COUNTS = ("scanned", "filled", "skipped", "failed")


@dataclass(frozen=True)
class Counts:
    """Tickets a window has scanned, filled, skipped and failed."""

    scanned: int = 0
    filled: int = 0
    skipped: int = 0
    failed: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, n) + getattr(other, n) for n in _COUNTS))


@dataclass(frozen=True)
class Checkpoint:
    """One window's row as stored: ``last_time`` is ISO-8601 UTC ("" before the first record)."""

    run_id: str
    index: int
    status: WindowStatus = "pending"
    start: str = ""
    end: str = ""
    last_time: str = ""
    last_id: str = ""
    counts: Counts = field(default_factory=Counts)
    reason: str = ""
    owner: str = ""
    lease_until: float = 0.0
    attempts: int = 0
    etag: str | None = None


@dataclass(frozen=True)
class WindowLease:
    """The answer to ``acquire``: ``acquired`` (work from ``checkpoint``), or why not."""

    state: LeaseState
    checkpoint: Checkpoint | None = None
    token: str = ""
    lease_s: float = 0.0
    retry_after_s: float = 0.0
    #: Taken over from a holder whose lease ran out (it may have been killed mid-window).
    reclaimed: bool = False


@dataclass(frozen=True)
class RunStatus:
    """A run's progress aggregated over its windows."""

    run_id: str
    windows: int
    by_status: Mapping[str, int]
    counts: Counts
    failures: tuple[tuple[int, str], ...] = ()
    spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """``missing``, ``pending``, ``running``, ``done`` or ``failed`` (finished, some failed)."""
        if self.windows == 0:
            return "missing"
        done, failed = self.by_status.get("done", 0), self.by_status.get("failed", 0)
        if done + failed == self.windows:
            return "failed" if failed else "done"
        return "pending" if self.by_status.get("pending", 0) == self.windows else "running"


class CheckpointStore(Protocol):
    """Runs and their windows' checkpoints (see the module docstring)."""

    def create_run(
        self, run_id: str, windows: Sequence[tuple[str, str]], *, spec: Mapping[str, Any] = ...
    ) -> None:
        """Record a run and its windows ``(start, end)`` as pending; existing rows are kept."""
        ...

    def acquire(self, run_id: str, index: int, *, lease_s: float) -> WindowLease:
        """Take a window for ``lease_s`` seconds (pending, or running with an expired lease)."""
        ...

    def advance(
        self, lease: WindowLease, *, last_time: str, last_id: str, delta: Counts
    ) -> WindowLease:
        """Move the checkpoint forward and renew the lease; ``ClaimedError`` if it was lost."""
        ...

    def finish(self, lease: WindowLease, delta: Counts = ...) -> WindowLease:
        """Mark the window done."""
        ...

    def fail(self, lease: WindowLease, reason: str, delta: Counts = ...) -> WindowLease:
        """Mark the window failed permanently, with its reason."""
        ...

    def release(self, lease: WindowLease, delta: Counts = ...) -> WindowLease:
        """Give the window back (pending, checkpoint kept): the next delivery resumes at once."""
        ...

    def get(self, run_id: str, index: int) -> Checkpoint | None:
        """One window's checkpoint, or None."""
        ...

    def run_status(self, run_id: str) -> RunStatus:
        """The run's windows aggregated."""
        ...


# ---- row backends ------------------------------------------------------------------------

Row = dict[str, Any]


class _Rows(Protocol):
    def insert(self, partition: str, key: str, data: Row) -> bool: ...
    def insert_many(self, partition: str, rows: Sequence[tuple[str, Row]]) -> None: ...
    def get(self, partition: str, key: str) -> tuple[Row, str] | None: ...
    def replace(self, partition: str, key: str, data: Row, etag: str) -> str | None: ...
    def list(self, partition: str) -> list[tuple[str, Row, str]]: ...


class RowCheckpointStore:
    """The checkpoint logic on any row backend with insert-if-absent and etag replace."""

    def __init__(self, rows: _Rows, now: Callable[[], float] = time.time) -> None:
        self._rows = rows
        self._now = now

    def create_run(
        self,
        run_id: str,
        windows: Sequence[tuple[str, str]],
        *,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a run and its pending windows; a repeat (or a crashed create) adds only the
        rows that are missing and never resets a window."""
        _check_run_id(run_id)
        text = json.dumps(dict(spec or {}), sort_keys=True, default=str)
        if len(text) > 30_000:
            raise ConfigError("the run's spec is too large to store")
        run = {"kind": "run", "windows": len(windows), "spec": text, "created_at": self._now()}
        now = self._now()
        rows = [
            (_key(index), _to_row(Checkpoint(run_id, index, start=start, end=end), now))
            for index, (start, end) in enumerate(windows)
        ]
        # Windows first, the run row last: a run row means its windows all exist.
        self._rows.insert_many(run_id, rows)
        self._rows.insert(run_id, _RUN_ROW, run)

    def acquire(self, run_id: str, index: int, *, lease_s: float) -> WindowLease:
        """Take the window, or say it is busy (with the lease's remaining time), done or failed."""
        for _ in range(3):
            current = self.get(run_id, index)
            if current is None:
                return WindowLease("missing")
            if current.status in ("done", "failed"):
                return WindowLease(current.status, current)
            now = self._now()
            if current.status == "running" and current.lease_until > now:
                return WindowLease("busy", current, retry_after_s=current.lease_until - now)
            token = uuid.uuid4().hex
            taken = replace(
                current,
                status="running",
                owner=token,
                lease_until=now + lease_s,
                attempts=current.attempts + 1,
            )
            etag = self._write(taken, current.etag)
            if etag is not None:
                reclaimed = current.status == "running"
                stored = replace(taken, etag=etag)
                return WindowLease("acquired", stored, token, lease_s, reclaimed=reclaimed)
        return WindowLease("busy", None, retry_after_s=1.0)

    def advance(
        self, lease: WindowLease, *, last_time: str, last_id: str, delta: Counts
    ) -> WindowLease:
        """Checkpoint ``(last_time, last_id)`` and add ``delta``; renews the lease."""
        return self._update(lease, "running", delta, last_time=last_time, last_id=last_id)

    def finish(self, lease: WindowLease, delta: Counts | None = None) -> WindowLease:
        """Mark the window done (adding ``delta``)."""
        return self._update(lease, "done", delta or Counts())

    def fail(self, lease: WindowLease, reason: str, delta: Counts | None = None) -> WindowLease:
        """Mark the window failed; the reason is kept (cut to 300 characters)."""
        return self._update(lease, "failed", delta or Counts(), reason=reason[:_REASON_CHARS])

    def release(self, lease: WindowLease, delta: Counts | None = None) -> WindowLease:
        """Set the window pending again with its checkpoint, so a redelivery starts at once."""
        return self._update(lease, "pending", delta or Counts())

    def get(self, run_id: str, index: int) -> Checkpoint | None:
        """The window's checkpoint (with its etag), or None."""
        _check_run_id(run_id)
        found = self._rows.get(run_id, _key(index))
        return None if found is None else _from_row(run_id, index, *found)

    def windows(self, run_id: str) -> list[Checkpoint]:
        """Every window of the run, in index order."""
        _check_run_id(run_id)
        rows = [(k, r, e) for k, r, e in self._rows.list(run_id) if k != _RUN_ROW]
        return sorted(
            (_from_row(run_id, int(k[1:]), r, e) for k, r, e in rows), key=lambda c: c.index
        )

    def run_status(self, run_id: str) -> RunStatus:
        """Windows by status, summed counts, failed windows with their reasons, the spec."""
        _check_run_id(run_id)
        rows = self._rows.list(run_id)
        run = next((r for k, r, _ in rows if k == _RUN_ROW), None)
        windows = [_from_row(run_id, int(k[1:]), r, e) for k, r, e in rows if k != _RUN_ROW]
        by_status: dict[str, int] = {}
        total = Counts()
        for cp in windows:
            by_status[cp.status] = by_status.get(cp.status, 0) + 1
            total = total + cp.counts
        failures = tuple(sorted((c.index, c.reason) for c in windows if c.status == "failed"))
        spec = json.loads(str(run["spec"])) if run is not None else {}
        return RunStatus(run_id, len(windows), by_status, total, failures, spec)

    def _update(
        self, lease: WindowLease, status: WindowStatus, delta: Counts, **changes: Any
    ) -> WindowLease:
        held = lease.checkpoint
        if lease.state != "acquired" or held is None:
            raise ClaimedError("the window is not held", retry_after_s=lease.retry_after_s)
        lease_until = self._now() + lease.lease_s if status == "running" else 0.0
        owner = lease.token if status == "running" else ""
        new = replace(
            held,
            status=status,
            counts=held.counts + delta,
            owner=owner,
            lease_until=lease_until,
            **changes,
        )
        etag = self._write(new, held.etag)
        if etag is None:
            current = self.get(held.run_id, held.index)
            wait = max(0.0, current.lease_until - self._now()) if current is not None else 0.0
            raise ClaimedError(
                f"window {held.index} of run {held.run_id} moved on without us",
                retry_after_s=wait,
            )
        state: LeaseState = "acquired"
        if status == "done":
            state = "done"
        elif status == "failed":
            state = "failed"
        elif status == "pending":
            state = "released"
        return replace(lease, state=state, checkpoint=replace(new, etag=etag))

    def _write(self, checkpoint: Checkpoint, etag: str | None) -> str | None:
        if etag is None:
            return None
        row = _to_row(checkpoint, self._now())
        return self._rows.replace(checkpoint.run_id, _key(checkpoint.index), row, etag)


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
    row.update({n: getattr(cp.counts, n) for n in _COUNTS})
    return row


def _from_row(run_id: str, index: int, row: Row, etag: str) -> Checkpoint:
    counts = Counts(*(int(row.get(n, 0)) for n in _COUNTS))
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
    )


# ---- memory ------------------------------------------------------------------------------


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


class MemoryCheckpointStore(RowCheckpointStore):
    """Checkpoints in this process only (tests; a CLI run that need not survive a kill)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        super().__init__(_MemoryRows(), now)


# ---- local file --------------------------------------------------------------------------


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
        cls, env: Mapping[str, str], connection_setting: str, table_name: str = BACKFILL_TABLE
    ) -> TableCheckpointStore:
        """Build from the app setting holding the Storage connection string."""
        return cls(LazyTable.from_settings(env, connection_setting, table_name).client)
