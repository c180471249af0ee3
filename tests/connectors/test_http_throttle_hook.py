"""HttpClient(on_throttle=...): told every 429's wait before the client sleeps or gives up."""

from __future__ import annotations

import email.utils
import logging

import pytest
import requests
import responses

from connectors._http import HttpClient
from domain.errors import ThrottledError, UnavailableError
from domain.settings import HttpSettings
from tests.connectors.conftest import EPOCH, INSTANCE, FakeClock

URL = f"{INSTANCE}/api/now/table/incident/0123456789abcdef0123456789abcdef"
DV_URL = (
    "https://acme.crm.dynamics.com/api/data/v9.2/incidents(00000000-0000-0000-0000-000000000001)"
)
OK = {"result": {"sys_id": "0123456789abcdef0123456789abcdef"}}


class Recorder:
    """The callback: records each wait with the clock's time, so order can be checked."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, float]] = []  # (wait, clock time when told)

    def __call__(self, seconds: float) -> None:
        self.calls.append((seconds, self.clock.now()))


def client(settings: HttpSettings, clock: FakeClock, hook: object) -> HttpClient:
    return HttpClient(
        "servicenow",
        settings,
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
        on_throttle=hook,  # type: ignore[arg-type]
    )


def dataverse_limit(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def test_servicenow_retry_after_is_reported_before_the_client_sleeps(rsps, http_settings, clock):
    rsps.get(URL, status=429, json={"error": {"message": "Too many"}}, headers={"Retry-After": "7"})
    rsps.get(URL, json=OK)
    hook = Recorder(clock)
    assert client(http_settings, clock, hook).request("GET", URL).json() == OK
    assert hook.calls == [(7.0, EPOCH)]  # told at EPOCH, i.e. before the 7 s sleep
    assert clock.waits == [7.0]


@pytest.mark.parametrize(
    ("code", "message", "retry_after"),
    [
        ("0x80072322", "Number of requests exceeded the limit of 6000", "12"),
        ("0x80072321", "Combined execution time of incoming requests exceeded", "20"),
        ("0x80072326", "Number of concurrent requests exceeded the limit of 52.", "1"),
    ],
)
def test_dataverse_service_protection_429_is_reported(
    rsps, http_settings, clock, code, message, retry_after
):
    rsps.patch(
        DV_URL,
        status=429,
        json=dataverse_limit(code, message),
        headers={"Retry-After": retry_after},
    )
    rsps.patch(DV_URL, status=204)
    hook = Recorder(clock)
    client(http_settings, clock, hook).request("PATCH", DV_URL, json={"title": "x"})
    assert hook.calls == [(float(retry_after), EPOCH)]


def test_http_date_and_rate_limit_reset_hints_are_reported_in_seconds(rsps, http_settings, clock):
    rsps.get(
        URL, status=429, headers={"Retry-After": email.utils.formatdate(EPOCH + 12, usegmt=True)}
    )
    rsps.get(URL, status=429, headers={"X-RateLimit-Reset": str(int(EPOCH) + 12 + 9)})
    rsps.get(URL, json=OK)
    hook = Recorder(clock)
    client(http_settings, clock, hook).request("GET", URL)
    assert hook.calls == [(12.0, EPOCH), (9.0, EPOCH + 12)]


def test_hintless_429_reports_the_backoff_the_client_then_sleeps(rsps, http_settings, clock):
    for _ in range(3):
        rsps.get(URL, status=429)
    rsps.get(URL, json=OK)
    hook = Recorder(clock)
    client(http_settings, clock, hook).request("GET", URL)
    assert [wait for wait, _ in hook.calls] == clock.waits  # the jittered wait, exactly
    assert 0.5 <= clock.waits[0] <= 1.0


def test_a_429_the_client_gives_up_on_is_still_reported(rsps, http_settings, clock):
    rsps.get(URL, status=429, headers={"Retry-After": "3600"})
    hook = Recorder(clock)
    with pytest.raises(ThrottledError):
        client(http_settings, clock, hook).request("GET", URL)
    assert hook.calls == [(3600.0, EPOCH)]
    assert clock.waits == []


def test_each_throttled_answer_is_reported_once_also_when_attempts_run_out(
    rsps, http_settings, clock
):
    settings = http_settings.model_copy(update={"max_attempts": 2})
    rsps.get(URL, status=429, headers={"Retry-After": "2"})
    rsps.get(URL, status=429, headers={"Retry-After": "3"})
    hook = Recorder(clock)
    with pytest.raises(ThrottledError):
        client(settings, clock, hook).request("GET", URL)
    assert [wait for wait, _ in hook.calls] == [2.0, 3.0]


@pytest.mark.parametrize("status", [200, 201, 204, 500, 503])
def test_not_called_for_answers_that_are_not_429(rsps, http_settings, clock, status):
    rsps.get(URL, status=status, **({} if status == 204 else {"json": OK}))
    if status >= 500:
        rsps.get(URL, json=OK)
    hook = Recorder(clock)
    client(http_settings, clock, hook).request("GET", URL)
    assert hook.calls == []


def test_not_called_for_a_dropped_connection(rsps, http_settings, clock):
    rsps.get(URL, body=requests.ConnectionError("reset"))
    hook = Recorder(clock)
    with pytest.raises(UnavailableError):
        client(http_settings.model_copy(update={"max_attempts": 1}), clock, hook).request(
            "GET", URL
        )
    assert hook.calls == []


def test_a_raising_callback_does_not_break_the_request(rsps, http_settings, clock, caplog):
    secret = "s3cr3t-token-value"

    def broken(seconds: float) -> None:
        raise RuntimeError(f"budget store down {secret}")

    rsps.get(URL, status=429, headers={"Retry-After": "4"})
    rsps.get(URL, json=OK)
    with caplog.at_level(logging.WARNING, logger="connectors._http"):
        response = client(http_settings, clock, broken).request("GET", URL)
    assert response.json() == OK
    assert clock.waits == [4.0]  # the wait still honoured
    assert "throttle callback failed (RuntimeError)" in caplog.text
    assert secret not in caplog.text


def test_error_for_reports_a_throttled_batch_part(http_settings, clock):
    hook = Recorder(clock)
    http = client(http_settings, clock, hook)
    part = requests.Response()
    part.status_code = 429
    part.headers["Retry-After"] = "5"
    part._content = b'{"error": {"message": "rate limited"}}'
    assert isinstance(http.error_for("PATCH", URL, part), ThrottledError)
    hintless = requests.Response()
    hintless.status_code = 429
    hintless._content = b"{}"
    http.error_for("PATCH", URL, hintless)
    fine = requests.Response()
    fine.status_code = 404
    fine._content = b"{}"
    http.error_for("PATCH", URL, fine)
    assert [wait for wait, _ in hook.calls] == [5.0, http_settings.backoff_initial_s]


@responses.activate
def test_without_a_callback_429s_behave_as_before(http_settings, clock):
    responses.get(URL, status=429, headers={"Retry-After": "1"})
    responses.get(URL, json=OK)
    HttpClient(
        "servicenow", http_settings, sleep=clock.sleep, now=clock.now, monotonic=clock.monotonic
    ).request("GET", URL)
    assert clock.waits == [1.0]
