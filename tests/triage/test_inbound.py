import json

import pytest

from triage.errors import InboundError, SignatureError
from triage.inbound import check_size, parse_event, sign, verify_signature

SECRET = b"s3cret"
NOW = 1_800_000_000
BODY = json.dumps({"sys_id": "a" * 32, "table": "incident"}).encode()


def headers(body=BODY, t=NOW, secret=SECRET):
    return {"X-Triage-Timestamp": str(t), "X-Triage-Signature": sign(body, secret, t)}


def test_valid_signature_passes():
    verify_signature(BODY, headers(), SECRET, now=lambda: NOW + 10)


@pytest.mark.parametrize(
    ("hdrs", "match"),
    [
        ({}, "missing"),
        ({"x-triage-timestamp": "abc", "x-triage-signature": "v1=AAAA"}, "not a unix timestamp"),
        (headers(secret=b"other"), "does not match"),
        (headers(body=b"{}"), "does not match"),
        ({"x-triage-timestamp": str(NOW), "x-triage-signature": "v2=abc"}, "no v1"),
        ({"x-triage-timestamp": str(NOW), "x-triage-signature": "v1=***"}, "no v1"),
    ],
)
def test_bad_signatures_are_refused(hdrs, match):
    with pytest.raises(SignatureError, match=match):
        verify_signature(BODY, hdrs, SECRET, now=lambda: NOW)


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_stale_or_future_timestamp_is_refused(skew):
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(BODY, headers(), SECRET, now=lambda: NOW + skew)


def test_rotated_secret_accepts_any_listed_signature():
    good = headers()["X-Triage-Signature"]
    stale = sign(BODY, b"old", NOW)
    hdrs = {"x-triage-timestamp": str(NOW), "x-triage-signature": f"{stale}, {good}"}
    verify_signature(BODY, hdrs, SECRET, now=lambda: NOW)


def test_signature_error_is_a_401_inbound_error():
    with pytest.raises(InboundError) as info:
        verify_signature(BODY, {}, SECRET, now=lambda: NOW)
    assert info.value.status == 401


def test_check_size():
    check_size(b"x" * 10, 10)
    with pytest.raises(InboundError, match="limit is 10") as info:
        check_size(b"x" * 11, 10)
    assert info.value.status == 413


def test_parse_event_ignores_unknown_keys_and_lowercases_sys_id():
    body = json.dumps({"sys_id": "A" * 32, "table": "incident", "extra": [1, 2]}).encode()
    event = parse_event(body, "application/json; charset=utf-8", allowed_tables=["incident"])
    assert event.sys_id == "a" * 32


@pytest.mark.parametrize(
    ("body", "ctype", "status", "match"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"[1]", "application/json", 400, "JSON object"),
        (b'{"sys_id": "xyz"}', "application/json", 400, "sys_id"),
        (b'{"table": "incident"}', "application/json", 400, "sys_id"),
        (
            json.dumps({"sys_id": "a" * 32, "table": "sys_user"}).encode(),
            "application/json",
            400,
            "not enabled",
        ),
        (BODY, "text/plain", 415, "application/json"),
        (BODY, None, 415, "missing"),
    ],
)
def test_parse_event_errors_name_the_problem(body, ctype, status, match):
    with pytest.raises(InboundError, match=match) as info:
        parse_event(body, ctype, allowed_tables=["incident"])
    assert info.value.status == status
