"""Settings of the optional features: the LLM classifier (Azure OpenAI / OpenAI) and the backfill.

Part of ``domain.settings`` (which re-exports every public name here; import from there), with
``ncrontab_problem``, the shape check of the backfill's timer schedule.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator

from domain.settings_platforms import _HIDDEN, _check_resolved

__all__ = ["AzureOpenAISettings", "BackfillSettings", "LlmClassifierSettings", "ncrontab_problem"]


class AzureOpenAISettings(BaseModel):
    """Optional abstractive summaries; off unless an endpoint is set."""

    model_config = _HIDDEN

    endpoint: HttpUrl
    deployment: str = Field(min_length=1)
    api_key: SecretStr
    api_version: str = "2024-10-21"


class LlmClassifierSettings(BaseModel):
    """The optional LLM classifier (``ENRICH_LLM__*``, docs/llm.md); off unless an endpoint is set.

    ``flavour`` ``azure``: ``{endpoint}/openai/deployments/{deployment}/chat/completions`` with
    ``api-version`` and an ``api-key`` header; ``openai``: any OpenAI-compatible endpoint,
    ``{endpoint}/chat/completions`` (endpoint ending in ``/v1``) with ``model: deployment`` and
    a Bearer key. ``api_key`` is a Key Vault reference in Azure. ``fields`` are classified in
    one request per ticket; the ticket text is sanitised and cut to ``max_input_chars``.
    ``confidence_without_logprobs``: None (the default) abstains when the endpoint returns no
    token log-probabilities; a number is used as every answer's confidence instead.
    """

    model_config = _HIDDEN

    endpoint: HttpUrl
    flavour: Literal["azure", "openai"] = "azure"
    deployment: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$")
    api_key: SecretStr
    # Structured outputs (json_schema) need 2024-08-01-preview or later; this is the GA one.
    api_version: str = Field("2024-10-21", pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")
    fields: list[str] = Field(
        default_factory=lambda: ["category", "subcategory", "impact", "urgency"], min_length=1
    )
    max_input_chars: int = Field(4000, ge=200, le=50_000)
    timeout_s: float = Field(20.0, gt=0, le=120)
    top_logprobs: int = Field(5, ge=0, le=20)
    cache_size: int = Field(2048, ge=0, le=1_000_000)
    confidence_without_logprobs: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> LlmClassifierSettings:
        parts = urlsplit(str(self.endpoint))
        if parts.scheme != "https" or parts.query:
            raise ValueError("endpoint must be an https URL without a query")
        if not self.api_key.get_secret_value():
            raise ValueError("api_key is empty")
        _check_resolved("api_key", self.api_key)
        for name in self.fields:
            if not re.match(r"^[a-z][a-z0-9_]{0,63}$", name):
                raise ValueError("fields: each must be a field name (lower case, digits, _)")
        return self


# One NCRONTAB field: ``*``, a value, a range or a list of them, each with an optional step;
# values are numbers or month/day names (Jan, Mon).
_CRON_ITEM = r"(?:\*|[0-9A-Za-z]{1,9}(?:-[0-9A-Za-z]{1,9})?)(?:/[0-9]{1,4})?"
_CRON_FIELD = re.compile(rf"^{_CRON_ITEM}(?:,{_CRON_ITEM})*$")
_CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day-of-week")


def ncrontab_problem(schedule: str) -> str | None:
    """What is wrong with the shape of an NCRONTAB expression (six fields), or None.

    Only the shape is checked (six fields of ``*``, values, ranges, lists and steps); the
    Functions host checks the ranges. Messages name the field, never the value.
    """
    parts = schedule.split()
    if len(parts) != len(_CRON_FIELDS):
        return (
            f"must have 6 fields ({' '.join(_CRON_FIELDS)}), e.g. '0 0 2 * * *'; "
            f"it has {min(len(parts), 99)}"
        )
    for name, part in zip(_CRON_FIELDS, parts, strict=True):
        if not _CRON_FIELD.fullmatch(part):
            return f"the {name} field is not *, a value, a range, a list or a step"
    return None


class BackfillSettings(BaseModel):
    """Backfills over old tickets (``ENRICH_BACKFILL__*``): schedule, pacing and sizes.

    ``schedule`` is an NCRONTAB expression (six fields, UTC unless WEBSITE_TIME_ZONE says
    otherwise) for a scheduled run over the last ``schedule_lookback_hours`` by
    ``schedule_by``; empty: no scheduled run. ``share`` is the part of each platform's request
    quota a backfill may use, so live webhooks keep the rest: ServiceNow's rate-limit rule for
    the integration user (``servicenow_requests`` per ``servicenow_period_s``), Dataverse's
    service protection limits (``dataverse_requests`` and ``dataverse_execution_s`` per
    ``dataverse_period_s``).
    """

    model_config = _HIDDEN

    schedule: str = ""
    schedule_by: Literal["created", "updated"] = "updated"
    schedule_lookback_hours: int = Field(24, ge=1, le=24 * 366)
    share: float = Field(0.5, gt=0, le=1)
    servicenow_requests: int = Field(5000, ge=1)
    servicenow_period_s: float = Field(3600.0, gt=0)
    dataverse_requests: int = Field(6000, ge=1)
    dataverse_period_s: float = Field(300.0, gt=0)
    dataverse_execution_s: float = Field(1200.0, gt=0)
    page_size: int = Field(100, ge=1, le=5000)
    window_tickets: int = Field(500, ge=1, le=100_000)
    lease_s: float = Field(600.0, ge=30, le=24 * 3600)
    time_budget_s: float = Field(240.0, gt=0, le=3600)
    max_requeues: int = Field(50, ge=0, le=10_000)
    #: The scheduled run's ServiceNow encoded query, ANDed into each window's.
    query: str | None = Field(None, max_length=2000)
    #: The scheduled run's Dataverse ``$filter``, ANDed into each window's.
    filter: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _check(self) -> BackfillSettings:
        schedule = self.schedule.strip()
        if schedule:
            problem = ncrontab_problem(schedule)
            if problem is not None:
                raise ValueError(f"schedule {problem}")
        return self
