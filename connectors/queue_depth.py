"""Approximate message counts of the app's Storage queues (the health check's ``queues``).

The queue SDK is imported when the first count is read, never at import. A queue that does
not exist yet (a poison queue before its first message) counts 0. Errors are the project's
``ConnectorError`` subclasses, naming codes only (``connectors.queue.map_storage_error``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.storage_auth import resolve_connection

__all__ = ["QueueDepths"]


class QueueDepths:
    """Reads ``approximate_message_count`` of each named queue."""

    def __init__(self, client_for: Callable[[str], Any], names: Sequence[str]) -> None:
        """``client_for(name)`` builds an ``azure.storage.queue.QueueClient`` (once per name)."""
        self._client_for = client_for
        self.names = tuple(names)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        connection_setting: str,
        names: Sequence[str],
        *,
        timeout_s: float = 3.0,
    ) -> QueueDepths:
        """Build on the connection an app setting names (``ConfigError`` when it is bad)."""
        from connectors.storage_auth import queue_client

        connection = resolve_connection(env, connection_setting)
        if connection.identity_based:
            connection.endpoint("queue")  # a missing queue URI fails now, not on first read

        def client_for(name: str) -> Any:
            from azure.storage.queue import ExponentialRetry

            return queue_client(
                connection,
                name,
                connection_timeout=timeout_s,
                read_timeout=timeout_s,
                retry_policy=ExponentialRetry(initial_backoff=1, retry_total=0),
            )

        return cls(client_for, names)

    def read(self) -> dict[str, int]:
        """Each queue's approximate depth; raises ``ConnectorError`` when Storage fails."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from connectors.queue import map_storage_error

        depths: dict[str, int] = {}
        for name in self.names:
            try:
                props = self._client(name).get_queue_properties()
            except ResourceNotFoundError:
                depths[name] = 0
                continue
            except AzureError as exc:
                raise map_storage_error(exc, f"read depth of {name}") from exc
            depths[name] = int(props.approximate_message_count or 0)
        return depths

    def _client(self, name: str) -> Any:
        with self._lock:
            if name not in self._clients:
                self._clients[name] = self._client_for(name)
            return self._clients[name]
