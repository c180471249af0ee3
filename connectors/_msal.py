"""Entra ID tokens for Dataverse through msal: secret, certificate, federated or managed identity.

One ``MsalTokenProvider`` holds ONE long-lived msal client (``ConfidentialClientApplication``,
or ``ManagedIdentityClient``) and its in-memory token cache, so a warm Function instance asks the
identity provider once per token lifetime: ``acquire_token_for_client`` is cache-first since
msal 1.23 and refreshes 5 minutes before expiry. The client is built on first use, because
msal's constructor already talks to the authority (OIDC discovery).

``auth=federated`` (workload identity federation with a managed identity as the app
registration's federated credential): the confidential client's ``client_assertion`` is a
callable that msal invokes only when it sends a token request; it returns the user-assigned
identity's token for ``api://AzureADTokenExchange``, from a second msal ``ManagedIdentityClient``
with its own cache (so a Dataverse 401 does not drop it). Neither side holds a secret.

``certificate_pem`` is the certificate itself (a Key Vault reference in Azure: Flex Consumption
has no certificate store): PEM with the private key, or the base64 PFX that a Key Vault
certificate's secret holds. Without a thumbprint setting the thumbprint comes from the
certificate in it (SHA-256, with x5c), so a renewed certificate needs no setting change.

``invalidate()`` (a 401 from Dataverse) removes the access tokens from that cache, since
``acquire_token_for_client`` refuses ``force_refresh``; the next ``token()`` goes to the IdP.

Errors: an msal error dict → ``AuthError`` naming ``error: error_description`` (``UnavailableError``
for ``temporarily_unavailable``/``server_error``); a transport failure → ``UnavailableError``;
anything else msal raises (a failed OIDC discovery, a bad key) → ``AuthError``. Every message is
scrubbed by the ``Redactor`` (which holds the client secret and each issued token) and cut to
200 characters; msal's own exception is not chained, as its text may echo a response.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal  # type: ignore[import-untyped]
import requests
from pydantic import SecretStr

from domain.errors import BODY_EXCERPT_CHARS, AuthError, UnavailableError
from domain.redact import Redactor
from domain.settings import DataverseSettings

__all__ = ["MsalTokenProvider", "TimeoutSession", "pem_credential"]

log = logging.getLogger(__name__)

SYSTEM = "dataverse"
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


class TimeoutSession:
    """The ``http_client`` msal calls (``get``/``post``/``close``), with our timeout on each."""

    def __init__(self, session: requests.Session, timeout: tuple[float, float]) -> None:
        self.session = session
        self.timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """GET with the default timeout."""
        kwargs.setdefault("timeout", self.timeout)
        return self.session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        """POST with the default timeout."""
        kwargs.setdefault("timeout", self.timeout)
        return self.session.post(url, **kwargs)

    def close(self) -> None:
        """Close the underlying session."""
        self.session.close()


class MsalTokenProvider:
    """A ``TokenProvider`` for one Dataverse environment; thread-safe, cache-first."""

    def __init__(
        self,
        settings: DataverseSettings,
        *,
        timeout: tuple[float, float] = (3.05, 20.0),
        http_client: requests.Session | None = None,
        redactor: Redactor | None = None,
        instance_discovery: bool = False,
        validate_authority: bool = True,
        read_file: Callable[[str], str] = lambda path: Path(path).read_text("utf-8"),
    ) -> None:
        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.add(settings.client_secret)
        self.redactor.add(settings.certificate_password)
        self.redactor.add(settings.certificate_pem)
        self._settings = settings
        self._scope = settings.scope
        self._http = TimeoutSession(
            http_client if http_client is not None else requests.Session(), timeout
        )
        self._instance_discovery = instance_discovery
        self._validate_authority = validate_authority
        self._read_file = read_file
        self._lock = threading.Lock()
        self._cache = msal.TokenCache()
        self._client: msal.ConfidentialClientApplication | msal.ManagedIdentityClient | None = None
        self._assertion_cache = msal.TokenCache()
        self._assertion_client: msal.ManagedIdentityClient | None = None
        self._issued: str | None = None

    def token(self) -> str:
        """An access token for ``<org_url>/.default``, from msal's cache when still valid."""
        with self._lock:
            result = self._acquire()
            token = result.get("access_token") if isinstance(result, dict) else None
            if not isinstance(token, str) or not token:
                raise self._error(result)
            if result.get("token_source") == "identity_provider":
                log.info("dataverse: fetched an access token from the identity provider")
            self._remember(token)
            return token

    def invalidate(self) -> None:
        """Drop the cached access tokens so the next ``token()`` asks the identity provider."""
        with self._lock:
            kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
            for entry in list(self._cache.search(kind)):
                self._cache.remove_at(entry)

    def _acquire(self) -> Any:
        try:
            client = self._client if self._client is not None else self._build()
            self._client = client
            if isinstance(client, msal.ManagedIdentityClient):
                return client.acquire_token_for_client(resource=self._settings.base_url)
            return client.acquire_token_for_client([self._scope])
        except (requests.Timeout, requests.ConnectionError, requests.HTTPError) as exc:
            raise UnavailableError(
                f"token request failed: {type(exc).__name__}", system=SYSTEM
            ) from None
        except (AuthError, UnavailableError):
            raise
        except Exception as exc:  # msal: ValueError (OIDC discovery), MsalError, bad key...
            text = self.redactor.excerpt(str(exc), BODY_EXCERPT_CHARS)
            raise AuthError(
                f"token acquisition failed: {type(exc).__name__}: {text}", system=SYSTEM
            ) from None

    def _build(self) -> msal.ConfidentialClientApplication | msal.ManagedIdentityClient:
        settings = self._settings
        if settings.auth == "managed_identity":
            identity: msal.ManagedIdentity
            if settings.managed_identity_client_id:
                identity = msal.UserAssignedManagedIdentity(
                    client_id=settings.managed_identity_client_id
                )
            else:
                identity = msal.SystemAssignedManagedIdentity()
            return msal.ManagedIdentityClient(
                identity, http_client=self._http, token_cache=self._cache
            )
        credential: str | dict[str, Any]
        if settings.auth == "federated":
            credential = {"client_assertion": self._federated_assertion}
        else:
            credential = self._credential()
        return msal.ConfidentialClientApplication(
            settings.client_id,
            client_credential=credential,
            authority=f"{settings.authority_url}/{settings.tenant_id}",
            validate_authority=self._validate_authority,
            instance_discovery=self._instance_discovery,
            http_client=self._http,
            token_cache=self._cache,
        )

    def _federated_assertion(self) -> str:
        """The managed identity's token for the token exchange audience (msal caches it)."""
        settings = self._settings
        if self._assertion_client is None:
            self._assertion_client = msal.ManagedIdentityClient(
                msal.UserAssignedManagedIdentity(client_id=settings.managed_identity_client_id),
                http_client=self._http,
                token_cache=self._assertion_cache,
            )
        result = self._assertion_client.acquire_token_for_client(
            resource=settings.federated_audience
        )
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            error = self._error(result)
            message = error.args[0] if error.args else "refused"
            raise type(error)(f"managed identity (federated credential): {message}", system=SYSTEM)
        self.redactor.add(token)
        return token

    def _credential(self) -> str | dict[str, str]:
        settings = self._settings
        if settings.auth == "secret":
            if settings.client_secret is None:  # DataverseSettings checks it; narrows the type
                raise AuthError("auth=secret without client_secret", system=SYSTEM)
            return settings.client_secret.get_secret_value()
        if settings.certificate_pem is not None:
            return pem_credential(
                settings.certificate_pem.get_secret_value(),
                thumbprint=settings.certificate_thumbprint,
                password=settings.certificate_password,
            )
        if settings.certificate_path is None or settings.certificate_thumbprint is None:
            raise AuthError("auth=certificate without certificate", system=SYSTEM)
        try:
            pem = self._read_file(settings.certificate_path)
        except OSError as exc:
            raise AuthError(
                f"certificate file unreadable: {type(exc).__name__}", system=SYSTEM
            ) from None
        credential = {
            "private_key": pem,
            "thumbprint": settings.certificate_thumbprint.replace(":", ""),
        }
        if settings.certificate_password is not None:
            credential["passphrase"] = settings.certificate_password.get_secret_value()
        return credential

    def _error(self, result: Any) -> AuthError | UnavailableError:
        body = result if isinstance(result, dict) else {}
        error = str(body.get("error") or "no access_token in the token response")
        text = error
        if body.get("error_description"):
            text = f"{error}: {body['error_description']}"
        message = f"token request refused: {self.redactor.excerpt(text, BODY_EXCERPT_CHARS)}"
        if error in TRANSIENT_ERRORS:
            return UnavailableError(message, system=SYSTEM)
        return AuthError(message, system=SYSTEM)

    def _remember(self, token: str) -> None:
        # An endpoint echoing the token without "Bearer " in front must not leak it either.
        if self._issued != token:
            if self._issued is not None:
                self.redactor.discard(self._issued)
            self.redactor.add(token)
            self._issued = token


