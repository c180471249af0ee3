"""Chat completions over ``requests``: Azure OpenAI or any OpenAI-compatible endpoint.

``ChatCompletionsClient.complete(request) -> response`` sends one chat completions request body
(built by ``enrichers.llm_classifier``) and returns the parsed JSON answer. It knows nothing of
tickets; it only adds where the request goes and how it authenticates:

* ``flavour="azure"``: ``POST {endpoint}/openai/deployments/{deployment}/chat/completions
  ?api-version=...`` with an ``api-key`` header (Microsoft Learn, "Azure OpenAI REST API
  reference"; structured outputs need api-version 2024-08-01-preview or later);
* ``flavour="openai"``: ``POST {endpoint}/chat/completions`` (the endpoint ends in ``/v1``) with
  ``Authorization: Bearer <key>`` and ``"model": deployment`` added to the body.

Every call goes through ``connectors._http.HttpClient``: its timeout, its status → error mapping
and its one retry layer. A 429 is retried while the endpoint's ``Retry-After`` is at most
``HttpSettings.max_retry_wait_s``; a longer wait surfaces at once as ``ThrottledError`` with
``retry_after_s``, which the queue worker turns into a re-enqueue with that visibility delay.
The request has no side effect, so it is sent as idempotent (5xx and timeouts are retried).

Azure answers a prompt its content filter refused with HTTP 400 and ``code: content_filter``:
that is an answer about this ticket, not a broken request, so it comes back as an ordinary
response whose choice has ``finish_reason: content_filter`` (the classifier abstains) instead of
a ``RejectedError`` that would poison the job.

The key never appears in an error or a log line: the client's ``Redactor`` knows it, and every
message built from a response is scrubbed with it before it is cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from connectors._http import HttpClient
from domain.errors import ConfigError, UnavailableError
from domain.redact import Redactor
from domain.settings import HttpSettings, LlmClassifierSettings

if TYPE_CHECKING:
    from domain.settings import Settings

__all__ = ["SYSTEM", "ChatCompletionsClient", "build_chat_completions"]

SYSTEM = "llm"


class ChatCompletionsClient:
    """Sends chat completions requests to one deployment (see the module docstring)."""

    def __init__(
        self,
        settings: LlmClassifierSettings,
        http: HttpSettings | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_throttle: Callable[[float], None] | None = None,
    ) -> None:
        key = settings.api_key.get_secret_value()
        if not key:
            raise ConfigError("ENRICH_LLM__API_KEY is empty")
        base = str(settings.endpoint).rstrip("/")
        self.flavour = settings.flavour
        self.deployment = settings.deployment
        if settings.flavour == "azure":
            deployment = quote(settings.deployment, safe="")
            self.url = f"{base}/openai/deployments/{deployment}/chat/completions"
            self._params: dict[str, str | int] = {"api-version": settings.api_version}
            self._headers = {"api-key": key}
        else:
            self.url = f"{base}/chat/completions"
            self._params = {}
            self._headers = {"Authorization": f"Bearer {key}"}
        http = (http or HttpSettings()).model_copy(update={"read_timeout_s": settings.timeout_s})
        self.redactor = Redactor([key])
        self._http = HttpClient(
            SYSTEM,
            http,
            session=session,
            sleep=sleep,
            redactor=self.redactor,
            on_throttle=on_throttle,
        )

    def __repr__(self) -> str:
        return f"ChatCompletionsClient(url={self.url!r}, flavour={self.flavour!r})"

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST one chat completions request body; the parsed JSON answer.

        Raises:
            ThrottledError: 429 with a wait longer than the client sleeps on (``retry_after_s``).
            AuthError, RejectedError, UnavailableError: as ``connectors._http`` maps them.
        """
        body = dict(request)
        if self.flavour == "openai":
            body["model"] = self.deployment
        response = self._http.request(
            "POST",
            self.url,
            params=self._params,
            json=body,
            headers=self._headers,
            idempotent=True,
            accept=_content_filtered,
        )
        if response.status_code >= 400:  # only a content-filtered prompt gets here
            return {"choices": [{"finish_reason": "content_filter", "message": {}}]}
        try:
            data = response.json()
        except ValueError as exc:
            raise UnavailableError(
                "the answer is not JSON", system=SYSTEM, status_code=response.status_code
            ) from exc
        if not isinstance(data, dict):
            raise UnavailableError(
                "the answer is not a JSON object", system=SYSTEM, status_code=response.status_code
            )
        return data

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        self._http.close()


def _content_filtered(response: requests.Response) -> bool:
    """Azure's answer to a prompt its content filter refused (400, ``code: content_filter``)."""
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") == "content_filter"


def build_chat_completions(
    settings: Settings, *, session: requests.Session | None = None
) -> ChatCompletionsClient:
    """The client of ``settings.llm`` with the app's HTTP budget; ``ConfigError`` when off."""
    if settings.llm is None:
        raise ConfigError("the LLM classifier is not configured (ENRICH_LLM__ENDPOINT)")
    return ChatCompletionsClient(settings.llm, settings.http, session=session)
