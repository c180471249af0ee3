"""Platform settings: the HTTP client, ServiceNow and Dataverse (with their credential checks).

Part of ``domain.settings`` (which re-exports every public name here; import from there). Every
model hides its input in validation errors (``_HIDDEN``): it may hold a secret.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

__all__ = ["DataverseSettings", "HttpSettings", "ServiceNowSettings"]

# Every model: a validation error must not print its input (it may hold a secret).
_HIDDEN = ConfigDict(hide_input_in_errors=True)


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
