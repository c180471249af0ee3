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
    "HttpSettings",
    "QueueSettings",
    "ServiceNowSettings",
    "Settings",
    "WebhookSettings",
    "load_settings",
]

# Every model: a validation error must not print its input (it may hold a secret).
_HIDDEN = ConfigDict(hide_input_in_errors=True)
# Environment variables whose values are scrubbed from settings errors (defence in depth).
_SECRET_ENV = re.compile(r"^ENRICH_.*(SECRET|PASSWORD|KEY|TOKEN)", re.IGNORECASE)


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


class WebhookSettings(BaseModel):
    """Inbound webhook authentication and limits."""

    model_config = _HIDDEN

    secret: SecretStr | None = None
    tolerance_s: int = Field(300, ge=1, le=3600)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    allowed_tables: list[str] = Field(default_factory=lambda: ["incident"])


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
    http: HttpSettings = HttpSettings()
    webhook: WebhookSettings = WebhookSettings()
    queue: QueueSettings = QueueSettings()
    azure_openai: AzureOpenAISettings | None = None
    mapping_path: str | None = None
    model_path: str | None = None
    dry_run: bool = False


def load_settings() -> Settings:
    """Read settings from the environment, raising ``ConfigError`` naming every bad key.

    The message names each setting and its problem, never a value. The ``ConfigError`` is
    raised outside the ``except`` block so neither ``__cause__`` nor ``__context__`` links it to
    the pydantic error, whose text may hold input values.
    """
    try:
        return Settings()
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
