"""The Storage queue between the webhook and the worker: send jobs, optionally delayed.

The webhook enqueues through the Functions output binding; this module is for code that
enqueues itself, chiefly the worker re-enqueuing a job with a visibility delay after a long
429 (raising instead would burn one of the trigger's five dequeues). Messages are base64
encoded because host.json sets ``"messageEncoding": "base64"``, which the queue trigger expects.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)

from connectors.storage_auth import (
    DEV_STORAGE_CONNECTION_STRING,
    CredentialFactory,
    StorageConnection,
    default_credential_factory,
    queue_client,
    resolve_connection,
    resolve_connection_string,
)
from domain.errors import (
    AuthError,
    ConflictError,
    ConnectorError,
    NotFoundError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)

__all__ = [
    "DEV_STORAGE_CONNECTION_STRING",
    "MAX_DELAY_S",
    "MAX_MESSAGE_CHARS",
    "InMemoryJobQueue",
    "JobQueue",
    "QueueClientLike",
    "StorageJobQueue",
    "map_storage_error",
    "resolve_connection_string",
]

log = logging.getLogger(__name__)

SYSTEM = "storage"

# Put Message: the visibility timeout "cannot be larger than 7 days" and must be smaller than
# the message's time-to-live, whose default is also 7 days. One hour under leaves the worker
# time to take the message before it expires.
MAX_DELAY_S = 7 * 24 * 3600 - 3600

# A queue message is at most 64 KiB once encoded; base64 turns 3 bytes into 4 characters.
MAX_MESSAGE_CHARS = 64 * 1024


class JobQueue(Protocol):
    """Where jobs go: a Storage queue in production, a list in unit tests."""

    def send(self, message: str, *, delay_s: float = 0) -> None:
        """Enqueue ``message``; it becomes visible to the worker after ``delay_s`` seconds."""
        ...


def _check_message(message: str) -> None:
    encoded_chars = 4 * math.ceil(len(message.encode("utf-8")) / 3)
    if encoded_chars > MAX_MESSAGE_CHARS:
        raise RejectedError(
            f"job message is {encoded_chars} characters once base64 encoded; "
            f"the queue takes at most {MAX_MESSAGE_CHARS}",
            system=SYSTEM,
        )


def _check_delay(delay_s: float) -> None:
    if math.isnan(delay_s):
        raise ValueError("delay_s is NaN")


def _visibility_timeout(delay_s: float) -> int:
    """Whole seconds for Storage: a delay in the past means now, past the cap means the cap."""
    _check_delay(delay_s)
    if delay_s > MAX_DELAY_S:
        log.warning("queue delay %.0f s exceeds the Storage cap; using %d s", delay_s, MAX_DELAY_S)
        return MAX_DELAY_S
    return max(0, math.ceil(delay_s))


class QueueClientLike(Protocol):
    """The part of azure.storage.queue.QueueClient this module uses (a seam for tests)."""

    queue_name: str

    def create_queue(self) -> None:
        """Create the queue; ResourceExistsError if it exists."""
        ...

    def send_message(self, content: str, *, visibility_timeout: int) -> Any:
        """Put one message on the queue."""
        ...


class StorageJobQueue:
    """A JobQueue on an Azure Storage queue, created on first use."""

    def __init__(
        self,
        queue_client: QueueClientLike | None = None,
        *,
        factory: Callable[[], QueueClientLike] | None = None,
        queue_name: str = "",
    ) -> None:
        """Wrap ``queue_client``, or build it with ``factory`` on first send.

        The worker rarely sends (a re-queue after a long 429, the poison queue), so the Storage
        queue SDK is imported and the client built only then: it keeps the cold start short.
        """
        if queue_client is None and factory is None:
            raise ValueError("a queue client or a factory is required")
        self._client_or_none = queue_client
        self._factory = factory
        self._name = queue_name or (queue_client.queue_name if queue_client else "")
        self._created = False
        self._create_lock = threading.Lock()
        self._factory_lock = threading.Lock()  # not _create_lock: _ensure_queue holds that one

    @property
    def _client(self) -> QueueClientLike:
        if self._client_or_none is None:
            assert self._factory is not None
            with self._factory_lock:
                if self._client_or_none is None:
                    self._client_or_none = self._factory()
        return self._client_or_none

    @classmethod
    def from_connection_string(
        cls,
        conn_str: str,
        queue_name: str,
        *,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 20.0,
        retry_total: int = 2,
    ) -> StorageJobQueue:
        """Build on a connection string; messages are base64 encoded like the Functions host.

        The client is created on first send (the SDK import costs a cold start ~0.3 s).
        """
        connection = StorageConnection("connection string", connection_string=conn_str)
        return cls.from_connection(
            connection,
            queue_name,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry_total=retry_total,
        )

    @classmethod
    def from_connection(
        cls,
        connection: StorageConnection,
        queue_name: str,
        *,
        credential_factory: CredentialFactory = default_credential_factory,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 20.0,
        retry_total: int = 2,
    ) -> StorageJobQueue:
        """Build on a resolved connection (connection string or identity), client on first send."""

        def factory() -> QueueClientLike:
            from azure.storage.queue import (
                ExponentialRetry,
                TextBase64DecodePolicy,
                TextBase64EncodePolicy,
            )

            client: QueueClientLike = queue_client(
                connection,
                queue_name,
                credential_factory=credential_factory,
                message_encode_policy=TextBase64EncodePolicy(),
                message_decode_policy=TextBase64DecodePolicy(),
                connection_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                # The SDK default waits 15 s before its first retry; a worker invocation can't.
                retry_policy=ExponentialRetry(
                    initial_backoff=1,
                    increment_base=2,
                    retry_total=retry_total,
                    random_jitter_range=1,
                ),
            )
            return client

        return cls(factory=factory, queue_name=queue_name)

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str], connection_setting: str, queue_name: str, **kwargs: Any
    ) -> StorageJobQueue:
        """Build from the connection an app setting names (e.g. AzureWebJobsStorage).

        A connection string or an identity-based ``<setting>__*`` connection
        (``connectors.storage_auth``); a bad or incomplete one raises ``ConfigError`` now.
        """
        connection = resolve_connection(env, connection_setting)
        if connection.identity_based:
            connection.endpoint("queue")  # fail at start-up, not on the first re-queue
        return cls.from_connection(connection, queue_name, **kwargs)

    @property
    def queue_name(self) -> str:
        """The Storage queue's name."""
        return self._name

    def send(self, message: str, *, delay_s: float = 0) -> None:
        """Enqueue ``message``, invisible for ``delay_s`` s (rounded up, capped at MAX_DELAY_S)."""
        _check_message(message)
        visibility = _visibility_timeout(delay_s)
        self._ensure_queue()
        try:
            self._client.send_message(message, visibility_timeout=visibility)
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code == 404:
                self._created = False  # deleted under us: the next send recreates it
            raise map_storage_error(exc, "send message") from exc
        log.info("enqueued job on %s (delay %d s)", self.queue_name, visibility)

    def _ensure_queue(self) -> None:
        # Once per instance: concurrent first sends wait here instead of all creating.
        if self._created:
            return
        with self._create_lock:
            if self._created:
                return
            try:
                self._client.create_queue()
                log.info("created queue %s", self.queue_name)
            except ResourceExistsError:
                pass  # created by the host or another instance, possibly with other metadata
            except AzureError as exc:
                raise map_storage_error(exc, "create queue") from exc
            self._created = True


