"""State shared by every function instance: the webhook replay guard and per-job write claims.

Both live in Azure Table Storage (Azurite in tests) because the Functions host runs many
instances and each runs several invocations at once: a per-process memory cannot see what a
neighbour did. Both rely on Table Storage's atomic conditional operations:

* **Replay guard** — ``first_use(key)`` is an *Insert Entity*, which fails with 409 when the
  row exists: exactly one caller in the world sees ``True`` for a key. Rows are partitioned by
  the hour in which they expire, so ``purge`` drops whole expired hours.
* **Claims** — before writing to a ticket a worker claims ``(system, record, input hash)``:
  insert a row holding a lease (``lease_until``). A second worker finding a live lease backs
  off; one finding ``done`` skips; one finding an expired lease (the holder crashed or timed
  out) takes it over with *Update Entity* ``If-Match: <etag>``, so only one of several racing
  takers wins. ``complete`` marks the row done; ``release`` deletes it (failure before any write:
  let the next attempt in at once); ``hold`` shortens the lease to a settle time (a write whose
  outcome is unknown may still commit: nobody may re-read and re-write before it has settled).

The memory implementations serve the CLI and unit tests; they keep the same semantics within
one process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from connectors.queue import map_storage_error, resolve_connection_string

__all__ = [
    "CLAIMS_TABLE",
    "REPLAY_TABLE",
    "Claim",
    "ClaimStore",
    "MemoryClaimStore",
    "MemoryReplayGuard",
    "ReplayGuard",
    "TableClaimStore",
    "TableReplayGuard",
]

log = logging.getLogger(__name__)

REPLAY_TABLE = "webhookreplay"
CLAIMS_TABLE = "enrichclaims"
_TAKEOVER_ATTEMPTS = 3

ClaimState = Literal["acquired", "busy", "done"]


@dataclass(frozen=True)
class Claim:
    """The answer to ``claim``: acquired (write now), busy (back off) or done (skip)."""

    key: str
    state: ClaimState
    token: str = ""
    etag: str | None = None
    retry_after_s: float = 0.0
    #: Acquired from a holder whose lease ran out: its write may have landed; look first.
    reclaimed: bool = False
    outcome: str = ""


class ReplayGuard(Protocol):
    """Remembers signed requests until they expire."""

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """True exactly once per ``key``: the first caller, in any instance."""
        ...

    def purge(self) -> int:
        """Forget expired keys; returns how many."""
        ...


class ClaimStore(Protocol):
    """Atomic per-job claims with leases (see the module docstring)."""

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Try to take ``key`` for ``lease_s`` seconds."""
        ...

    def complete(self, claim: Claim, outcome: str) -> None:
        """Mark an acquired claim done: later claims of the same key answer ``done``."""
        ...

    def release(self, claim: Claim) -> None:
        """Give an acquired claim up (nothing was written): the next claim acquires at once."""
        ...

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Keep an acquired claim ``settle_s`` more seconds, then let it expire."""
        ...

    def purge(self, older_than_s: float) -> int:
        """Forget claims untouched for ``older_than_s`` seconds; returns how many."""
        ...


def _row_key(key: str) -> tuple[str, str]:
    # Keys hold ':' and ids; hashing keeps them within Table Storage's key alphabet and spreads
    # rows over 256 partitions.
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return digest[:2], digest


# ---- memory ------------------------------------------------------------------------------


class MemoryReplayGuard:
    """A per-process replay guard (CLI and tests); forgets expired keys as it goes."""

    def __init__(self, now: Callable[[], float] = time.time, max_items: int = 100_000) -> None:
        self._now = now
        self._max = max_items
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is offered (until it expires)."""
        with self._lock:
            now = self._now()
            if len(self._seen) >= self._max:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            known = self._seen.get(key)
            if known is not None and known > now:
                return False
            self._seen[key] = expires_at
            return True

    def purge(self) -> int:
        """Forget expired keys."""
        with self._lock:
            now = self._now()
            before = len(self._seen)
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            return before - len(self._seen)


