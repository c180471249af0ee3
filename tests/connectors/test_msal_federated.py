"""Dataverse tokens without a stored secret: managed identity as federated credential, and a
certificate handed over as PEM or base64 PFX (a Key Vault reference; Flex has no cert store).

The identity endpoint (the Functions host's IDENTITY_ENDPOINT) and Entra's token endpoint are
served by ``responses``; nothing leaves the process.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from connectors._msal import MsalTokenProvider, pem_credential
from domain.errors import AuthError
from domain.settings import DataverseSettings

ORG = "https://acme.crm.dynamics.com"
TENANT = "tenant-1"
APP = "11111111-2222-3333-4444-555555555555"
MI = "99999999-8888-7777-6666-555555555555"
AUTHORITY = f"https://login.microsoftonline.com/{TENANT}"
DISCOVERY = f"{AUTHORITY}/v2.0/.well-known/openid-configuration"
TOKEN_URL = f"{AUTHORITY}/oauth2/v2.0/token"
MSI_URL = "http://127.0.0.1:8081/msi/token"


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(
            DISCOVERY,
            json={
                "token_endpoint": TOKEN_URL,
                "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
                "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
            },
        )
        yield rsps


@pytest.fixture
def functions_identity(monkeypatch):
    """The managed identity endpoint the Functions host exposes."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", MSI_URL)
    monkeypatch.setenv("IDENTITY_HEADER", "hdr-1")
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)


def form(call: responses.Call) -> dict[str, list[str]]:
    body = call.request.body
    return parse_qs(body.decode() if isinstance(body, bytes) else body or "")


def federated(**overrides: object) -> DataverseSettings:
    values: dict[str, object] = {
        "org_url": ORG,
        "auth": "federated",
        "tenant_id": TENANT,
        "client_id": APP,
        "managed_identity_client_id": MI,
    }
    return DataverseSettings.model_validate(values | overrides)


def mi_token(rsps: responses.RequestsMock, token: str, expires_on: int = 4_102_444_800) -> None:
    body = {"access_token": token, "expires_on": str(expires_on), "token_type": "Bearer"}
    rsps.get(MSI_URL, body=json.dumps(body))


def entra_token(rsps: responses.RequestsMock, token: str) -> None:
    rsps.post(TOKEN_URL, json={"access_token": token, "token_type": "Bearer", "expires_in": 3599})


# ---- auth=federated ---------------------------------------------------------------------


