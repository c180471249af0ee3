"""Token providers and the requests auth hook that asks them for a token on every request.

``ServiceNowOAuth`` follows PySNC's client-credentials flow (``POST {instance}/oauth_token.do``,
form-encoded), with a timeout, a lock and an injectable clock. Token-endpoint failures are
translated here, once: 4xx → ``AuthError`` carrying the OAuth ``error``/``error_description``
(never the secret); 429/5xx, timeouts and dropped connections → ``UnavailableError``, which the
caller's retry layer treats like any other transient failure. The excerpt is scrubbed of every
form of the client secret (raw, URL-encoded as in the form body, JSON-escaped, base64) and of
any credential-shaped text before it is cut, so an endpoint echoing the form leaks nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
from pydantic import SecretStr

from domain.errors import BODY_EXCERPT_CHARS, AuthError, UnavailableError
from domain.redact import Redactor

__all__ = ["BearerAuth", "ServiceNowOAuth", "TokenProvider"]

log = logging.getLogger(__name__)

SYSTEM = "servicenow"
# Instance-issued access tokens live 30 min by default (ServiceNow "Manage OAuth tokens").
DEFAULT_EXPIRES_IN_S = 1800.0
REFRESH_MARGIN_S = 60.0


class TokenProvider(Protocol):
    """Hands out a bearer token; raises ``AuthError`` instead of returning an error."""

    def token(self) -> str:
        """Return a valid access token, fetching a new one when needed."""
        ...

    def invalidate(self) -> None:
        """Forget the cached token (the platform rejected it)."""
        ...


class BearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer`` from the provider on every request, retries included."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.provider.token()}"
        return r


class ServiceNowOAuth:
    """Client-credentials token provider for one ServiceNow instance; thread-safe, cached.

    ``redactor`` (shared with the ``HttpClient``, say) gets the client secret and the current
    access token added; without one the provider keeps its own.
    """

    def __init__(
        self,
        instance_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: tuple[float, float],
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.add(client_secret)
        self._token_url = f"{instance_url.rstrip('/')}/oauth_token.do"
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._issued: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        """Return the cached token, or fetch one when none is cached or it is about to expire."""
        # The lock is held across the fetch so concurrent callers share one token request.
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, lifetime_s = self._fetch()
                self._remember(self._token)
                # Refresh early so a token never expires between our check and the server's;
                # for very short lifetimes, fall back to half of it.
                margin = min(REFRESH_MARGIN_S, lifetime_s / 2)
                self._expires_at = self._clock() + lifetime_s - margin
            return self._token

    def invalidate(self) -> None:
        """Drop the cached token so the next ``token()`` fetches a new one."""
        with self._lock:
            self._token = None

    def _remember(self, token: str) -> None:
        # The current token is a secret too: an endpoint echoing it without "Bearer " in front
        # must not leak it. Only the newest is kept, so the redactor does not grow.
        if self._issued is not None and self._issued != token:
            self.redactor.discard(self._issued)
        self.redactor.add(token)
        self._issued = token

    def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
        }
        try:
            response = self._session.post(
                self._token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise UnavailableError(
                f"token request failed: {type(exc).__name__}", system=SYSTEM
            ) from exc
        if response.status_code != 200:
            self._raise_for_token_error(response)
        return self._parse_token(response)

    def _raise_for_token_error(self, response: requests.Response) -> None:
        status = response.status_code
        request_id = response.headers.get("X-Transaction-ID")
        if request_id is not None:
            request_id = self.redactor.excerpt(request_id, 100)
        message = f"token request refused: {_oauth_error(response, self.redactor)}"
        if status == 429 or status >= 500:
            raise UnavailableError(
                message, system=SYSTEM, status_code=status, request_id=request_id
            )
        raise AuthError(message, system=SYSTEM, status_code=status, request_id=request_id)

    def _parse_token(self, response: requests.Response) -> tuple[str, float]:
        body = _json_or_none(response)
        access_token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise AuthError(
                "token response carried no access_token", system=SYSTEM, status_code=200
            )
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        try:
            lifetime_s = float(expires_in) if expires_in is not None else DEFAULT_EXPIRES_IN_S
        except (TypeError, ValueError):
            lifetime_s = DEFAULT_EXPIRES_IN_S
        if lifetime_s <= 0:
            lifetime_s = DEFAULT_EXPIRES_IN_S
        log.info("servicenow: fetched an OAuth token valid for %.0f s", lifetime_s)
        return access_token, lifetime_s


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _oauth_error(response: requests.Response, redactor: Redactor) -> str:
    """``error: error_description`` of an OAuth error body, else a short text excerpt.

    Scrubbed by ``redactor`` before it is cut to ``BODY_EXCERPT_CHARS``.
    """
    body = _json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = str(body["error"])
        if isinstance(body.get("error_description"), str):
            text = f"{text}: {body['error_description']}"
    else:
        text = response.text
    return redactor.excerpt(text, BODY_EXCERPT_CHARS) or f"HTTP {response.status_code}"
