"""Webhook invariants over arbitrary requests, through the Service and through function_app.

Never an exception or a 5xx; 202 exactly for a correctly signed, fresh, valid UTF-8 JSON body;
every reply is small JSON that echoes neither the body nor a long header; no log record is long
or carries the secret. Each example builds fresh services, so no state carries over.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

import function_app
from tests.property import (
    ECHO_CHARS,
    SECRET,
    Out,
    assert_logs_are_bounded,
    captured_logs,
    http_request,
    installed,
    make_service,
    signed_headers,
)
from tests.property.strategies import (
    arbitrary_headers,
    bad_content_types,
    good_content_types,
    malformed_bodies,
    refused_signatures,
    valid_bodies,
    valid_events,
)


def replies(body: bytes, headers: dict[str, str]) -> list[tuple[int, bytes, str | None]]:
    """(status, response body, enqueued job) from the Service and from function_app."""
    with captured_logs() as records:
        reply = make_service().accept_servicenow_webhook(body, headers)
        direct = (
            reply.status,
            json.dumps(reply.body).encode(),
            None if reply.job is None else reply.job.to_message(),
        )
        out = Out()
        with installed(make_service()):
            resp = function_app.servicenow_webhook(http_request(body, headers), out)
        via_host = (resp.status_code, resp.get_body(), out.value)
    assert_logs_are_bounded(records, SECRET, *_long(body, headers))
    return [direct, via_host]


def _long(body: bytes, headers: dict[str, str]) -> list[str]:
    """Prefixes one character longer than an echo may be, of everything we must not echo."""
    texts = [v for v in headers.values() if len(v) > ECHO_CHARS]
    text = body.decode("utf-8", errors="replace")
    if len(text) > ECHO_CHARS:
        texts.append(text)
    return [t[: ECHO_CHARS + 1] for t in texts]


def check_refused(body: bytes, headers: dict[str, str], statuses: set[int] | None = None) -> None:
    for status, payload, job in replies(body, headers):
        assert 400 <= status < 500 and (statuses is None or status in statuses), status
        assert job is None
        check_payload(payload, body, headers)
        error = json.loads(payload)["error"]
        assert error["code"] and 0 < len(error["message"]) <= 300


def check_payload(payload: bytes, body: bytes, headers: dict[str, str]) -> None:
    assert len(payload) <= 500
    message = json.dumps(json.loads(payload), ensure_ascii=False)
    for echo in _long(body, headers):
        assert echo not in message
    if len(body) > ECHO_CHARS:
        assert body[: ECHO_CHARS + 1] not in payload


@given(valid_bodies(), good_content_types)
def test_correctly_signed_valid_body_is_accepted(body, content_type):
    headers = signed_headers(body, content_type=content_type)
    sys_id = json.loads(body)["sys_id"].lower()
    for status, payload, job in replies(body, headers):
        assert status == 202
        assert job is not None and json.loads(job)["record_id"] == sys_id
        check_payload(payload, body, headers)


@given(malformed_bodies, good_content_types)
def test_signed_malformed_body_is_refused(body, content_type):
    check_refused(body, signed_headers(body, content_type=content_type), {400, 413})


@given(valid_bodies(), bad_content_types)
def test_signed_valid_body_with_another_content_type_is_415(body, content_type):
    check_refused(body, signed_headers(body, content_type=content_type), {415})


@given(st.data(), valid_bodies() | malformed_bodies)
def test_unsigned_forged_or_stale_requests_are_401(data, body):
    headers = data.draw(refused_signatures(body))
    expected = {413} if len(body) > 64 * 1024 else {401}
    check_refused(body, headers, expected)


@given(st.binary(max_size=500) | valid_bodies() | malformed_bodies, arbitrary_headers)
def test_arbitrary_requests_are_refused(body, headers):
    check_refused(body, headers)


@given(valid_events(), arbitrary_headers)
def test_arbitrary_headers_never_authenticate_a_valid_body(event, headers):
    body = json.dumps(event).encode()
    check_refused(body, {**headers, "Content-Type": "application/json"})


@given(valid_bodies(), good_content_types, st.integers(min_value=1, max_value=4), st.data())
def test_a_replayed_request_is_never_accepted_twice(body, content_type, repeats, data):
    """One service (one replay guard): the first delivery is accepted, every repeat is 409,
    also with extra ``v1=`` values or a re-ordered header list around the captured one."""
    headers = signed_headers(body, content_type=content_type)
    service = make_service()
    with captured_logs() as records:
        first = service.accept_servicenow_webhook(body, headers)
        assert first.status == 202 and first.job is not None
        for _ in range(repeats):
            extra = data.draw(st.lists(st.sampled_from(["v1=AAAA", "v0=x", "v1="]), max_size=3))
            parts = [headers["X-Triage-Signature"], *extra]
            replay = {**headers, "X-Triage-Signature": ",".join(data.draw(st.permutations(parts)))}
            again = service.accept_servicenow_webhook(body, replay)
            assert (again.status, again.job) == (409, None)
            check_payload(json.dumps(again.body).encode(), body, replay)
    assert_logs_are_bounded(records, SECRET, *_long(body, headers))