_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def pem_credential(
    value: str, *, thumbprint: str | None = None, password: SecretStr | None = None
) -> dict[str, str]:
    """msal's certificate credential from a PEM bundle or a base64 PFX (Key Vault's forms).

    The private key must be in it; the certificate too unless ``thumbprint`` (SHA-1) is given.
    Errors are ``AuthError`` naming the problem, never the value.
    """
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        text = _pfx_to_pem(text, password)
        password = None  # the key is re-serialised unencrypted
    if "PRIVATE KEY-----" not in text:
        raise AuthError("certificate_pem holds no private key", system=SYSTEM)
    credential = {"private_key": text}
    certificates = _CERTIFICATE.findall(text)
    if thumbprint:
        credential["thumbprint"] = thumbprint.replace(":", "")
    elif certificates:
        credential["public_certificate"] = "\n".join(certificates)
    else:
        raise AuthError(
            "certificate_pem holds no certificate: include it or set certificate_thumbprint",
            system=SYSTEM,
        )
    if password is not None and password.get_secret_value():
        credential["passphrase"] = password.get_secret_value()
    return credential


def _pfx_to_pem(text: str, password: SecretStr | None) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        data = base64.b64decode("".join(text.split()), validate=True)
        secret = password.get_secret_value().encode() if password is not None else None
        key, certificate, _ = pkcs12.load_key_and_certificates(data, secret or None)
    except (ValueError, TypeError, binascii.Error):
        raise AuthError(
            "certificate_pem is neither PEM nor a readable base64 PFX", system=SYSTEM
        ) from None
    if key is None or certificate is None:
        raise AuthError("the PFX in certificate_pem lacks its key or certificate", system=SYSTEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem_key + certificate.public_bytes(serialization.Encoding.PEM).decode()
