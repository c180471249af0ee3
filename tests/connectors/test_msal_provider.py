"""MsalTokenProvider: one msal client, cache-first tokens, invalidate, errors without secrets."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from connectors._msal import MsalTokenProvider
from domain.errors import AuthError, UnavailableError
from domain.redact import MARKER
from domain.settings import DataverseSettings

ORG = "https://acme.crm.dynamics.com"
TENANT = "tenant-1"
AUTHORITY = f"https://login.microsoftonline.com/{TENANT}"
DISCOVERY = f"{AUTHORITY}/v2.0/.well-known/openid-configuration"
TOKEN_URL = f"{AUTHORITY}/oauth2/v2.0/token"
SECRET = "Zq7+Lp/Wd&Xe=Mv%2Bé Rk9"
THUMBPRINT = "A1" * 20
MSI_URL = "http://127.0.0.1:8081/msi/token"


def settings(**overrides: object) -> DataverseSettings:
    values: dict[str, object] = {
        "org_url": ORG,
        "tenant_id": TENANT,
        "client_id": "client-1",
        "client_secret": SecretStr(SECRET),
    }
    values.update(overrides)
    return DataverseSettings.model_validate(values)


def discovery(mock: responses.RequestsMock) -> None:
    mock.get(
        DISCOVERY,
        json={
            "token_endpoint": TOKEN_URL,
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        },
    )


def token_ok(mock: responses.RequestsMock, token: str) -> None:
    mock.post(
        TOKEN_URL,
        json={"access_token": token, "token_type": "Bearer", "expires_in": 3599},
    )


def form(call: responses.Call) -> dict[str, list[str]]:
    body = call.request.body
    return parse_qs(body.decode() if isinstance(body, bytes) else body or "")


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def test_client_credentials_with_secret_and_scope_then_cache(mock):
    discovery(mock)
    token_ok(mock, "tok-1")
    provider = MsalTokenProvider(settings(), timeout=(1.5, 7.0))
    assert provider.token() == "tok-1"
    assert provider.token() == "tok-1"  # cache-first: no second request
    posts = [c for c in mock.calls if c.request.method == "POST"]
    assert len(posts) == 1
    sent = form(posts[0])
    assert sent["grant_type"] == ["client_credentials"]
    assert sent["client_id"] == ["client-1"]
    assert sent["client_secret"] == [SECRET]
    assert sent["scope"] == [f"{ORG}/.default"]
    assert posts[0].request.req_kwargs["timeout"] == (1.5, 7.0)


def test_invalidate_sends_the_next_call_to_the_identity_provider(mock):
    discovery(mock)
    token_ok(mock, "tok-1")
    token_ok(mock, "tok-2")
    provider = MsalTokenProvider(settings())
    assert provider.token() == "tok-1"
    provider.invalidate()
    assert provider.token() == "tok-2"
    assert provider.token() == "tok-2"
    assert sum(c.request.method == "POST" for c in mock.calls) == 2
    # One msal application for both: OIDC discovery happened once.
    assert sum(c.request.url == DISCOVERY for c in mock.calls) == 1


def test_issued_token_is_added_to_the_redactor_and_replaced(mock):
    discovery(mock)
    token_ok(mock, "token-one-abc")
    token_ok(mock, "token-two-xyz")
    provider = MsalTokenProvider(settings())
    provider.token()
    assert provider.redactor.scrub("x token-one-abc") == f"x {MARKER}"
    provider.invalidate()
    provider.token()
    assert provider.redactor.scrub("token-one-abc token-two-xyz") == f"token-one-abc {MARKER}"
    assert SECRET not in provider.redactor.scrub(f"echo {SECRET}")


def test_error_dict_becomes_auth_error_without_the_secret(mock):
    discovery(mock)
    echoed = f"AADSTS7000215: Invalid client secret provided: {SECRET} client_secret={SECRET}"
    mock.post(
        TOKEN_URL,
        status=401,
        json={"error": "invalid_client", "error_description": echoed},
    )
    with pytest.raises(AuthError) as info:
        MsalTokenProvider(settings()).token()
    text = f"{info.value} {info.value!r}"
    assert "invalid_client: AADSTS7000215" in text
    assert SECRET not in text and "Zq7+Lp" not in text
    assert info.value.__cause__ is None


def test_transient_error_code_becomes_unavailable(mock):
    discovery(mock)
    mock.post(
        TOKEN_URL,
        status=400,
        json={"error": "temporarily_unavailable", "error_description": "try later"},
    )
    with pytest.raises(UnavailableError, match="temporarily_unavailable"):
        MsalTokenProvider(settings()).token()


def test_transport_failure_is_unavailable(mock):
    discovery(mock)
    mock.post(TOKEN_URL, body=requests.ConnectionError("refused"))
    with pytest.raises(UnavailableError, match="ConnectionError"):
        MsalTokenProvider(settings()).token()


def test_failed_discovery_echoing_the_secret_is_auth_error_without_it(mock):
    mock.get(DISCOVERY, status=400, body=f"bad tenant; you sent client_secret={SECRET}")
    with pytest.raises(AuthError) as info:
        MsalTokenProvider(settings()).token()
    text = f"{info.value} {info.value!r}"
    assert "token acquisition failed: ValueError" in text
    assert SECRET not in text and "Zq7+Lp" not in text


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_certificate_sends_a_signed_assertion_not_a_secret(mock):
    discovery(mock)
    token_ok(mock, "tok-cert")
    pem = _pem()
    reads: list[str] = []

    def read_file(path: str) -> str:
        reads.append(path)
        return pem

    cert = settings(
        auth="certificate",
        client_secret=None,
        certificate_path="/keys/app.pem",
        certificate_thumbprint=THUMBPRINT,
    )
    provider = MsalTokenProvider(cert, read_file=read_file)
    assert provider.token() == "tok-cert"
    assert reads == ["/keys/app.pem"]
    sent = form(next(c for c in mock.calls if c.request.method == "POST"))
    assert "client_secret" not in sent
    assert sent["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert sent["client_assertion"][0].count(".") == 2  # a JWS


def test_unreadable_certificate_is_auth_error(mock):
    def read_file(path: str) -> str:
        raise FileNotFoundError(path)

    cert = settings(
        auth="certificate",
        client_secret=None,
        certificate_path="/missing.pem",
        certificate_thumbprint=THUMBPRINT,
    )
    with pytest.raises(AuthError, match="certificate file unreadable"):
        MsalTokenProvider(cert, read_file=read_file).token()


@pytest.mark.parametrize("client_id", [None, "mi-client-7"])
def test_managed_identity_uses_the_functions_endpoint(mock, monkeypatch, client_id):
    monkeypatch.setenv("IDENTITY_ENDPOINT", MSI_URL)
    monkeypatch.setenv("IDENTITY_HEADER", "hdr-1")
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    body = {"access_token": "mi-tok", "expires_on": "9999999999", "token_type": "Bearer"}
    mock.get(MSI_URL, body=json.dumps(body))
    mock.get(MSI_URL, body=json.dumps({**body, "access_token": "mi-tok-2"}))
    mi = DataverseSettings(
        org_url=ORG, auth="managed_identity", managed_identity_client_id=client_id
    )
    provider = MsalTokenProvider(mi)
    assert provider.token() == "mi-tok"
    assert provider.token() == "mi-tok"  # cached
    provider.invalidate()
    assert provider.token() == "mi-tok-2"
    request = mock.calls[0].request
    assert request.headers["X-IDENTITY-HEADER"] == "hdr-1"
    params = parse_qs(request.url.split("?", 1)[1])
    assert params["resource"] == [ORG]
    assert params.get("client_id") == ([client_id] if client_id else None)