@dataclass
class _Row:
    status: str
    token: str
    lease_until: float
    updated_at: float
    outcome: str = ""


class MemoryClaimStore:
    """Claims within one process (the CLI; unit tests), bounded in size."""

    def __init__(self, now: Callable[[], float] = time.time, max_items: int = 50_000) -> None:
        self._now = now
        self._max = max_items
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Acquire, or report busy/done."""
        with self._lock:
            now = self._now()
            row = self._rows.get(key)
            if row is not None and row.status == "done":
                return Claim(key, "done", outcome=row.outcome)
            if row is not None and row.lease_until > now:
                return Claim(key, "busy", retry_after_s=row.lease_until - now)
            if len(self._rows) >= self._max:
                self._rows.pop(next(iter(self._rows)))
            token = uuid.uuid4().hex
            self._rows[key] = _Row("claimed", token, now + lease_s, now)
            return Claim(key, "acquired", token=token, reclaimed=row is not None)

    def complete(self, claim: Claim, outcome: str) -> None:
        """Mark done if the claim is still ours."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token:
                row.status, row.outcome, row.updated_at = "done", outcome, self._now()

    def release(self, claim: Claim) -> None:
        """Forget the claim if it is still ours."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token and row.status != "done":
                del self._rows[claim.key]

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Let the claim expire ``settle_s`` from now."""
        with self._lock:
            row = self._rows.get(claim.key)
            if row is not None and row.token == claim.token and row.status != "done":
                row.lease_until = row.updated_at = self._now()
                row.lease_until += settle_s

    def purge(self, older_than_s: float) -> int:
        """Forget claims untouched for ``older_than_s`` seconds."""
        with self._lock:
            cutoff = self._now() - older_than_s
            stale = [k for k, r in self._rows.items() if r.updated_at < cutoff]
            for key in stale:
                del self._rows[key]
            return len(stale)


# ---- Table Storage -------------------------------------------------------------------------


class _Table:
    """A TableClient created on first use, with Storage errors mapped to ConnectorError."""

    def __init__(self, client: TableClient) -> None:
        self.client = client
        self._created = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str], connection_setting: str, table_name: str
    ) -> _Table:
        conn = resolve_connection_string(env, connection_setting)
        return cls(
            TableClient.from_connection_string(
                conn, table_name, connection_timeout=3.05, read_timeout=10.0, retry_total=2
            )
        )

    def ensure(self) -> None:
        if self._created:
            return
        with self._lock:
            if self._created:
                return
            try:
                self.client.create_table()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise map_storage_error(exc, "create table") from exc
            self._created = True


class TableReplayGuard:
    """Replay guard on Table Storage: one row per accepted request, partitioned by hour."""

    def __init__(self, client: TableClient, now: Callable[[], float] = time.time) -> None:
        self._table = _Table(client)
        self._now = now

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str], connection_setting: str, table_name: str = REPLAY_TABLE
    ) -> TableReplayGuard:
        """Build from the app setting holding the Storage connection string."""
        return cls(_Table.from_settings(env, connection_setting, table_name).client)

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """Insert the key's row; False when it already exists (a replay)."""
        self._table.ensure()
        entity = {
            "PartitionKey": _hour(expires_at),
            "RowKey": hashlib.sha256(key.encode("utf-8")).hexdigest(),
            "expires_at": float(expires_at),
        }
        try:
            self._table.client.create_entity(entity)
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise map_storage_error(exc, "remember request") from exc
        return True

    def purge(self) -> int:
        """Delete rows whose hour has passed; returns how many."""
        self._table.ensure()
        return _delete_where(
            self._table.client, "PartitionKey lt @hour", {"hour": _hour(self._now())}
        )


