"""POST /api/preview invariants over arbitrary requests, through triage.preview and function_app.

Never an exception or a 5xx; 200 exactly for a valid body (then every canonical field is
answered, and no connector is used: the pipelines' connectors fail the test on any call);
every reply is bounded JSON; a refusal is small, names a code and echoes no long input; no log
record is long.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from hypothesis import given
from hypothesis import strategies as st

import function_app
from domain.models import CANONICAL_FIELDS
from tests.property import ECHO_CHARS, assert_logs_are_bounded, captured_logs, installed
from tests.property.strategies import bad_content_types, good_content_types, json_values
from tests.triage.test_preview import make_service
from triage.preview import MAX_PREVIEW_BYTES, preview_call

SERVICE = make_service()  # pure enrichers and refusing connectors: nothing carries over
#: A 200 answer: a handful of fields, each at most a 160-char value, 300-char reason and why.
MAX_ANSWER_BYTES = 16 * 1024
MAX_ERROR_BYTES = 500

_text = st.text(max_size=300)
_some_text = _text.filter(str.strip)
_platforms = st.sampled_from(["servicenow", "dynamics"])
_current = st.dictionaries(
    st.sampled_from(CANONICAL_FIELDS), st.none() | st.text(max_size=200), max_size=6
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {"platform": draw(_platforms)}
    title, description = draw(_text), draw(_text)
    if not (title.strip() or description.strip()):
        title = draw(_some_text)
    for key, value in (("title", title), ("description", description)):
        if value or draw(st.booleans()):
            body[key] = value
    if draw(st.booleans()):
        body["current"] = draw(_current)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


_keys = st.sampled_from(["title", "description", "platform", "current"]) | st.text(max_size=70)
near_valid_objects = st.dictionaries(
    _keys,
    json_values | _platforms | st.text(min_size=ECHO_CHARS, max_size=2000) | _current,
    max_size=5,
).map(lambda d: json.dumps(d).encode())
any_bodies = st.binary(max_size=500) | near_valid_objects | valid_bodies()


def replies(body: bytes, headers: dict[str, str]) -> list[tuple[int, bytes]]:
    """(status, JSON body) from triage.preview and from function_app."""
    with captured_logs() as records:
        reply = preview_call(body, headers, SERVICE.pipeline_for)
        direct = (reply.status, json.dumps(reply.body, ensure_ascii=False).encode())
        req = func.HttpRequest(method="POST", url="/api/preview", headers=headers, body=body)
        with installed(SERVICE):
            resp = function_app.ticket_preview(req)
        via_host = (resp.status_code, resp.get_body())
    assert_logs_are_bounded(records, *_long(body))
    return [direct, via_host]


def _long(body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    return [text[: ECHO_CHARS + 1]] if len(text) > ECHO_CHARS else []


def check_bounded(status: int, payload: bytes, body: bytes) -> dict[str, Any]:
    assert status == 200 or 400 <= status < 500, status
    answer = json.loads(payload)
    if status == 200:
        assert len(payload) <= MAX_ANSWER_BYTES
        assert set(CANONICAL_FIELDS) <= set(answer["fields"])
        for row in answer["fields"].values():
            assert isinstance(row["would_write"], bool) and row["reason"]
            assert (row["value"] is None) == (row["confidence"] is None)
    else:
        assert len(payload) <= MAX_ERROR_BYTES
        error = answer["error"]
        assert error["code"] and 0 < len(error["message"]) <= 300
        for echo in _long(body):
            assert echo not in error["message"]
    return answer


@given(valid_bodies(), good_content_types)
def test_valid_bodies_are_answered_with_every_field(body, content_type):
    for status, payload in replies(body, {"Content-Type": content_type}):
        assert status == 200, payload[:300]
        answer = check_bounded(status, payload, body)
        assert answer["platform"] == json.loads(body)["platform"]
        current = json.loads(body).get("current", {})
        for name, value in current.items():
            if value and value.strip():  # a value a person set is never written
                assert answer["fields"][name]["would_write"] is False


@given(any_bodies, good_content_types | bad_content_types)
def test_arbitrary_requests_never_raise_never_5xx_and_stay_bounded(body, content_type):
    for status, payload in replies(body, {"Content-Type": content_type}):
        check_bounded(status, payload, body)


@given(any_bodies, bad_content_types)
def test_a_body_that_is_not_declared_json_is_refused(body, content_type):
    media = content_type.partition(";")[0].strip().lower()
    for status, payload in replies(body, {"Content-Type": content_type}):
        if media != "application/json":
            assert status == 415
        check_bounded(status, payload, body)


@given(st.binary(min_size=1, max_size=64), valid_bodies())
def test_oversize_bodies_are_413(tail, valid):
    body = valid + b" " * (MAX_PREVIEW_BYTES - len(valid)) + tail  # valid JSON, one byte too many
    for status, payload in replies(body, {"Content-Type": "application/json"}):
        assert status == 413
        check_bounded(status, payload, body)
