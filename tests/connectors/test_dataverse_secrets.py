"""A Dataverse or token endpoint echoing our request must not put a secret into an error."""

from __future__ import annotations

import re

import pytest
import responses

from connectors.dataverse import DataverseConnector
from domain.errors import ConnectorError
from domain.redact import MARKER
from domain.settings import DataverseSettings
from tests.connectors.test_secrets import echo, leaks

ORG = "https://acme.crm.dynamics.com"
AUTHORITY = "https://login.microsoftonline.com/tenant-1"
TOKEN_URL = f"{AUTHORITY}/oauth2/v2.0/token"
CLIENT_SECRET = "Zq7+Lp/Wd&Xe=Mv%2Bé✓ Rk9"
TOKEN = "tok+/Abc=123_XYZ-987"
CASE = "5f1c1e9a-0b8e-4c1e-9f00-0000000000aa"
SETTINGS = DataverseSettings(
    org_url=ORG, tenant_id="tenant-1", client_id="client-1", client_secret=CLIENT_SECRET
)


@pytest.fixture
def server():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(
            f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
            json={
                "token_endpoint": TOKEN_URL,
                "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
                "issuer": f"{AUTHORITY}/v2.0",
            },
        )
        yield mock


def _connector(http_settings, clock) -> DataverseConnector:
    return DataverseConnector(
        SETTINGS,
        http_settings,
        field_types={"prioritycode": "choice"},
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
    )


@pytest.mark.parametrize("shape", ["table", "oauth", "text"])
@pytest.mark.parametrize("status", [400, 401, 500])
def test_token_endpoint_echo_leaks_no_secret(server, http_settings, clock, status, shape):
    server.add_callback("POST", TOKEN_URL, callback=echo(status, shape))
    with pytest.raises(ConnectorError) as info:
        _connector(http_settings, clock).get("incident", CASE, ["title"])
    text = f"{info.value} {info.value!r}"
    assert leaks(text, CLIENT_SECRET) == []
    assert "Zq7" not in text


@pytest.mark.parametrize("shape", ["table", "oauth", "text"])
@pytest.mark.parametrize("status", [400, 401, 500])
def test_web_api_echo_leaks_no_token_or_secret(server, http_settings, clock, status, shape):
    server.post(TOKEN_URL, json={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3599})
    server.add_callback(
        "GET", re.compile(rf"{re.escape(ORG)}/api/data/v9\.2/.*"), callback=echo(status, shape)
    )
    server.add_callback("POST", f"{ORG}/api/data/v9.2/$batch", callback=echo(status, shape))
    connector = _connector(http_settings, clock)
    for call in (
        lambda: connector.get("incident", CASE, ["title"]),
        lambda: connector.update("incident", CASE, {"prioritycode": "1"}, etag='W/"1"'),
    ):
        with pytest.raises(ConnectorError) as info:
            call()
        text = f"{info.value} {info.value!r}"
        assert leaks(text, CLIENT_SECRET) == []
        assert TOKEN not in text and TOKEN[:8] not in text
        assert "echo" in text and MARKER in text