class TableClaimStore:
    """Claims on Table Storage (see the module docstring for the protocol)."""

    def __init__(self, client: TableClient, now: Callable[[], float] = time.time) -> None:
        self._table = _Table(client)
        self._now = now

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str], connection_setting: str, table_name: str = CLAIMS_TABLE
    ) -> TableClaimStore:
        """Build from the app setting holding the Storage connection string."""
        return cls(_Table.from_settings(env, connection_setting, table_name).client)

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Insert a leased row, or report busy/done, or take over an expired lease by etag."""
        self._table.ensure()
        partition, row = _row_key(key)
        for _ in range(_TAKEOVER_ATTEMPTS):
            now, token = self._now(), uuid.uuid4().hex
            entity = self._entity(key, token, "claimed", now + lease_s, now)
            try:
                meta = self._table.client.create_entity(entity)
                return Claim(key, "acquired", token=token, etag=_etag(meta))
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise map_storage_error(exc, "claim job") from exc
            try:
                current = self._table.client.get_entity(partition, row)
            except ResourceNotFoundError:
                continue  # released between our insert and our read: insert again
            except AzureError as exc:
                raise map_storage_error(exc, "read claim") from exc
            if current.get("status") == "done":
                return Claim(key, "done", outcome=str(current.get("outcome", "")))
            lease_until = float(current.get("lease_until", 0.0))
            if lease_until > now:
                return Claim(key, "busy", retry_after_s=lease_until - now)
            entity["attempts"] = int(current.get("attempts", 1)) + 1
            try:
                meta = self._table.client.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return Claim(key, "acquired", token=token, etag=_etag(meta), reclaimed=True)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # another worker took it over (or released it) first: look again
            except AzureError as exc:
                raise map_storage_error(exc, "take over claim") from exc
        return Claim(key, "busy", retry_after_s=1.0)

    def complete(self, claim: Claim, outcome: str) -> None:
        """Mark the row done, if it is still ours (etag)."""
        now = self._now()
        self._replace(claim, self._entity(claim.key, claim.token, "done", now, now, outcome))

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Shorten (or extend) our lease to ``settle_s`` from now."""
        now = self._now()
        self._replace(claim, self._entity(claim.key, claim.token, "claimed", now + settle_s, now))

    def release(self, claim: Claim) -> None:
        """Delete the row, if it is still ours (etag)."""
        partition, row = _row_key(claim.key)
        try:
            self._table.client.delete_entity(
                partition, row, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            log.info("claim %s was taken over before release", claim.key)
        except AzureError as exc:
            raise map_storage_error(exc, "release claim") from exc

    def purge(self, older_than_s: float) -> int:
        """Delete rows untouched for ``older_than_s`` seconds (done claims are history)."""
        self._table.ensure()
        cutoff = self._now() - older_than_s
        return _delete_where(self._table.client, "updated_at lt @cutoff", {"cutoff": cutoff})

    def _replace(self, claim: Claim, entity: dict[str, Any]) -> None:
        try:
            self._table.client.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=claim.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            # Our lease ran out and another worker took the job: it re-reads and decides.
            log.warning("claim %s was taken over by another worker", claim.key)
        except AzureError as exc:
            raise map_storage_error(exc, "update claim") from exc

    @staticmethod
    def _entity(
        key: str, token: str, status: str, lease_until: float, now: float, outcome: str = ""
    ) -> dict[str, Any]:
        partition, row = _row_key(key)
        return {
            "PartitionKey": partition,
            "RowKey": row,
            "key": key[:256],
            "status": status,
            "owner": token,
            "lease_until": float(lease_until),
            "updated_at": float(now),
            "outcome": outcome[:256],
            "attempts": 1,
        }


def _hour(timestamp: float) -> str:
    # Fixed width so string order is numeric order in PartitionKey comparisons.
    return f"{int(timestamp // 3600):010d}"


def _etag(meta: Mapping[str, Any]) -> str | None:
    value = meta.get("etag")
    return str(value) if value is not None else None


def _delete_where(client: TableClient, query: str, parameters: dict[str, Any]) -> int:
    deleted = 0
    try:
        for entity in client.query_entities(
            query, parameters=parameters, select=["PartitionKey", "RowKey"]
        ):
            try:
                client.delete_entity(entity["PartitionKey"], entity["RowKey"])
            except ResourceNotFoundError:
                continue
            deleted += 1
    except AzureError as exc:
        raise map_storage_error(exc, "purge") from exc
    return deleted
