"""Optional abstractive summarizer over the Azure OpenAI chat completions REST API.

Off by default: it does network I/O and sends (cleaned, truncated) ticket text to the customer's
own Azure OpenAI resource. Construct it only when configured, and wrap it as
``FallbackSummarizer(AzureOpenAISummarizer(...), ExtractiveSummarizer())`` so any failure falls
back to the pure extractive summary. It makes one attempt per ticket and never retries: the
fallback is cheaper than waiting (the caller's cool-down handles 429s).

REST shape (Microsoft Learn, "Azure OpenAI in Azure AI Foundry Models REST API reference"):
``POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`` with an
``api-key`` header; 429 answers carry ``retry-after`` / ``retry-after-ms``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests
from pydantic import SecretStr

from domain.errors import (
    BODY_EXCERPT_CHARS,
    AuthError,
    ConfigError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from domain.models import SUMMARY_MAX_CHARS
from domain.redact import Redactor
from domain.sanitize import sanitize_note, sanitize_value
from enrichers.summary import SummaryCandidate, clip
from enrichers.text import clean_email_text

__all__ = ["AzureOpenAISummarizer"]

log = logging.getLogger(__name__)

SYSTEM = "azure-openai"
CONFIDENCE = 0.8
SYSTEM_PROMPT = (
    "You write the short description of an IT service-desk ticket. The description is often a "
    "raw e-mail: ignore greetings, signatures, disclaimers and quoted replies. Reply with one "
    f"line of at most {SUMMARY_MAX_CHARS} characters that states the concrete problem or request "
    "(what is broken or needed, and for which system), in the same language as the ticket "
    "(English, Danish, Swedish or German). No greeting, no personal names, no ticket numbers, "
    "no quotation marks, no trailing full stop."
)
_LABEL = re.compile(
    r"^(?:short\s+description|summary|kort\s+beskrivelse|kort\s+beskrivning|kurzbeschreibung)"
    r"\s*:\s*",
    re.IGNORECASE,
)


class AzureOpenAISummarizer:
    """Asks an Azure OpenAI chat deployment for a ≤160-char short description."""

    name = "azure-openai"

    def __init__(
        self,
        endpoint: str,
        deployment: str,
        api_key: str | SecretStr,
        *,
        session: requests.Session,
        api_version: str = "2024-10-21",
        timeout: tuple[float, float] = (3.05, 20.0),
        max_input_chars: int = 6000,
        max_tokens: int = 120,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not endpoint.startswith("https://") or not deployment or not key:
            raise ConfigError("Azure OpenAI needs an https endpoint, a deployment and an API key")
        self.url = f"{endpoint.rstrip('/')}/openai/deployments/{deployment}/chat/completions"
        self.deployment = deployment
        self.api_version = api_version
        self.timeout = timeout
        self.max_input_chars = max_input_chars
        self.max_tokens = max_tokens
        self._session = session
        self._api_key = key
        self._redactor = Redactor([key])  # an error body echoing our request never leaks it

    def __repr__(self) -> str:
        return f"AzureOpenAISummarizer(url={self.url!r}, api_version={self.api_version!r})"

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """One chat completion; None if there is no text or the model gave nothing usable."""
        # Cleaning first sends less personal data (signatures, phone numbers) and fewer tokens.
        body = clean_email_text(text)[: self.max_input_chars]
        if not body and not title.strip():
            return None
        data = self._post(self._payload(title.strip(), body))
        summary = _first_choice(data)
        if not summary:
            return None
        return SummaryCandidate(
            text=summary,
            confidence=CONFIDENCE,
            method=self.name,
            detail=f"deployment {self.deployment}",
        )

    def _payload(self, title: str, body: str) -> dict[str, Any]:
        """The chat completions request body."""
        user = f"Title: {title or '(none)'}\n\nDescription:\n{body or '(none)'}"
        return {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST the request; map transport and HTTP failures to domain.errors."""
        try:
            response = self._session.post(
                self.url,
                params={"api-version": self.api_version},
                headers={"api-key": self._api_key, "Content-Type": "application/json"},
                json=payload,
                timeout=self.timeout,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise UnavailableError(f"request failed: {type(exc).__name__}", system=SYSTEM) from exc
        if response.status_code >= 400:
            raise _error_for(response, self._redactor)
        try:
            return response.json()
        except ValueError as exc:
            raise UnavailableError(
                "response is not JSON", system=SYSTEM, status_code=response.status_code
            ) from exc


def _error_for(response: requests.Response, redactor: Redactor) -> Exception:
    """The triage error for a failed response: a scrubbed, cut excerpt of its body."""
    status = response.status_code
    request_id = response.headers.get("apim-request-id") or response.headers.get("x-request-id")
    message = redactor.excerpt(response.text, BODY_EXCERPT_CHARS) or response.reason or "error"
    request_id = redactor.excerpt(request_id, 100) if request_id else None
    if status == 429:
        return ThrottledError(
            message, system=SYSTEM, request_id=request_id, retry_after_s=_retry_after_s(response)
        )
    if status in (401, 403):
        return AuthError(message, system=SYSTEM, status_code=status, request_id=request_id)
    if status >= 500:
        return UnavailableError(message, system=SYSTEM, status_code=status, request_id=request_id)
    return RejectedError(message, system=SYSTEM, status_code=status, request_id=request_id)


def _retry_after_s(response: requests.Response) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds form only)."""
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        try:
            seconds = float(value) / scale if value is not None else None
        except ValueError:
            seconds = None
        if seconds is not None and seconds >= 0:
            return seconds
    return None


def _first_choice(data: Any) -> str:
    """The cleaned text of the first choice; "" when filtered, empty or malformed."""
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise UnavailableError("response has no choices[0].message", system=SYSTEM) from exc
    if choice.get("finish_reason") == "content_filter" or not isinstance(content, str):
        log.warning(
            "azure-openai returned no usable content (finish_reason %s)",
            choice.get("finish_reason"),
        )
        return ""
    # Markup and control chars go here already (the write boundary sanitises again), so the
    # model's output is never more trusted than ticket text; "" when nothing is left.
    # sanitize_note first, so a tag spread over lines goes as a whole; then the first line.
    lines = sanitize_note(content).split("\n")
    line = next((part for part in lines if part), "")
    line = _LABEL.sub("", line).strip(" \"'`“”„«»").rstrip(".")
    return sanitize_value(clip(line), max_chars=SUMMARY_MAX_CHARS)
