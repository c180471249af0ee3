"""Backfill checkpoints: one row per run and one per window, shared by every instance.

A window row holds its status (``pending`` → ``running`` → ``done`` | ``failed``), the last
record read (time + id, the stable order's position), counts (scanned, filled, skipped,
failed), the reason of a failure, and a **lease** naming the worker holding it. Every change
is conditional on the etag the holder last saw, so when a window is delivered twice, or a
worker that lost its lease wakes up, exactly one holder advances it; the other gets
``ClaimedError``. A killed worker's window is taken over once its lease expires and resumes
from the checkpoint.

One logic (``RowCheckpointStore``) runs on three row backends with the same semantics:
memory (``MemoryCheckpointStore`` here; its rows and the row codec are in
``connectors.backfill_rows``), and in ``connectors.backfill_stores`` Azure Table Storage
(``TableCheckpointStore``, Azurite in tests) and a local JSON file replaced atomically under a
file lock (``FileCheckpointStore``, the CLI without storage).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from connectors.backfill_models import (
    COUNT_NAMES,
    Checkpoint,
    Counts,
    LeaseState,
    RunStatus,
    WindowLease,
    WindowStatus,
)
from connectors.backfill_rows import (
    Row,
    _check_run_id,
    _from_row,
    _key,
    _MemoryRows,
    _Rows,
    _to_row,
)
from domain.errors import ClaimedError, ConfigError

__all__ = [
    "BACKFILL_TABLE",
    "COUNT_NAMES",
    "Checkpoint",
    "CheckpointStore",
    "Counts",
    "MemoryCheckpointStore",
    "Row",
    "RowCheckpointStore",
    "RunStatus",
    "WindowLease",
]

BACKFILL_TABLE = "enrichbackfill"
_RUN_ROW = "run"
_REASON_CHARS = 300


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
        self,
        lease: WindowLease,
        *,
        last_time: str,
        last_id: str,
        delta: Counts,
        cursor: str = "",
    ) -> WindowLease:
        """Move the checkpoint forward and renew the lease; ``ClaimedError`` if it was lost."""
        ...

    def take(self, run_id: str, wanted: int) -> int:
        """Take up to ``wanted`` tickets from the run's limit; how many were granted."""
        ...

    def run_spec(self, run_id: str) -> dict[str, Any] | None:
        """The spec stored with the run, or None."""
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
        self,
        lease: WindowLease,
        *,
        last_time: str,
        last_id: str,
        delta: Counts,
        cursor: str = "",
    ) -> WindowLease:
        """Checkpoint ``(last_time, last_id)`` (and the platform ``cursor``), add ``delta``;
        renews the lease."""
        changes = {"last_time": last_time, "last_id": last_id, "cursor": cursor}
        return self._update(lease, "running", delta, **changes)

    def take(self, run_id: str, wanted: int) -> int:
        """Take up to ``wanted`` tickets from the run's ``limit`` (its spec); all without one.

        Shared by every instance through the run row's etag, so a run stops at its limit
        however many windows run at once. Returns how many were granted (0 once spent).
        """
        _check_run_id(run_id)
        for _ in range(20):
            found = self._rows.get(run_id, _RUN_ROW)
            if found is None:
                return 0
            row, etag = found
            limit = int(json.loads(str(row.get("spec", "{}"))).get("limit") or 0)
            if not limit:
                return max(wanted, 0)
            taken = int(row.get("taken", 0))
            # A negative ``wanted`` gives back what was taken and not read.
            granted = max(wanted, -taken) if wanted < 0 else max(0, min(wanted, limit - taken))
            if granted == 0:
                return 0
            if self._rows.replace(run_id, _RUN_ROW, {**row, "taken": taken + granted}, etag):
                return granted
        raise ClaimedError("the run's limit is contended; try again", retry_after_s=1.0)

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

    def run_spec(self, run_id: str) -> dict[str, Any] | None:
        """The spec stored with the run (one row read), or None for an unknown run."""
        _check_run_id(run_id)
        found = self._rows.get(run_id, _RUN_ROW)
        if found is None:
            return None
        spec = json.loads(str(found[0].get("spec", "{}")))
        return spec if isinstance(spec, dict) else None

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
        taken = int(run.get("taken", 0)) if run is not None else 0
        return RunStatus(run_id, len(windows), by_status, total, failures, spec, taken)

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


class MemoryCheckpointStore(RowCheckpointStore):
    """Checkpoints in this process only (tests; a CLI run that need not survive a kill)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        super().__init__(_MemoryRows(), now)
