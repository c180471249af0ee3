"""The replay guard and job claims of ``connectors.state`` on Azure Table Storage.

* **Replay guard** (table ``webhookreplay``) — ``first_use`` is an *Insert Entity*, which fails
  with 409 when the row exists: exactly one caller in the world sees ``True`` for a key. Rows
  are partitioned by the hour in which they expire, so ``purge`` drops whole expired hours.
* **Claims** (table ``enrichclaims``) — a claim is an *Insert Entity* holding a lease; an
  expired lease is taken over with *Update Entity* ``If-Match: <etag>`` so only one of several
  racing takers wins; ``complete``/``hold``/``release`` are conditional on our etag, so a
  holder whose lease was taken over cannot touch the new holder's row.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from connectors.queue import map_storage_error
from connectors.state import Claim, row_key
from connectors.storage_auth import (
    CredentialFactory,
    default_credential_factory,
    resolve_connection,
    table_client,
)

__all__ = ["CLAIMS_TABLE", "REPLAY_TABLE", "LazyTable", "TableClaimStore", "TableReplayGuard"]

log = logging.getLogger(__name__)

REPLAY_TABLE = "webhookreplay"
CLAIMS_TABLE = "enrichclaims"
_TAKEOVER_ATTEMPTS = 3


class LazyTable:
    """A TableClient created on first use, with Storage errors mapped to ConnectorError."""

    def __init__(self, client: TableClient) -> None:
        self.client = client
        self._created = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> LazyTable:
        """A client for ``table_name`` on the Storage account an app setting names.

        The setting holds a connection string, or prefixes an identity-based connection
        (``<setting>__tableServiceUri`` / ``__accountName`` and ``__credential``, ``__clientId``):
        ``connectors.storage_auth`` decides. A bad or incomplete one raises ``ConfigError``.
        """
        connection = resolve_connection(env, connection_setting)
        return cls(
            table_client(
                connection,
                table_name,
                credential_factory=credential_factory,
                connection_timeout=3.05,
                read_timeout=10.0,
                retry_total=2,
            )
        )

    def ensure(self) -> None:
        """Create the table once per process (another instance may have created it)."""
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
        self._table = LazyTable(client)
        self._now = now

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str = REPLAY_TABLE,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> TableReplayGuard:
        """Build from the app setting naming the Storage connection (string or identity)."""
        table = LazyTable.from_settings(
            env, connection_setting, table_name, credential_factory=credential_factory
        )
        return cls(table.client)

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
        self._table = LazyTable(client)
        self._now = now

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        table_name: str = CLAIMS_TABLE,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
    ) -> TableClaimStore:
        """Build from the app setting naming the Storage connection (string or identity)."""
        table = LazyTable.from_settings(
            env, connection_setting, table_name, credential_factory=credential_factory
        )
        return cls(table.client)

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Insert a leased row, or report busy/done, or take over an expired lease by etag."""
        self._table.ensure()
        partition, row = row_key(key)
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
        partition, row = row_key(claim.key)
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
        partition, row = row_key(key)
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
