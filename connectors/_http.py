"""HttpClient: the timeout, the status → error mapping and the one retry layer of platform calls.

Status mapping (done here and nowhere else)::

    401/403 → AuthError        404 → NotFoundError        409/412 → ConflictError
    429 → ThrottledError(retry_after_s)    5xx → UnavailableError    other 4xx → RejectedError
    requests Timeout / ConnectionError → UnavailableError (chained with ``from exc``)

Every error carries the HTTP status, the platform's request id (ServiceNow ``X-Transaction-ID``,
Dataverse ``x-ms-service-request-id`` or ``REQ_ID``, else ``x-request-id``) and at most 200
characters of the platform's error message (Dataverse: ``code: message``, so the service
protection codes 0x80072322/0x80072321/0x80072326 show), scrubbed by
the client's ``Redactor`` before it is cut: a server that echoes the request must not put the
password, the client secret or an ``Authorization`` header into exception text and logs.

Retries: one tenacity ``Retrying`` per call, built from ``HttpSettings``. The wait is the
platform's hint when it gives one (``Retry-After`` seconds or HTTP-date, else
``X-RateLimit-Reset`` minus now), else capped exponential backoff with jitter. Retrying stops
after ``max_attempts`` or when the next wait would overrun ``max_elapsed_s``. A 429 asking for
more than ``max_retry_wait_s`` is not slept on: it surfaces at once so the queue worker can
re-enqueue the job with a visibility delay. Which failures are retried depends on whether the
call is idempotent: see ``should_retry``.

Throttle hook: ``on_throttle(seconds)`` is called once per 429 answer — the request's own answer,
whatever its hint (``Retry-After`` seconds or HTTP-date, ``X-RateLimit-Reset``, none; Dataverse's
service-protection codes come as a 429 too), and a part of a batch answer mapped through
``error_for`` — with the wait the platform asked for, or the client's own backoff when it gave
no hint (``backoff_initial_s`` for a batch part), BEFORE the client waits or gives up. A shared
request budget (``connectors.backfill_pacing.SharedBudget.throttled``) uses it to slow every
instance down. A callback that raises is logged (its type only) and otherwise ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from connectors._auth import BearerAuth
from connectors._http_policy import (
    IDEMPOTENT_METHODS,
    REQUEST_ID_CHARS,
    error_excerpt,
    request_id_of,
    retry_after_s,
    should_retry,
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
from domain.redact import Redactor
from domain.settings import HttpSettings

__all__ = ["HttpClient", "error_excerpt", "request_id_of", "retry_after_s", "should_retry"]

log = logging.getLogger(__name__)

Params = Mapping[str, str | int]


class HttpClient:
    """Sends platform requests with a timeout, typed errors and one budgeted retry layer.

    ``redactor`` holds the secrets this client sends (password, client secret); every message
    built from a response is scrubbed with it. Without one, only credential-shaped text is.
    """

    def __init__(
        self,
        system: str,
        settings: HttpSettings,
        *,
        session: requests.Session | None = None,
        auth: requests.auth.AuthBase | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
        pacer: Callable[[], AbstractContextManager[None]] | None = None,
        on_throttle: Callable[[float], None] | None = None,
    ) -> None:
        self.system = system
        # Told the wait of every 429 before the client sleeps on it or gives up (module doc).
        self._on_throttle = on_throttle
        # Each attempt is sent inside ``pacer()`` (connectors._pacing.Pacer.slot), if given.
        self._pacer = pacer if pacer is not None else nullcontext
        self.redactor = redactor if redactor is not None else Redactor()
        self._settings = settings
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._auth = auth
        self._sleep = sleep
        self._now = now
        self._monotonic = monotonic
        self._timeout = (settings.connect_timeout_s, settings.read_timeout_s)
        self._backoff = wait_exponential_jitter(
            multiplier=settings.backoff_initial_s,
            max=settings.backoff_max_s,
            jitter=settings.backoff_initial_s,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        data: bytes | None = None,
        accept: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        """Send one logical request, retrying per policy; return a 2xx/3xx response or raise.

        ``data`` is a raw body (a ``$batch``), sent instead of ``json``. A 4xx/5xx response for
        which ``accept`` returns true is returned instead of raised (a ``$batch`` answered 400
        whose parts say which operation failed).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        retrying = self._retrying(method, idempotent)
        body = _Body(json, data)
        return retrying(self._send, method, url, params, body, headers, accept)

    def error_for(self, method: str, url: str, response: requests.Response) -> ConnectorError:
        """The typed error for a failed response (also for one part of a ``$batch`` answer).

        A 429 is reported to ``on_throttle`` (its hint, else ``backoff_initial_s``): the caller
        holds a throttled answer the retry layer never saw.
        """
        error = self._error_for(method.upper(), url, response)
        if isinstance(error, ThrottledError):
            hint = error.retry_after_s
            self._throttled(hint if hint is not None else self._settings.backoff_initial_s)
        return error

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self._session.close()

    def _retrying(self, method: str, idempotent: bool) -> Retrying:
        started = self._monotonic()
        settings = self._settings

        def stop(state: RetryCallState) -> bool:
            # tenacity's own clock can't be injected, so the budget is measured here; the
            # wait is computed before stop runs, so upcoming_sleep is the wait we'd take.
            if state.attempt_number >= settings.max_attempts:
                return True
            elapsed = self._monotonic() - started
            return elapsed + state.upcoming_sleep > settings.max_elapsed_s

        # The backoff drawn for a hint-less 429 (jittered), so the wait taken is the one reported.
        planned: dict[int, float] = {}

        def retry(state: RetryCallState) -> bool:
            # tenacity asks this first, before it computes the wait or checks the budget.
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return False
            if isinstance(exc, ThrottledError):
                wait = exc.retry_after_s
                if wait is None:
                    wait = planned[state.attempt_number] = float(self._backoff(state))
                self._throttled(wait)
            return should_retry(
                exc, idempotent=idempotent, max_retry_wait_s=settings.max_retry_wait_s
            )

        def wait(state: RetryCallState) -> float:
            drawn = planned.pop(state.attempt_number, None)
            return drawn if drawn is not None else self._wait(state)

        return Retrying(
            retry=retry,
            wait=wait,
            stop=stop,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(method, state),
            reraise=True,
        )

    def _throttled(self, wait_s: float) -> None:
        if self._on_throttle is None:
            return
        try:
            self._on_throttle(wait_s)
        except Exception as exc:  # a budget's failure must not fail the platform call
            log.warning("%s: the throttle callback failed (%s)", self.system, type(exc).__name__)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return float(self._backoff(state))

    def _log_retry(self, method: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        # No status means no response: name the transport failure (ReadTimeout, ...) instead.
        cause = exc.__cause__ if exc is not None else None
        status = getattr(exc, "status_code", None) or type(cause or exc).__name__
        log.warning(
            "%s: %s failed (status=%s, request_id=%s), attempt %d/%d, retrying in %.2f s",
            self.system,
            method,
            status,
            getattr(exc, "request_id", None),
            state.attempt_number,
            self._settings.max_attempts,
            state.upcoming_sleep,
        )

    def _send(
        self,
        method: str,
        url: str,
        params: Params | None,
        body: _Body,
        headers: Mapping[str, str] | None,
        accept: Callable[[requests.Response], bool] | None = None,
    ) -> requests.Response:
        response = self._transmit(method, url, params, body, headers)
        if response.status_code == 401 and isinstance(self._auth, BearerAuth):
            # The token may have expired or been revoked mid-run: fetch a fresh one and resend
            # once (a 401 is refused before processing, so this is safe for writes too).
            log.info("%s: %s got 401, refreshing the token once", self.system, method)
            self._auth.provider.invalidate()
            response = self._transmit(method, url, params, body, headers)
        if response.status_code >= 400 and not (accept is not None and accept(response)):
            raise self._error_for(method, url, response)
        return response

    def _transmit(
        self,
        method: str,
        url: str,
        params: Params | None,
        body: _Body,
        headers: Mapping[str, str] | None,
    ) -> requests.Response:
        where = f"{method} {urlsplit(url).path}"
        try:
            with self._pacer():
                return self._session.request(
                    method,
                    url,
                    params=params,
                    json=body.json,
                    data=body.data,
                    headers=headers,
                    auth=self._auth,
                    timeout=self._timeout,
                )
        except (
            requests.Timeout,
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise UnavailableError(
                f"{where} failed: {type(exc).__name__}", system=self.system
            ) from exc
        except requests.RequestException as exc:
            raise RejectedError(
                f"{where} could not be sent: {type(exc).__name__}", system=self.system
            ) from exc

    def _error_for(self, method: str, url: str, response: requests.Response) -> ConnectorError:
        status = response.status_code
        request_id = request_id_of(response)
        if request_id is not None:  # a header an echoing server may have copied from ours
            request_id = self.redactor.excerpt(request_id, REQUEST_ID_CHARS)
        message = f"{method} {urlsplit(url).path}: {error_excerpt(response, self.redactor)}"
        system = self.system
        if status in (401, 403):
            return AuthError(message, system=system, status_code=status, request_id=request_id)
        if status == 404:
            return NotFoundError(message, system=system, status_code=status, request_id=request_id)
        if status in (409, 412):
            return ConflictError(message, system=system, status_code=status, request_id=request_id)
        if status == 429:
            return ThrottledError(
                message,
                system=system,
                status_code=status,
                request_id=request_id,
                retry_after_s=retry_after_s(response.headers, self._now()),
            )
        if status >= 500:
            return UnavailableError(
                message, system=system, status_code=status, request_id=request_id
            )
        return RejectedError(message, system=system, status_code=status, request_id=request_id)


class _Body:
    """A request body: JSON, or raw bytes (exactly one of them, or neither)."""

    __slots__ = ("data", "json")

    def __init__(self, json: Any, data: bytes | None) -> None:
        self.json = json
        self.data = data
