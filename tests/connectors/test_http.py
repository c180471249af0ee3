"""HttpClient: status mapping, wait hints, write-retry policy, budget and timeouts."""

from __future__ import annotations

import email.utils
import json
import logging
from urllib.parse import quote, quote_plus

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from connectors._http import HttpClient, error_excerpt, retry_after_s, should_retry
from domain.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from domain.redact import Redactor
from domain.settings import HttpSettings
from tests.connectors.conftest import EPOCH, INSTANCE, FakeClock

URL = f"{INSTANCE}/api/now/table/incident/0123456789abcdef0123456789abcdef"
OK = {"result": {"sys_id": "0123456789abcdef0123456789abcdef"}}


def client(settings: HttpSettings, clock: FakeClock) -> HttpClient:
    return HttpClient(
        "servicenow", settings, sleep=clock.sleep, now=clock.now, monotonic=clock.monotonic
    )


def sn_error(message: str, detail: str) -> dict[str, object]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens on the port: the request never left."""
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, URL, reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, RejectedError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (405, RejectedError),
        (409, ConflictError),
        (412, ConflictError),
        (422, RejectedError),
        (500, UnavailableError),
        (503, UnavailableError),
    ],
)
def test_status_maps_to_error_with_request_id_and_message(
    rsps, http_settings, clock, status, error_type
):
    settings = http_settings.model_copy(update={"max_attempts": 1})
    rsps.get(
        URL,
        status=status,
        json=sn_error("No Record found", "ACL restricts the record retrieval"),
        headers={"X-Transaction-ID": "e3003cb2db8c"},
    )
    with pytest.raises(error_type) as info:
        client(settings, clock).request("GET", URL)
    exc = info.value
    assert type(exc) is error_type
    assert exc.status_code == status
    assert exc.request_id == "e3003cb2db8c"
    assert exc.system == "servicenow"
    assert "No Record found: ACL restricts the record retrieval" in exc.message
    assert str(exc).startswith(f"[servicenow, HTTP {status}, request e3003cb2db8c] GET /api/now/")


def test_request_id_falls_back_to_x_request_id(rsps, http_settings, clock):
    rsps.get(URL, status=404, json=sn_error("No Record found", ""), headers={"x-request-id": "r-1"})
    with pytest.raises(NotFoundError) as info:
        client(http_settings, clock).request("GET", URL)
    assert info.value.request_id == "r-1"


def test_error_excerpt_is_cut_to_200_chars_and_handles_html():
    long = requests.Response()
    long.status_code = 400
    long._content = b'{"error": {"message": "Bad", "detail": "' + b"x" * 1000 + b'"}}'
    assert len(error_excerpt(long)) == 200
    assert error_excerpt(long).startswith("Bad: xxx")
    html = requests.Response()
    html.status_code = 502
    html._content = b"<html>\n  <body>Bad   gateway</body>\n</html>"
    assert error_excerpt(html) == "<html> <body>Bad gateway</body> </html>"
    oauth = requests.Response()
    oauth.status_code = 401
    oauth._content = b'{"error": "invalid_client", "error_description": "no such client"}'
    assert error_excerpt(oauth) == "invalid_client: no such client"


def test_429_with_retry_after_waits_that_long(rsps, http_settings, clock):
    rsps.get(URL, status=429, json=sn_error("Too many", ""), headers={"Retry-After": "7"})
    rsps.get(URL, json=OK)
    response = client(http_settings, clock).request("GET", URL)
    assert response.json() == OK
    assert clock.waits == [7.0]


def test_429_with_retry_after_http_date(rsps, http_settings, clock):
    when = email.utils.formatdate(EPOCH + 12, usegmt=True)
    rsps.get(URL, status=429, headers={"Retry-After": when})
    rsps.get(URL, json=OK)
    client(http_settings, clock).request("GET", URL)
    assert clock.waits == [12.0]


def test_429_with_only_rate_limit_reset_waits_until_reset(rsps, http_settings, clock):
    rsps.get(URL, status=429, headers={"X-RateLimit-Reset": str(int(EPOCH) + 9)})
    rsps.get(URL, json=OK)
    client(http_settings, clock).request("GET", URL)
    assert clock.waits == [9.0]


def test_429_without_hints_backs_off_exponentially_capped(rsps, http_settings, clock):
    for _ in range(3):
        rsps.get(URL, status=429)
    rsps.get(URL, json=OK)
    client(http_settings, clock).request("GET", URL)
    # initial 0.5 s + jitter in [0, 0.5], then 1 s + jitter capped at backoff_max_s = 1 s.
    assert 0.5 <= clock.waits[0] <= 1.0
    assert clock.waits[1:] == [1.0, 1.0]


def test_long_retry_after_raises_throttled_at_once_without_sleeping(rsps, http_settings, clock):
    rsps.get(URL, status=429, headers={"Retry-After": "3600", "X-Transaction-ID": "t-9"})
    with pytest.raises(ThrottledError) as info:
        client(http_settings, clock).request("GET", URL)
    assert info.value.retry_after_s == 3600.0
    assert info.value.request_id == "t-9"
    assert clock.waits == []
    assert len(rsps.calls) == 1


def test_get_retries_a_5xx_burst_then_succeeds(rsps, http_settings, clock):
    for status in (500, 502, 503):
        rsps.get(URL, status=status)
    rsps.get(URL, json=OK)
    assert client(http_settings, clock).request("GET", URL).status_code == 200
    assert len(clock.waits) == 3


def test_get_gives_up_after_max_attempts(rsps, http_settings, clock):
    settings = http_settings.model_copy(update={"max_attempts": 3})
    for _ in range(3):
        rsps.get(URL, status=503)
    with pytest.raises(UnavailableError) as info:
        client(settings, clock).request("GET", URL)
    assert info.value.status_code == 503
    assert len(clock.waits) == 2


def test_patch_is_not_retried_on_503(rsps, http_settings, clock):
    rsps.patch(URL, status=503, json=sn_error("Transaction cancelled", ""))
    with pytest.raises(UnavailableError):
        client(http_settings, clock).request("PATCH", URL, json={"work_notes": "x"})
    assert len(rsps.calls) == 1
    assert clock.waits == []


def test_patch_is_retried_on_429(rsps, http_settings, clock):
    rsps.patch(URL, status=429, headers={"Retry-After": "2"})
    rsps.patch(URL, json=OK)
    response = client(http_settings, clock).request("PATCH", URL, json={"work_notes": "x"})
    assert response.status_code == 200
    assert clock.waits == [2.0]


@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (requests.ConnectTimeout("connect timed out"), True),
        (refused(), True),
        (requests.ReadTimeout("read timed out"), False),
        (requests.ConnectionError(ProtocolError("Connection aborted.")), False),
    ],
)
def test_patch_is_retried_only_when_the_request_never_left(
    rsps, http_settings, clock, failure, retried
):
    rsps.patch(URL, body=failure)
    if retried:
        rsps.patch(URL, json=OK)
        http = client(http_settings, clock)
        assert http.request("PATCH", URL, json={"state": "2"}).status_code == 200
    else:
        with pytest.raises(UnavailableError) as info:
            client(http_settings, clock).request("PATCH", URL, json={"state": "2"})
        assert info.value.__cause__ is failure
        assert len(rsps.calls) == 1


def test_get_retries_connection_errors_and_read_timeouts(rsps, http_settings, clock):
    rsps.get(URL, body=requests.ConnectionError(ProtocolError("Connection aborted.")))
    rsps.get(URL, body=requests.ReadTimeout("read timed out"))
    rsps.get(URL, json=OK)
    assert client(http_settings, clock).request("GET", URL).status_code == 200
    assert len(clock.waits) == 2


def test_persistent_timeout_surfaces_as_unavailable_chained(rsps, http_settings, clock):
    settings = http_settings.model_copy(update={"max_attempts": 2})
    timeout = requests.ReadTimeout("read timed out")
    rsps.get(URL, body=timeout)
    rsps.get(URL, body=timeout)
    with pytest.raises(UnavailableError, match="ReadTimeout") as info:
        client(settings, clock).request("GET", URL)
    assert info.value.__cause__ is timeout
    assert info.value.status_code is None


def test_total_budget_stops_retries_before_overrunning(rsps, http_settings, clock):
    settings = http_settings.model_copy(update={"max_elapsed_s": 10.0})
    for _ in range(3):
        rsps.get(URL, status=429, headers={"Retry-After": "4"})
    with pytest.raises(ThrottledError):
        client(settings, clock).request("GET", URL)
    # 4 s + 4 s fit in 10 s; a third wait would end at 12 s, so the third 429 surfaces.
    assert clock.waits == [4.0, 4.0]
    assert len(rsps.calls) == 3


def test_every_attempt_carries_the_connect_read_timeout(rsps, http_settings, clock):
    rsps.get(URL, status=503)
    rsps.get(URL, body=requests.ConnectTimeout("connect timed out"))
    rsps.get(URL, json=OK)
    client(http_settings, clock).request("GET", URL)
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [(3.05, 20.0)] * 3


def test_retry_is_logged_at_warning_without_the_body(rsps, http_settings, clock, caplog):
    rsps.get(
        URL,
        status=503,
        json=sn_error("Transaction cancelled", "secret ticket text"),
        headers={"X-Transaction-ID": "tx-1"},
    )
    rsps.get(URL, json=OK)
    with caplog.at_level(logging.WARNING, logger="connectors._http"):
        client(http_settings, clock).request("GET", URL)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "servicenow" in text
    assert "status=503" in text
    assert "request_id=tx-1" in text
    assert "attempt 1/5" in text
    assert f"retrying in {clock.waits[0]:.2f} s" in text
    assert "secret ticket text" not in text


def _throttled(retry_after: float | None) -> ThrottledError:
    return ThrottledError("429", system="servicenow", retry_after_s=retry_after)


def _unavailable(cause: BaseException | None) -> UnavailableError:
    exc = UnavailableError("down", system="servicenow")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "idempotent", "expected"),
    [
        (_throttled(None), False, True),
        (_throttled(30.0), False, True),
        (_throttled(30.5), True, False),
        (_unavailable(None), True, True),
        (_unavailable(None), False, False),
        (_unavailable(requests.ConnectTimeout()), False, True),
        (_unavailable(requests.ReadTimeout()), False, False),
        (RejectedError("bad", system="servicenow"), True, False),
        (AuthError("no", system="servicenow"), True, False),
        (ValueError("bug"), True, False),
    ],
)
def test_should_retry_table(exc, idempotent, expected):
    assert should_retry(exc, idempotent=idempotent, max_retry_wait_s=30.0) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": email.utils.formatdate(EPOCH - 60, usegmt=True)}, 0.0),
        ({"Retry-After": "soon", "X-RateLimit-Reset": str(int(EPOCH) + 5)}, 5.0),
        ({"Retry-After": "nan"}, None),
        ({"X-RateLimit-Reset": "garbage"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers, expected):
    assert retry_after_s(requests.structures.CaseInsensitiveDict(headers), EPOCH) == expected


def test_unsendable_request_is_rejected_not_retried(http_settings, clock):
    with (
        responses.RequestsMock(assert_all_requests_are_fired=False),
        pytest.raises(RejectedError, match="MissingSchema"),
    ):
        client(http_settings, clock).request("GET", "no-scheme/api")
    assert clock.waits == []


def test_retry_log_names_the_transport_failure(rsps, http_settings, clock, caplog):
    rsps.get(URL, body=requests.ReadTimeout("read timed out"))
    rsps.get(URL, json=OK)
    with caplog.at_level(logging.WARNING, logger="connectors._http"):
        client(http_settings, clock).request("GET", URL)
    assert "status=ReadTimeout" in caplog.records[0].getMessage()


def _response(status: int, body: str, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers.update(headers or {})
    return response


def test_error_excerpt_scrubs_a_secret_before_cutting_at_200_chars():
    secret = "Zq7+Lp/Wd&Xe=Mv%Rk9Tn#Hs"
    # The secret straddles the cut: cutting first would leave its head in the message.
    body = sn_error("x" * 190 + quote_plus(secret), "detail")
    excerpt = error_excerpt(_response(400, json.dumps(body)), Redactor([secret]))
    assert "Zq7%2BLp" not in excerpt
    assert excerpt == "x" * 190 + "***: detai"  # still 200 characters


def test_error_excerpt_scrubs_credentials_it_does_not_know():
    body = '{"headers": {"Authorization": "Bearer eyJ0eXAi.payload.sig"}}'
    excerpt = error_excerpt(_response(401, body))
    assert "eyJ0eXAi" not in excerpt
    assert excerpt == '{"headers": {"Authorization": "Bearer ***"}}'


def test_client_scrubs_its_secrets_from_message_and_request_id(rsps, http_settings, clock):
    secret = "pa ss+wörd/42"
    rsps.get(
        URL,
        status=403,
        json=sn_error(f"user svc with password {secret} denied", quote(secret)),
        headers={"X-Transaction-ID": f"tx-{secret}"},
    )
    http = HttpClient("servicenow", http_settings, sleep=clock.sleep, redactor=Redactor([secret]))
    with pytest.raises(AuthError) as info:
        http.request("GET", URL)
    assert str(info.value) == (
        "[servicenow, HTTP 403, request tx-***] GET /api/now/table/incident/"
        "0123456789abcdef0123456789abcdef: user svc with password *** denied: ***"
    )
