"""ServiceNowOAuth token cache and errors; BearerAuth; refresh-once on a Table API 401."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs

import pytest
import requests
from pydantic import SecretStr
from responses import matchers

from connectors._auth import BearerAuth, ServiceNowOAuth
from connectors._http import HttpClient
from domain.errors import AuthError, UnavailableError
from domain.redact import Redactor
from tests.connectors.conftest import INSTANCE, FakeClock

TOKEN_URL = f"{INSTANCE}/oauth_token.do"
TABLE_URL = f"{INSTANCE}/api/now/table/incident"
SECRET = "s3cr3t-value"


def provider(clock: FakeClock, session: requests.Session | None = None) -> ServiceNowOAuth:
    return ServiceNowOAuth(
        INSTANCE + "/",
        "client-1",
        SecretStr(SECRET),
        timeout=(3.05, 20.0),
        session=session,
        clock=clock.monotonic,
    )


def token_ok(rsps, token: str, expires_in: int | None = 1800) -> None:
    body: dict[str, object] = {"access_token": token, "token_type": "Bearer", "scope": ""}
    if expires_in is not None:
        body["expires_in"] = expires_in
    rsps.post(TOKEN_URL, json=body)


def test_token_request_is_client_credentials_form_with_timeout(rsps, clock):
    token_ok(rsps, "tok-1")
    assert provider(clock).token() == "tok-1"
    (call,) = rsps.calls
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(call.request.body) == {
        "grant_type": ["client_credentials"],
        "client_id": ["client-1"],
        "client_secret": [SECRET],
    }
    assert call.request.req_kwargs["timeout"] == (3.05, 20.0)


def test_token_is_cached_until_shortly_before_expiry(rsps, clock):
    token_ok(rsps, "tok-1", expires_in=1800)
    token_ok(rsps, "tok-2", expires_in=1800)
    oauth = provider(clock)
    assert oauth.token() == "tok-1"
    clock.t += 1739  # refresh happens 60 s before expires_in runs out
    assert oauth.token() == "tok-1"
    assert len(rsps.calls) == 1
    clock.t += 1
    assert oauth.token() == "tok-2"
    assert len(rsps.calls) == 2


def test_missing_expires_in_defaults_to_30_minutes(rsps, clock):
    token_ok(rsps, "tok-1", expires_in=None)
    token_ok(rsps, "tok-2")
    oauth = provider(clock)
    oauth.token()
    clock.t += 1739
    assert oauth.token() == "tok-1"
    clock.t += 1
    assert oauth.token() == "tok-2"


def test_invalidate_forces_a_new_token(rsps, clock):
    token_ok(rsps, "tok-1")
    token_ok(rsps, "tok-2")
    oauth = provider(clock)
    oauth.token()
    oauth.invalidate()
    assert oauth.token() == "tok-2"


def test_bad_client_raises_auth_error_without_the_secret(rsps, clock):
    rsps.post(
        TOKEN_URL,
        status=401,
        json={
            "error": "invalid_client",
            "error_description": f"client authentication failed for secret {SECRET}",
        },
        headers={"X-Transaction-ID": "tx-7"},
    )
    with pytest.raises(AuthError, match="invalid_client: client authentication failed") as info:
        provider(clock).token()
    assert SECRET not in str(info.value)
    assert info.value.status_code == 401
    assert info.value.request_id == "tx-7"


def test_token_without_access_token_is_an_auth_error(rsps, clock):
    rsps.post(TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(AuthError, match="no access_token"):
        provider(clock).token()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"status": 503, "body": "<html>maintenance</html>"}, "maintenance"),
        ({"status": 429, "json": {"error": "rate_limited"}}, "rate_limited"),
        ({"body": requests.ConnectTimeout("connect timed out")}, "ConnectTimeout"),
    ],
)
def test_token_endpoint_outage_is_transient(rsps, clock, kwargs, match):
    rsps.post(TOKEN_URL, **kwargs)
    with pytest.raises(UnavailableError, match=match):
        provider(clock).token()


def test_concurrent_callers_share_one_token_request(rsps, clock):
    release = threading.Event()

    def slow_token(request):
        release.wait(timeout=2)
        return 200, {}, '{"access_token": "tok-1", "expires_in": 1800}'

    rsps.add_callback("POST", TOKEN_URL, callback=slow_token)
    oauth = provider(clock)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(oauth.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=5)
    assert results == ["tok-1"] * 8
    assert len(rsps.calls) == 1


def test_bearer_auth_asks_the_provider_on_every_request(rsps, clock):
    token_ok(rsps, "tok-1")
    rsps.get(TABLE_URL, json={"result": []}, match=[_bearer("tok-1")])
    rsps.get(TABLE_URL, json={"result": []}, match=[_bearer("tok-1")])
    session = requests.Session()
    auth = BearerAuth(provider(clock, session))
    session.get(TABLE_URL, auth=auth, timeout=1)
    session.get(TABLE_URL, auth=auth, timeout=1)
    assert len(rsps.calls) == 3  # one token fetch, two table calls


def _bearer(token: str):
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def _oauth_client(http_settings, clock) -> HttpClient:
    session = requests.Session()
    return HttpClient(
        "servicenow",
        http_settings,
        session=session,
        auth=BearerAuth(provider(clock, session)),
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
    )


def test_401_mid_run_refreshes_the_token_once_and_resends(rsps, http_settings, clock):
    token_ok(rsps, "tok-1")
    rsps.get(TABLE_URL, json={"result": []}, match=[_bearer("tok-1")])
    rsps.get(TABLE_URL, status=401, json={"error": {"message": "User is not authenticated"}})
    token_ok(rsps, "tok-2")
    rsps.get(TABLE_URL, json={"result": []}, match=[_bearer("tok-2")])
    http = _oauth_client(http_settings, clock)
    http.request("GET", TABLE_URL)
    assert http.request("GET", TABLE_URL).status_code == 200
    assert clock.waits == []


def test_second_401_after_refresh_is_an_auth_error(rsps, http_settings, clock):
    token_ok(rsps, "tok-1")
    rsps.get(TABLE_URL, status=401, json={"error": {"message": "User is not authenticated"}})
    token_ok(rsps, "tok-2")
    rsps.get(TABLE_URL, status=401, json={"error": {"message": "User is not authenticated"}})
    with pytest.raises(AuthError, match="User is not authenticated") as info:
        _oauth_client(http_settings, clock).request("GET", TABLE_URL)
    assert info.value.status_code == 401


def test_401_with_basic_auth_is_not_resent(rsps, http_settings, clock):
    rsps.get(TABLE_URL, status=401, json={"error": {"message": "User is not authenticated"}})
    http = HttpClient(
        "servicenow",
        http_settings,
        auth=requests.auth.HTTPBasicAuth("svc", "pw"),
        sleep=clock.sleep,
    )
    with pytest.raises(AuthError):
        http.request("GET", TABLE_URL)
    assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_echoed_form_body_is_scrubbed_in_every_encoding(rsps, clock):
    secret = "a+b/c&d=e"
    rsps.post(
        TOKEN_URL,
        status=401,
        json={
            "error": "invalid_client",
            "error_description": "got client_id=client-1&secret=a%2Bb%2Fc%26d%3De, "
            f"lower a%2bb%2fc%26d%3de, raw {secret}",
        },
    )
    oauth = ServiceNowOAuth(
        INSTANCE, "client-1", SecretStr(secret), timeout=(3.05, 20.0), clock=clock.monotonic
    )
    with pytest.raises(AuthError) as info:
        oauth.token()
    assert str(info.value) == (
        "[servicenow, HTTP 401] token request refused: invalid_client: "
        "got client_id=client-1&secret=***, lower ***, raw ***"
    )


def test_provider_adds_its_secret_and_only_the_current_token_to_a_shared_redactor(rsps, clock):
    token_ok(rsps, "tok-first-1")
    token_ok(rsps, "tok-second-2")
    shared = Redactor()
    oauth = ServiceNowOAuth(
        INSTANCE,
        "client-1",
        SecretStr(SECRET),
        timeout=(3.05, 20.0),
        clock=clock.monotonic,
        redactor=shared,
    )
    assert shared.scrub(SECRET) == "***"
    oauth.token()
    assert shared.scrub("echo tok-first-1") == "echo ***"
    oauth.invalidate()
    oauth.token()
    assert shared.scrub("tok-first-1 tok-second-2") == "tok-first-1 ***"
    assert len(shared) == 2
