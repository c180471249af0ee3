"""Settings from the environment (app settings in Azure; Key Vault references for secrets).

Names look like ``ENRICH_SERVICENOW__INSTANCE_URL`` and ``ENRICH_HTTP__READ_TIMEOUT_S``. Bad
values fail with ``ConfigError``; nothing quietly falls back to a default.

Errors never show input values: pydantic's ``input_value=`` would print a password or the tail
of a secret (a model validator's input is the whole ServiceNow block). Every model hides input in
its errors, and ``load_settings`` names the setting and the problem only, raising outside the
``except`` so no pydantic error is chained to the ``ConfigError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from domain.errors import ConfigError
from domain.redact import Redactor

__all__ = [
    "AzureOpenAISettings",
    "BackfillSettings",
    "DataverseSettings",
    "DataverseWebhookSettings",
    "HttpSettings",
    "LlmClassifierSettings",
    "QueueSettings",
    "ServiceNowSettings",
    "Settings",
    "WebhookSettings",
    "load_settings",
    "ncrontab_problem",
]

# Every model: a validation error must not print its input (it may hold a secret).
_HIDDEN = ConfigDict(hide_input_in_errors=True)
# Environment variables whose values are scrubbed from settings errors (defence in depth).
_SECRET_ENV = re.compile(r"^ENRICH_.*(SECRET|PASSWORD|KEY|TOKEN|PEM)", re.IGNORECASE)


class HttpSettings(BaseModel):
    """Timeouts and the retry budget of every outbound platform call."""

    model_config = _HIDDEN

    connect_timeout_s: float = Field(3.05, gt=0)
    read_timeout_s: float = Field(20.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=10)
    # Total budget for one logical call including retries; well under the 230 s HTTP ceiling
    # and under functionTimeout.
    max_elapsed_s: float = Field(60.0, gt=0, lt=200)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(20.0, gt=0)
    # A 429 whose wait hint exceeds this is not slept on: ThrottledError surfaces at once so the
    # queue worker can re-enqueue the job with a visibility delay.
    max_retry_wait_s: float = Field(30.0, gt=0)


class ServiceNowSettings(BaseModel):
    """How to reach and authenticate against one ServiceNow instance."""

    model_config = _HIDDEN

    instance_url: HttpUrl
    auth: Literal["basic", "oauth"] = "oauth"
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    page_size: int = Field(100, ge=1, le=10000)

    @model_validator(mode="after")
    def _check_credentials(self) -> ServiceNowSettings:
        if self.auth == "basic" and not (self.username and self.password):
            raise ValueError("auth=basic needs username and password")
        if self.auth == "oauth" and not (self.client_id and self.client_secret):
            raise ValueError("auth=oauth needs client_id and client_secret")
        return self

    @property
    def base_url(self) -> str:
        """The instance URL without a trailing slash."""
        return str(self.instance_url).rstrip("/")


# Values MSCRM.BypassBusinessLogicExecution accepts (bypass-custom-business-logic).
_BYPASS_VALUES = frozenset({"CustomSync", "CustomAsync", "CustomSync,CustomAsync"})
# A tenant is a GUID or a verified domain (contoso.onmicrosoft.com).
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")


def _check_resolved(name: str, value: SecretStr | None) -> None:
    """Refuse a Key Vault reference App Service could not resolve: it hands the app the
    reference text itself, which is no secret (anyone could sign with it)."""
    if value is not None and value.get_secret_value().lstrip().startswith("@Microsoft.KeyVault("):
        raise ValueError(
            f"{name} is an unresolved Key Vault reference (does the secret exist, and may the "
            "app's identity read it?)"
        )


class DataverseSettings(BaseModel):
    """How to reach and authenticate against one Dataverse (Dynamics 365) environment.

    ``auth`` picks the credential: ``secret`` (tenant_id, client_id, client_secret),
    ``certificate`` (tenant_id, client_id and either certificate_pem — the PEM or base64 PFX
    itself, a Key Vault reference in Azure, thumbprint optional: taken from the certificate in
    it — or certificate_path to a PEM private key with its SHA-1 certificate_thumbprint),
    ``federated`` (tenant_id and client_id of the app registration, whose federated credential
    trusts the user-assigned managed identity managed_identity_client_id: that identity's token
    for ``federated_audience`` is the client assertion, no secret anywhere) or
    ``managed_identity`` (system-assigned, or the user-assigned one named by
    managed_identity_client_id, itself the application user). ``bypass_business_logic`` is sent as
    ``MSCRM.BypassBusinessLogicExecution`` on writes; it needs the application user to hold the
    ``prvBypassCustomBusinessLogic`` privilege.
    """

    model_config = _HIDDEN

    org_url: HttpUrl
    auth: Literal["secret", "certificate", "federated", "managed_identity"] = "secret"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_path: str | None = None
    certificate_thumbprint: str | None = None
    certificate_password: SecretStr | None = None
    certificate_pem: SecretStr | None = None
    managed_identity_client_id: str | None = None
    federated_audience: str = Field("api://AzureADTokenExchange", pattern=r"^api://[\w.-]{1,64}$")
    authority_host: HttpUrl = HttpUrl("https://login.microsoftonline.com")
    page_size: int = Field(500, ge=1, le=5000)
    bypass_business_logic: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DataverseSettings:
        for name, url in (("org_url", self.org_url), ("authority_host", self.authority_host)):
            parts = urlsplit(str(url))
            if parts.scheme != "https" or parts.path.strip("/") or parts.query:
                raise ValueError(f"{name} must be an https origin without a path")
        if self.auth != "managed_identity":
            if not (self.tenant_id and _TENANT.fullmatch(self.tenant_id)):
                raise ValueError(f"auth={self.auth} needs a tenant_id (GUID or domain)")
            if not self.client_id:
                raise ValueError(f"auth={self.auth} needs client_id")
        if self.auth == "secret" and not self.client_secret:
            raise ValueError("auth=secret needs client_secret")
        if self.auth == "certificate":
            self._check_certificate()
        if self.auth == "federated" and not self.managed_identity_client_id:
            raise ValueError(
                "auth=federated needs managed_identity_client_id (the user-assigned identity "
                "the app registration's federated credential trusts)"
            )
        for name in ("client_secret", "certificate_pem", "certificate_password"):
            _check_resolved(name, getattr(self, name))
        if (
            self.bypass_business_logic is not None
            and self.bypass_business_logic not in _BYPASS_VALUES
        ):
            raise ValueError(f"bypass_business_logic must be one of {sorted(_BYPASS_VALUES)}")
        return self

    def _check_certificate(self) -> None:
        if bool(self.certificate_path) == bool(self.certificate_pem):
            raise ValueError("auth=certificate needs certificate_pem or certificate_path (one)")
        thumbprint = (self.certificate_thumbprint or "").replace(":", "")
        if (self.certificate_path or thumbprint) and not _THUMBPRINT.fullmatch(thumbprint):
            raise ValueError("auth=certificate needs a 40-hex-digit certificate_thumbprint")

    @property
    def base_url(self) -> str:
        """The organisation URL without a trailing slash (``https://<org>.crm.dynamics.com``)."""
        return str(self.org_url).rstrip("/")

    @property
    def authority_url(self) -> str:
        """The authority host without a trailing slash."""
        return str(self.authority_host).rstrip("/")

    @property
    def scope(self) -> str:
        """The client-credentials scope of the environment: ``<org_url>/.default``."""
        return f"{self.base_url}/.default"


class WebhookSettings(BaseModel):
    """Inbound webhook authentication and limits.

    ``secret`` is the HMAC secret the business rule signs with. During a rotation
    ``previous_secret`` (``ENRICH_WEBHOOK__PREVIOUS_SECRET``) holds the old one, so requests
    signed with either verify until the rule has switched; then it is removed (docs/secrets.md).
    """

    model_config = _HIDDEN

    secret: SecretStr | None = None
    previous_secret: SecretStr | None = None
    tolerance_s: int = Field(300, ge=1, le=3600)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    allowed_tables: list[str] = Field(default_factory=lambda: ["incident"])

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        if self.previous_secret is not None and self.secret is None:
            raise ValueError("previous_secret needs secret (the new secret) as well")
        _check_resolved("secret", self.secret)
        _check_resolved("previous_secret", self.previous_secret)
        return self

    def accepted_secrets(self) -> list[bytes]:
        """The secrets a signature may verify with: the current one first, then the previous."""
        return [
            s.get_secret_value().encode()
            for s in (self.secret, self.previous_secret)
            if s is not None and s.get_secret_value()
        ]


class DataverseWebhookSettings(BaseModel):
    """How a Dataverse webhook call authenticates (triage/dataverse_inbound.py).

    ``keys`` holds the current key and, during a rotation, the previous one
    (``ENRICH_DATAVERSE_WEBHOOK__KEYS='["new...", "old..."]'``); ``source`` says where Dataverse
    sends it: a ``header`` named ``header`` (serviceendpoint authtype 5, recommended) or the
    ``code`` query parameter (authtype 4, WebhookKey).
    """

    model_config = _HIDDEN

    keys: list[SecretStr] = Field(default_factory=list)
    source: Literal["header", "code"] = "header"
    header: str = Field("x-triage-key", pattern=r"^[A-Za-z0-9-]{1,64}$")
    # Dataverse trims a context only above 256 KB (x-ms-dynamics-msg-size-exceeded): allow that
    # much plus headroom, or a legitimate large Create is refused.
    max_body_bytes: int = Field(512 * 1024, ge=300 * 1024, le=4 * 1024 * 1024)


class QueueSettings(BaseModel):
    """The Storage queue between the webhook and the worker."""

    model_config = _HIDDEN

    connection_setting: str = "AzureWebJobsStorage"
    # A job whose platform call ends throttled is re-enqueued with a visibility delay (the
    # platform's Retry-After, else this) instead of burning one of the host's dequeue attempts.
    throttled_delay_s: float = Field(60.0, gt=0, le=7 * 24 * 3600)
    max_requeues: int = Field(24, ge=0)


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


class Settings(BaseSettings):
    """All settings; construct directly in tests, from the environment in production."""

    model_config = SettingsConfigDict(
        env_prefix="ENRICH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        hide_input_in_errors=True,
    )

    servicenow: ServiceNowSettings | None = None
    dataverse: DataverseSettings | None = None
    http: HttpSettings = HttpSettings()
    webhook: WebhookSettings = WebhookSettings()
    dataverse_webhook: DataverseWebhookSettings = DataverseWebhookSettings()
    queue: QueueSettings = QueueSettings()
    backfill: BackfillSettings = BackfillSettings()
    azure_openai: AzureOpenAISettings | None = None
    #: The optional LLM classifier (docs/llm.md); None: off.
    llm: LlmClassifierSettings | None = None
    mapping_path: str | None = None
    #: The Dynamics admin mapping; the embedded Dynamics default when unset.
    dataverse_mapping_path: str | None = None
    model_path: str | None = None
    #: A model trained on Dynamics cases (`train --from dynamics`), e.g. for subjects or casetypecode.
    dataverse_model_path: str | None = None
    dry_run: bool = False
    #: Write nothing to tickets; record every suggestion (Table Storage ``enrichshadow``).
    shadow_mode: bool = False
    #: After go-live too: record every write's decisions there, so the improvement report
    #: keeps running and drift shows.
    decision_log: bool = True


def load_settings(*, backfill: bool = True) -> Settings:
    """Read settings from the environment, raising ``ConfigError`` naming every bad key.

    The message names each setting and its problem, never a value. The ``ConfigError`` is
    raised outside the ``except`` block so neither ``__cause__`` nor ``__context__`` links it to
    the pydantic error, whose text may hold input values.

    ``backfill=False`` leaves the ``ENRICH_BACKFILL__*`` settings unread (defaults): live
    enrichment uses none of them, so a broken backfill setting never stops the webhooks.
    """
    try:
        return Settings(backfill=BackfillSettings()) if not backfill else Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_name(e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
        )
    except SettingsError as exc:  # a nested block (ENRICH_WEBHOOK='{...}') is not valid JSON
        problems = _parse_problem(str(exc))
    raise ConfigError(f"invalid settings: {_env_redactor(os.environ).scrub(problems)}")


def _setting_name(loc: tuple[int | str, ...]) -> str:
    return "ENRICH_" + "__".join(str(part) for part in loc).upper()


def _parse_problem(message: str) -> str:
    match = re.search(r'field "([^"]+)"', message)
    name = f"ENRICH_{match[1].upper()}" if match else "a nested setting"
    return f"{name}: not valid JSON"


def _env_redactor(environ: Mapping[str, str]) -> Redactor:
    """A redactor for the secret-looking ENRICH_* values (error messages never hold them)."""
    return Redactor(value for name, value in environ.items() if _SECRET_ENV.match(name))