def test_the_identity_token_for_the_exchange_audience_is_the_client_assertion(
    mock, functions_identity
):
    mi_token(mock, "mi-assertion-1")
    entra_token(mock, "dv-token-1")
    provider = MsalTokenProvider(federated())
    assert provider.token() == "dv-token-1"
    msi, post = (c for c in mock.calls if c.request.url.startswith(("http://127", TOKEN_URL)))
    params = parse_qs(msi.request.url.split("?", 1)[1])
    assert params["resource"] == ["api://AzureADTokenExchange"]
    assert params["client_id"] == [MI]
    assert msi.request.headers["X-IDENTITY-HEADER"] == "hdr-1"
    sent = form(post)
    assert sent["client_id"] == [APP]
    assert sent["grant_type"] == ["client_credentials"]
    assert f"{ORG}/.default" in sent["scope"][0].split()
    assert sent["client_assertion"] == ["mi-assertion-1"]
    assert sent["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert "client_secret" not in sent


def test_tokens_are_cached_and_a_401_refresh_reuses_the_cached_assertion(mock, functions_identity):
    mi_token(mock, "mi-assertion-1")
    entra_token(mock, "dv-token-1")
    entra_token(mock, "dv-token-2")
    provider = MsalTokenProvider(federated())
    assert provider.token() == "dv-token-1"
    assert provider.token() == "dv-token-1"  # cache-first: no request
    provider.invalidate()  # Dataverse answered 401
    assert provider.token() == "dv-token-2"
    msi_calls = [c for c in mock.calls if c.request.url.startswith(MSI_URL)]
    posts = [c for c in mock.calls if c.request.method == "POST"]
    assert len(msi_calls) == 1  # the identity's token is still valid: not asked again
    assert [form(p)["client_assertion"] for p in posts] == [["mi-assertion-1"]] * 2


def test_an_expiring_identity_token_is_fetched_again_for_the_next_exchange(
    mock, functions_identity
):
    mi_token(mock, "mi-assertion-1", expires_on=1)  # already expired
    mi_token(mock, "mi-assertion-2")
    entra_token(mock, "dv-token-1")
    entra_token(mock, "dv-token-2")
    provider = MsalTokenProvider(federated())
    assert provider.token() == "dv-token-1"
    provider.invalidate()
    assert provider.token() == "dv-token-2"
    posts = [c for c in mock.calls if c.request.method == "POST"]
    assert [form(p)["client_assertion"] for p in posts] == [["mi-assertion-1"], ["mi-assertion-2"]]


def test_a_refused_identity_token_is_an_auth_error_without_token_text(mock, functions_identity):
    mock.get(MSI_URL, status=400, json={"error": "invalid_request", "error_description": "no MI"})
    provider = MsalTokenProvider(federated())
    with pytest.raises(AuthError, match="federated credential") as info:
        provider.token()
    assert "token request refused" in str(info.value)
    assert str(info.value).count("[dataverse]") == 1
    mock.assert_all_requests_are_fired = False  # Entra's token endpoint is never reached


def test_the_exchange_audience_follows_the_setting_for_other_clouds(mock, functions_identity):
    mi_token(mock, "mi-assertion-1")
    entra_token(mock, "dv-token-1")
    MsalTokenProvider(federated(federated_audience="api://AzureADTokenExchangeUSGov")).token()
    msi = next(c for c in mock.calls if c.request.url.startswith(MSI_URL))
    params = parse_qs(msi.request.url.split("?", 1)[1])
    assert params["resource"] == ["api://AzureADTokenExchangeUSGov"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"managed_identity_client_id": None}, "needs managed_identity_client_id"),
        ({"tenant_id": None}, "needs a tenant_id"),
        ({"client_id": None}, "needs client_id"),
        ({"federated_audience": "https://evil.example/aud"}, "federated_audience"),
    ],
)
def test_federated_settings_name_what_is_missing(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        federated(**overrides)


# ---- certificate from a setting (PEM or base64 PFX) ---------------------------------------


def _certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enrich-dataverse")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2024, 1, 1))
        .not_valid_after(datetime(2099, 1, 1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


KEY, CERT = _certificate()
KEY_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
CERT_PEM = CERT.public_bytes(serialization.Encoding.PEM).decode()
PFX_B64 = base64.b64encode(
    pkcs12.serialize_key_and_certificates(b"x", KEY, CERT, None, serialization.NoEncryption())
).decode()
SHA256 = base64.urlsafe_b64encode(CERT.fingerprint(hashes.SHA256())).decode()


def cert_settings(pem: str, **overrides: object) -> DataverseSettings:
    values: dict[str, object] = {
        "org_url": ORG,
        "auth": "certificate",
        "tenant_id": TENANT,
        "client_id": APP,
        "certificate_pem": SecretStr(pem),
    }
    return DataverseSettings.model_validate(values | overrides)


@pytest.mark.parametrize(
    "value", [KEY_PEM + CERT_PEM, CERT_PEM + KEY_PEM, PFX_B64], ids=str.__len__
)
def test_a_certificate_setting_signs_the_assertion_with_the_certificates_own_thumbprint(
    mock, value
):
    entra_token(mock, "dv-cert-token")
    provider = MsalTokenProvider(cert_settings(value))
    assert provider.token() == "dv-cert-token"
    sent = form(next(c for c in mock.calls if c.request.method == "POST"))
    assert "client_secret" not in sent
    assertion = sent["client_assertion"][0]
    header = jwt.get_unverified_header(assertion)
    assert header["x5t#S256"] == SHA256  # no thumbprint setting: taken from the certificate
    assert header["x5c"]
    claims = jwt.decode(assertion, KEY.public_key(), algorithms=["PS256"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == APP


def test_an_explicit_thumbprint_is_used_as_given():
    credential = pem_credential(KEY_PEM + CERT_PEM, thumbprint="AB:" * 19 + "AB")
    assert credential["thumbprint"] == "AB" * 20
    assert "public_certificate" not in credential


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (CERT_PEM, "no private key"),
        (KEY_PEM, "no certificate"),
        ("not-base64-and-not-pem!", "neither PEM nor a readable base64 PFX"),
    ],
)
def test_unusable_certificate_values_are_auth_errors_without_the_value(value, problem):
    with pytest.raises(AuthError, match=problem) as info:
        pem_credential(value)
    assert value not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"certificate_path": "/keys/a.pem"}, "certificate_pem or certificate_path"),
        ({"certificate_thumbprint": "xyz"}, "40-hex-digit"),
        (
            {"certificate_pem": SecretStr("@Microsoft.KeyVault(SecretUri=https://kv/secrets/c/)")},
            "unresolved Key Vault reference",
        ),
    ],
)
def test_certificate_settings_are_checked(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        cert_settings(KEY_PEM + CERT_PEM, **overrides)
