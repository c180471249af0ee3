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

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from domain.errors import ConfigError
from domain.redact import Redactor
from domain.settings_features import (
    AzureOpenAISettings,
    BackfillSettings,
    LlmClassifierSettings,
    ncrontab_problem,
)
from domain.settings_platforms import (
    _HIDDEN,
    DataverseSettings,
    HttpSettings,
    ServiceNowSettings,
    _check_resolved,
)

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


# Environment variables whose values are scrubbed from settings errors (defence in depth).
_SECRET_ENV = re.compile(r"^ENRICH_.*(SECRET|PASSWORD|KEY|TOKEN|PEM)", re.IGNORECASE)


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