def map_storage_error(exc: AzureError, operation: str) -> ConnectorError:
    """Translate an azure-core error; messages name codes and types only (URLs may carry SAS)."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return _map_http_error(exc, exc.status_code, operation)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return UnavailableError(
            f"{operation}: cannot reach Storage ({type(exc).__name__})", system=SYSTEM
        )
    return ConnectorError(f"{operation}: {type(exc).__name__}", system=SYSTEM)


def _map_http_error(exc: HttpResponseError, status: int, operation: str) -> ConnectorError:
    error_code = getattr(exc, "error_code", None)  # StorageErrorCode enum or plain str
    code = str(getattr(error_code, "value", error_code) or exc.reason or "error")
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    request_id = headers.get("x-ms-request-id")
    message = f"{operation}: {code}"
    kwargs: dict[str, Any] = {"system": SYSTEM, "status_code": status, "request_id": request_id}
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status in (409, 412):
        return ConflictError(message, **kwargs)
    if status == 429:
        return ThrottledError(message, retry_after_s=_retry_after(headers), **kwargs)
    if status == 408 or status >= 500:
        return UnavailableError(message, **kwargs)
    return RejectedError(message, **kwargs)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class InMemoryJobQueue:
    """A JobQueue for unit tests: records ``(message, delay_s)`` pairs in ``sent``.

    Applies the production size check; set ``error`` to make every send raise it.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def send(self, message: str, *, delay_s: float = 0) -> None:
        """Record the message and the delay the caller asked for."""
        if self.error is not None:
            raise self.error
        _check_message(message)
        _check_delay(delay_s)
        with self._lock:
            self.sent.append((message, float(delay_s)))

    @property
    def messages(self) -> list[str]:
        """The sent messages, in order."""
        with self._lock:
            return [message for message, _ in self.sent]
