"""The one exception tree. ``except EnrichmentError`` catches everything this project raises.

::

    EnrichmentError                 base
    ├── ConfigError                 settings, admin mapping or model file failed validation
    ├── MappingError                a source record does not fit the configured mapping
    ├── ClaimedError                another worker holds this job's claim; .retry_after_s
    ├── InboundError                an inbound request was refused; .status is the HTTP answer
    │   └── SignatureError          the request failed authentication (401)
    └── ConnectorError              .system, .status_code, .request_id; str() leads with them
        ├── AuthError               401/403, or token acquisition failed
        ├── NotFoundError           404
        ├── ConflictError           409/412 (stale etag / record changed under us)
        ├── RejectedError           other 4xx: our request is wrong; never retried
        └── TransientError          retried by connectors._http
            ├── ThrottledError      429; .retry_after_s: float | None
            └── UnavailableError    5xx, timeouts, connection errors

Subclasses are split by what the caller does about them. Messages never carry secrets, tokens
or ticket text; response bodies are cut to 200 characters.
"""

from __future__ import annotations

__all__ = [
    "BODY_EXCERPT_CHARS",
    "AuthError",
    "ClaimedError",
    "ConfigError",
    "ConflictError",
    "ConnectorError",
    "EnrichmentError",
    "InboundError",
    "MappingError",
    "NotFoundError",
    "RejectedError",
    "SignatureError",
    "ThrottledError",
    "TransientError",
    "UnavailableError",
]

BODY_EXCERPT_CHARS = 200


class EnrichmentError(Exception):
    """Base class of every error this project raises."""


class ConfigError(EnrichmentError):
    """Settings, the admin mapping or a model file failed validation."""


class MappingError(EnrichmentError):
    """A source record does not fit the configured mapping."""


class ClaimedError(EnrichmentError):
    """Another worker holds the claim on this job's (record, input): try again later."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InboundError(EnrichmentError):
    """An inbound request was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SignatureError(InboundError):
    """An inbound request failed authentication."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401, code="unauthenticated")


class ConnectorError(EnrichmentError):
    """A platform call failed. Carries the system, HTTP status and the platform's request id."""

    def __init__(
        self,
        message: str,
        *,
        system: str,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.status_code = status_code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.system]
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        return f"[{', '.join(parts)}] {self.message}"


class AuthError(ConnectorError):
    """401/403 from the platform, or a token could not be acquired."""


class NotFoundError(ConnectorError):
    """The record does not exist (or an ACL hides it: ServiceNow answers 404 for both)."""


class ConflictError(ConnectorError):
    """409/412: the record changed under us."""


class RejectedError(ConnectorError):
    """Any other 4xx: the request itself is wrong. Never retried."""


class TransientError(ConnectorError):
    """A failure that may pass: retried with backoff."""


class ThrottledError(TransientError):
    """429 Too Many Requests. ``retry_after_s`` is the platform's wait hint, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        system: str,
        status_code: int | None = 429,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, system=system, status_code=status_code, request_id=request_id)
        self.retry_after_s = retry_after_s


class UnavailableError(TransientError):
    """5xx, a timeout or a dropped connection."""
