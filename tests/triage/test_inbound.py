import json

import pytest

from domain.errors import InboundError, SignatureError
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


# --- hardening: one timestamp spelling, every parse failure a bounded 4xx -------------------

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize(
    "stamp",
    [
        str(NOW).translate(ARABIC_INDIC),
        str(NOW).translate(FULL_WIDTH),
        "1_800_000_000",
        f"+{NOW}",
        f" {NOW}",
        f"{NOW} ",
        f"{NOW}\n",
        f"0{NOW}",
        f"{NOW}.0",
        "1.8e9",
        "-1",
        "1" * 13,
        "9" * 300,
    ],
)
def test_timestamp_has_exactly_one_spelling(stamp):
    # The MAC is right for the number, so only the spelling can make this fail; int() takes
    # every one of these (or overflows on the 300 digits) and used to let them through.
    hdrs = {"x-triage-timestamp": stamp, "x-triage-signature": sign(BODY, SECRET, NOW)}
    with pytest.raises(SignatureError, match="not a unix timestamp") as info:
        verify_signature(BODY, hdrs, SECRET, now=lambda: NOW)
    assert stamp.strip() not in str(info.value)


def test_zero_timestamp_is_a_valid_spelling_but_stale():
    hdrs = {"x-triage-timestamp": "0", "x-triage-signature": sign(BODY, SECRET, 0)}
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(BODY, hdrs, SECRET, now=lambda: NOW)


def event(**fields):
    return json.dumps({"sys_id": "a" * 32, "table": "incident", **fields})


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
        (event(sys_mod_count=0)[:-1].encode() + b', "x": ' + b"9" * 4300 + b"}", "longer than"),
        (event(sys_mod_count=0)[:-1].encode() + b', "x": 1' + b"0" * 400 + b".5}", "longer than"),
        (event(x=0).replace("0}", "NaN}").encode(), "NaN"),
        (event(x=0).replace("0}", "-Infinity}").encode(), "NaN"),
        (event(x=0).replace("0}", "1e999}").encode(), "too large"),
        (b"\xef\xbb\xbf" + event().encode(), "byte order mark"),
        (event().encode("utf-16"), "not UTF-8"),
        (event().encode("utf-16-le"), "not valid JSON"),
        (event().encode("utf-32"), "not valid JSON"),
        (b'{"sys_id": "\xed\xa0\x80"}', "not UTF-8"),
    ],
)
def test_every_json_failure_is_a_bounded_400(body, match):
    with pytest.raises(InboundError, match=match) as info:
        parse_event(body, "application/json", allowed_tables=["incident"])
    assert (info.value.status, info.value.code) == (400, "malformed_json")
    assert len(str(info.value)) <= 300


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json; charset=utf-16",
        "application/json; charset=ISO-8859-1",
        "application/json;charset=",
        'application/json; boundary=x; charset="utf-32"',
    ],
)
def test_charset_other_than_utf8_is_415(ctype):
    with pytest.raises(InboundError, match="charset must be utf-8") as info:
        parse_event(BODY, ctype, allowed_tables=["incident"])
    assert info.value.status == 415


@pytest.mark.parametrize(
    "ctype", ["application/json; charset=UTF-8", 'Application/JSON;charset="utf-8"']
)
def test_utf8_charset_in_any_case_is_accepted(ctype):
    assert parse_event(BODY, ctype, allowed_tables=["incident"]).table == "incident"


def test_huge_content_type_is_not_echoed():
    ctype = "text/" + "x\r\n" * 17_000
    with pytest.raises(InboundError) as info:
        parse_event(BODY, ctype, allowed_tables=["incident"])
    message = str(info.value)
    assert info.value.status == 415
    assert len(message) <= 300
    assert "\r" not in message and "\n" not in message
    assert message.endswith("…")


def test_nesting_is_capped_below_the_recursion_limit():
    # 33 levels parse fine in Python; the cap refuses them whatever the recursion limit.
    body = event(x=0).replace("0}", "[" * 32 + "]" * 32 + "}").encode()
    with pytest.raises(InboundError, match="nested too deeply"):
        parse_event(body, "application/json", allowed_tables=["incident"])
    body = event(x=0).replace("0}", "[" * 31 + "]" * 31 + "}").encode()
    assert parse_event(body, "application/json", allowed_tables=["incident"]).table == "incident"


@pytest.mark.parametrize("count", ['"0"', '"' + "0" * 5000 + '"', "true", "-1", str(2**40)])
def test_sys_mod_count_must_be_a_plain_json_integer(count):
    raw = (
        '{"sys_id": "' + "a" * 32 + '", "table": "incident", "sys_mod_count": ' + count + "}"
    ).encode()
    with pytest.raises(InboundError) as caught:
        parse_event(raw, "application/json", allowed_tables=["incident"])
    assert caught.value.status == 400
    assert "0" * 50 not in str(caught.value)
