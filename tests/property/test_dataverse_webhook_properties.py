"""Dataverse webhook invariants over arbitrary requests, on the inbound functions directly.

``parse_dataverse_event`` never raises anything but a 4xx ``InboundError`` with a message of at
most 300 characters that echoes no long input; a valid context (any key casing, any extra keys)
is accepted with its record id; ``check_dataverse_auth`` accepts exactly the requests carrying
a configured key in the configured place.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InboundError, SignatureError
from tests.property import ECHO_CHARS
from tests.property.strategies import json_values, long_values
from triage.dataverse_inbound import (
    DataverseEvent,
    WebhookKeys,
    check_dataverse_auth,
    parse_dataverse_event,
)

MAX_BYTES = 64 * 1024
KEY = "dataverse-hook-key-0123456789"
OLD_KEY = "dataverse-old-key-9876543210"
OPTION = "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts"
REFERENCE = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"

_hex = "0123456789abcdefABCDEF"
guids = st.builds(
    lambda a, b, c, d, e: f"{a}-{b}-{c}-{d}-{e}",
    *(st.text(_hex, min_size=n, max_size=n) for n in (8, 4, 4, 4, 12)),
).filter(lambda g: g.strip("0-"))
_names = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)
_casings = st.sampled_from([str, str.lower, str.upper, str.swapcase])
_attribute_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.text(max_size=50),
    st.integers(-(10**12), 10**12).map(lambda ms: f"/Date({ms})/"),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: {"__type": OPTION, "Value": v}),
    st.builds(lambda g, n: {"__type": REFERENCE, "Id": g, "LogicalName": n}, guids, _names),
)


def recase(value: Any, casing: Any) -> Any:
    if isinstance(value, list):
        return [recase(v, casing) for v in value]
    if isinstance(value, dict):
        return {casing(k): recase(v, casing) for k, v in value.items()}
    return value


@st.composite
def valid_contexts(draw: st.DrawFn) -> dict[str, Any]:
    """A Create-incident context the parser must accept, in one random key casing."""
    record = draw(guids)
    attributes = draw(st.dictionaries(_names, _attribute_values, max_size=6))
    body: dict[str, Any] = {
        "MessageName": draw(st.sampled_from(["Create", "create", "CREATE"])),
        "PrimaryEntityName": draw(st.sampled_from(["incident", "Incident"])),
        "PrimaryEntityId": record,
        "UserId": draw(guids),
        "InitiatingUserId": draw(guids),
        "Depth": draw(st.integers(0, 8)),
        "InputParameters": [
            {
                "key": "Target",
                "value": {
                    "Attributes": [{"key": k, "value": v} for k, v in attributes.items()],
                    "LogicalName": "incident",
                    "Id": record,
                },
            }
        ],
    }
    if draw(st.booleans()):
        body["CorrelationId"] = draw(guids)
    body = recase(body, draw(_casings))
    extras = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    taken = {k.lower() for k in body}
    body.update({k: v for k, v in extras.items() if k.lower() not in taken})
    return body


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@st.composite
def mutated_contexts(draw: st.DrawFn) -> bytes:
    """A valid context with one value anywhere replaced by arbitrary JSON (or a long string)."""
    body = draw(valid_contexts())
    path = draw(st.sampled_from(_paths(body)[1:]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = draw(json_values | long_values)
    return json.dumps(body).encode()


_header_names = st.sampled_from(
    [
        "Content-Type",
        "x-ms-dynamics-msg-size-exceeded",
        "x-ms-dynamics-entity-name",
        "x-ms-dynamics-request-name",
        "x-ms-dynamics-organization",
        "x-triage-key",
        "X-Triage-Key",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
arbitrary_headers = st.dictionaries(_header_names, st.text(max_size=60) | long_values, max_size=4)
arbitrary_bodies = st.one_of(
    st.binary(max_size=300),
    valid_contexts().map(lambda b: json.dumps(b).encode()),
    mutated_contexts(),
    json_values.map(lambda v: json.dumps(v).encode()),
    long_values.map(str.encode),
)


def _long(body: bytes, headers: dict[str, str]) -> list[str]:
    texts = [v for v in headers.values() if len(v) > ECHO_CHARS]
    texts.append(body.decode("utf-8", errors="replace"))
    return [t[: ECHO_CHARS + 1] for t in texts if len(t) > ECHO_CHARS]


def outcome(body: bytes, headers: dict[str, str]) -> DataverseEvent | InboundError:
    """The event, or the (checked) refusal: 4xx, bounded, echoing nothing long."""
    try:
        return parse_dataverse_event(body, headers, max_bytes=MAX_BYTES)
    except InboundError as caught:
        error = caught
    message = str(error)
    assert 400 <= error.status < 500 and error.code
    assert 0 < len(message) <= 300
    for echo in _long(body, headers):
        assert echo not in message
    return error


@given(valid_contexts(), st.sampled_from([{}, {"Content-Type": "application/json"}]))
def test_valid_contexts_are_accepted_in_any_casing(body, headers):
    event = outcome(json.dumps(body).encode(), headers)
    assert isinstance(event, DataverseEvent)
    lowered = {k.lower(): v for k, v in body.items()}
    assert event.record_id == lowered["primaryentityid"].lower()
    assert event.entity == "incident" and not event.needs_reread


@given(valid_contexts())
def test_size_exceeded_always_means_reread(body):
    event = outcome(json.dumps(body).encode(), {"x-ms-dynamics-msg-size-exceeded": "true"})
    assert isinstance(event, DataverseEvent) and event.needs_reread and event.attributes == {}


@given(arbitrary_bodies, arbitrary_headers)
def test_arbitrary_requests_never_raise_anything_else(body, headers):
    outcome(body, headers)


@given(mutated_contexts())
def test_mutated_contexts_never_raise_anything_else(body):
    outcome(body, {"Content-Type": "application/json"})


_keys = st.sampled_from(
    [
        WebhookKeys(keys=(KEY,)),
        WebhookKeys(keys=(OLD_KEY, KEY), header="x-hook-key"),
        WebhookKeys(keys=(KEY,), source="code"),
    ]
)


@given(_keys, arbitrary_headers, st.dictionaries(st.sampled_from(["code", "key"]), st.text()))
def test_requests_without_a_configured_key_are_never_accepted(keys, headers, query):
    present = set(headers.values()) | set(query.values())
    if any(k in present or f" {k}" in present for k in keys.keys):
        return  # hypothesis does not find the 28-character key by chance; keep it exact
    with pytest.raises(SignatureError) as caught:
        check_dataverse_auth(headers, query, keys)
    assert caught.value.status == 401 and len(str(caught.value)) <= 100
    assert all(k not in str(caught.value) for k in keys.keys)


@given(_keys, arbitrary_headers, st.sampled_from(["", " ", "\t"]))
def test_the_configured_key_in_the_configured_place_is_accepted(keys, headers, pad):
    place = {keys.header.upper(): pad + keys.keys[-1] + pad}
    headers = {k: v for k, v in headers.items() if k.lower() != keys.header}
    if keys.source == "header":
        check_dataverse_auth({**headers, **place}, {}, keys)
    else:
        check_dataverse_auth(headers, {"code": keys.keys[0]}, keys)
