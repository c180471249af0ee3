"""The HTTP client's pure helpers: which failures may be resent, the wait a platform asks for,
the platform's request id and a scrubbed excerpt of its error message.

Pure functions of a response, its headers or an exception (no session, no clock of their own):
``connectors._http.HttpClient`` builds its retry policy and its typed errors from them, and
re-exports them so ``from connectors._http import should_retry`` keeps working.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC

import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from domain.errors import BODY_EXCERPT_CHARS, ThrottledError, UnavailableError
from domain.redact import Redactor

__all__ = [
    "IDEMPOTENT_METHODS",
    "REQUEST_ID_CHARS",
    "REQUEST_ID_HEADERS",
    "error_excerpt",
    "request_id_of",
    "retry_after_s",
    "should_retry",
]

# PUT is idempotent in HTTP, but a ServiceNow PUT appends journal fields exactly like PATCH.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# ServiceNow answers with X-Transaction-ID (see RESTResponseV2.getAllHeaders() in its docs);
# Dataverse with x-ms-service-request-id and REQ_ID (dataverse.md §5).
REQUEST_ID_HEADERS = ("X-Transaction-ID", "x-ms-service-request-id", "REQ_ID", "x-request-id")
REQUEST_ID_CHARS = 100


def should_retry(exc: BaseException, *, idempotent: bool, max_retry_wait_s: float) -> bool:
    """Decide whether a failed attempt may be sent again."""
    if isinstance(exc, ThrottledError):
        # ServiceNow rejects a rate-limited request before processing it, so resending is safe
        # even for a write. A hint longer than max_retry_wait_s is not slept on inside the
        # invocation: the error surfaces and the queue worker re-enqueues with a delay.
        return exc.retry_after_s is None or exc.retry_after_s <= max_retry_wait_s
    if not isinstance(exc, UnavailableError):
        return False
    if idempotent:
        # Reads: 5xx, timeouts and dropped connections are all worth another try.
        return True
    # Writes (PATCH/POST): our PATCH carries a work_notes journal entry, which the platform
    # appends on every request, so a PATCH is not idempotent. After a 5xx or a read timeout it
    # may have been applied, and resending would append the note twice. Retry only when the
    # request provably never reached the server; otherwise the error surfaces, the queue
    # redelivers the job, and the job's re-read sees whatever was applied.
    return _never_sent(exc.__cause__)


def _never_sent(cause: BaseException | None) -> bool:
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if not isinstance(cause, requests.ConnectionError):
        return False
    reason = cause.args[0] if cause.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError covers refused connections and DNS failures (NameResolutionError).
    return isinstance(reason, NewConnectionError | ConnectionRefusedError)


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """The wait hint in seconds: Retry-After (seconds or HTTP-date), else X-RateLimit-Reset."""
    value = (headers.get("Retry-After") or "").strip()
    if value:
        seconds = _finite(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now)
    # ServiceNow sends X-RateLimit-Reset as a UNIX timestamp (inbound REST API rate limiting).
    reset = _finite((headers.get("X-RateLimit-Reset") or "").strip())
    return None if reset is None else max(0.0, reset - now)


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def request_id_of(response: requests.Response) -> str | None:
    """The platform's id for this request, for support tickets and log correlation."""
    for name in REQUEST_ID_HEADERS:
        if value := response.headers.get(name):
            return value
    return None


def error_excerpt(response: requests.Response, redactor: Redactor | None = None) -> str:
    """At most 200 characters of the platform's error message and detail (never a whole body).

    The text is scrubbed by ``redactor`` before it is cut (without one, credentials are still
    caught by shape: ``Bearer``/``Basic``/``Authorization``/``client_secret=`` values).
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Table API {"message", "detail"}; Web API {"code", "message"}
            text = ": ".join(str(error[k]) for k in ("code", "message", "detail") if error.get(k))
        elif isinstance(error, str):  # OAuth: {"error", "error_description"}
            text = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
    if not text:
        text = response.text
    scrubber = redactor if redactor is not None else Redactor()
    return scrubber.excerpt(text, BODY_EXCERPT_CHARS) or f"HTTP {response.status_code}"
