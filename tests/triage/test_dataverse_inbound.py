"""Dataverse webhook: key authentication and RemoteExecutionContext parsing."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.errors import ConfigError, InboundError, SignatureError
from triage.dataverse_inbound import (
    DataverseEvent,
    WebhookKeys,
    check_dataverse_auth,
    is_own_event,
    parse_dataverse_event,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
MAX = 512 * 1024
KEY = "k3y-0123456789abcdef"
OLD_KEY = "old-0123456789abcdef"
CASE = "5e1b6a1c-0d3e-4f5a-9b8c-7d6e5f4a3b2c"
USER = "0f0e0d0c-0b0a-4909-8807-060504030201"
APP_USER = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
SUBJECT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
OPTION = "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts"
REFERENCE = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"


def context(**overrides: Any) -> dict[str, Any]:
    """A small hand-written Create-incident context (no ../shared needed)."""
    body: dict[str, Any] = {
        "CorrelationId": "22222222-2222-4222-8222-222222222222",
        "Depth": 1,
        "InitiatingUserId": USER,
        "InputParameters": [
            {
                "key": "Target",
                "value": {
                    "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                    "Attributes": [
                        {"key": "title", "value": "Printer on 3rd floor jams"},
                        {"key": "description", "value": "Paper jam error 49 since Monday."},
                        {"key": "prioritycode", "value": {"__type": OPTION, "Value": 1}},
                        {
                            "key": "subjectid",
                            "value": {
                                "__type": REFERENCE,
                                "Id": SUBJECT.upper(),
                                "KeyAttributes": [],
                                "LogicalName": "subject",
                                "Name": None,
                                "RowVersion": None,
                            },
                        },
                        {"key": "createdon", "value": "/Date(1717171717000)/"},
                        {"key": "msdyn_copilotengaged", "value": False},
                    ],
                    "Id": CASE,
                    "LogicalName": "incident",
                },
            }
        ],
        "MessageName": "Create",
        "OperationCreatedOn": "/Date(1506409448000-0700)/",
        "OrganizationName": "contoso",
        "PrimaryEntityId": CASE,
        "PrimaryEntityName": "incident",
        "Stage": 40,
        "UserId": USER,
    }
    body.update(overrides)
    return body


def parse(body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> DataverseEvent:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_dataverse_event(
        raw, headers or {"Content-Type": "application/json"}, max_bytes=MAX
    )


def refused(body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> InboundError:
    with pytest.raises(InboundError) as caught:
        parse(body, headers)
    assert 400 <= caught.value.status < 500
    assert len(str(caught.value)) <= 300
    return caught.value


# --- authentication ---------------------------------------------------------------------------
HEADER_KEYS = WebhookKeys(keys=(KEY,))
CODE_KEYS = WebhookKeys(keys=(KEY,), source="code")


@pytest.mark.parametrize("name", ["x-triage-key", "X-Triage-Key", "X-TRIAGE-KEY"])
def test_the_key_header_is_found_in_any_case(name):
    check_dataverse_auth({name: KEY}, {}, HEADER_KEYS)


def test_code_mode_reads_the_query_parameter_only():
    check_dataverse_auth({}, {"code": KEY}, CODE_KEYS)
    with pytest.raises(SignatureError, match="code query parameter"):
        check_dataverse_auth({"x-triage-key": KEY}, {}, CODE_KEYS)
    with pytest.raises(SignatureError, match="x-triage-key header"):
        check_dataverse_auth({}, {"code": KEY}, HEADER_KEYS)


def test_rotation_accepts_the_old_and_the_new_key_and_nothing_else():
    keys = WebhookKeys(keys=(OLD_KEY, KEY), header="x-hook-key")
    check_dataverse_auth({"x-hook-key": OLD_KEY}, {}, keys)
    check_dataverse_auth({"x-hook-key": KEY}, {}, keys)
    with pytest.raises(SignatureError):
        check_dataverse_auth({"x-hook-key": "new-0123456789abcdef"}, {}, keys)


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "missing"),
        ({"x-triage-key": ""}, "missing"),
        ({"x-triage-key": "   "}, "missing"),
        ({"x-triage-key": KEY[:-1]}, "does not match"),
        ({"x-triage-key": KEY + "x"}, "does not match"),
        ({"x-triage-key": KEY.upper()}, "does not match"),
        ({"x-triage-key": f"{KEY},{KEY}"}, "does not match"),
        ({"x-triage-key": "\udcff" * 5000}, "does not match"),
        ({"x-other-key": KEY}, "missing"),
    ],
)
def test_wrong_or_missing_keys_are_401_and_never_echoed(headers, match):
    with pytest.raises(SignatureError, match=match) as caught:
        check_dataverse_auth(headers, {"code": KEY}, HEADER_KEYS)
    assert caught.value.status == 401
    assert KEY not in str(caught.value) and len(str(caught.value)) <= 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keys": ()},
        {"keys": ("short",)},
        {"keys": ("has a space 0123456789",)},
        {"keys": ("x" * 2049,)},
        {"keys": (KEY,), "header": "bad header"},
        {"keys": (KEY,), "source": "query"},
    ],
)
def test_bad_key_configuration_is_a_config_error_without_the_key(kwargs):
    with pytest.raises(ConfigError) as caught:
        WebhookKeys(**kwargs)
    assert "0123456789" not in str(caught.value)


# --- parsing ----------------------------------------------------------------------------------
def test_hand_written_create_is_parsed():
    event = parse(context())
    assert (event.record_id, event.entity, event.message) == (CASE, "incident", "Create")
    assert (event.user_id, event.initiating_user_id, event.depth) == (USER, USER, 1)
    assert event.correlation_id == "22222222-2222-4222-8222-222222222222"
    assert event.operation_created_on == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
    assert event.needs_reread is False
    assert event.attributes == {
        "title": "Printer on 3rd floor jams",
        "description": "Paper jam error 49 since Monday.",
        "prioritycode": 1,
        "_subjectid_value": SUBJECT,
        "_subjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "subject",
        "createdon": datetime(2024, 5, 31, 16, 8, 37, tzinfo=UTC),
        "msdyn_copilotengaged": False,
    }


def test_the_event_is_frozen():
    event = parse(context())
    with pytest.raises(ValueError, match="frozen"):
        event.record_id = USER  # type: ignore[misc]


def recase(value: Any, how: str) -> Any:
    """Every key of every object in ``how`` casing (upper, lower, swapped)."""
    if isinstance(value, list):
        return [recase(v, how) for v in value]
    if isinstance(value, dict):
        return {getattr(k, how)(): recase(v, how) for k, v in value.items()}
    return value


@pytest.mark.parametrize("how", ["lower", "upper", "swapcase", "title"])
def test_keys_are_case_insensitive_everywhere(how):
    event = parse(recase(context(), how))
    assert event == parse(context())


def test_capitalised_key_value_pairs_are_read():
    body = context()
    target = body["InputParameters"][0]
    body["InputParameters"] = [{"Key": target["key"], "Value": target["value"]}]
    assert parse(body).attributes["prioritycode"] == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/Date(0)/", datetime(1970, 1, 1, tzinfo=UTC)),
        ("/Date(1506409448000-0700)/", datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)),
        ("/Date(1506409448000+0200)/", datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)),
        ("/Date(-86400000)/", datetime(1969, 12, 31, tzinfo=UTC)),
    ],
)
def test_dates_are_utc_milliseconds_whatever_the_offset(raw, expected):
    assert parse(context(OperationCreatedOn=raw)).operation_created_on == expected


def test_escaped_slashes_of_the_wire_format_decode_to_dates():
    raw = json.dumps(context()).replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"')
    assert "\\/Date(" in raw
    assert parse(raw.encode()).operation_created_on == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)


def test_a_text_that_only_looks_like_a_date_stays_text():
    body = context()
    body["InputParameters"][0]["value"]["Attributes"] = [
        {"key": "title", "value": "/Date(abc)/ fails"}
    ]
    assert parse(body).attributes == {"title": "/Date(abc)/ fails"}


def test_money_and_unknown_values():
    body = context()
    body["InputParameters"][0]["value"]["Attributes"] = [
        {"key": "new_cost", "value": {"__type": "Money:http://x", "Value": 12}},
        {"key": "new_tags", "value": ["a", "b"]},
        {"key": "new_blob", "value": {"__type": "OptionSetValueCollection:x", "Value": [1]}},
        {"key": "new_plain", "value": {"a": 1}},
    ]
    assert parse(body).attributes == {"new_cost": 12.0}


@pytest.mark.parametrize(
    "headers",
    [
        {SIZE: "true"}
        for SIZE in ("x-ms-dynamics-msg-size-exceeded", "X-MS-Dynamics-Msg-Size-Exceeded")
    ],
)
def test_size_exceeded_events_are_valid_and_need_a_reread(headers):
    body = context(InputParameters=None, PostEntityImages=None)
    del body["InputParameters"]
    event = parse(body, {**headers, "Content-Type": "application/json"})
    assert event.needs_reread and event.attributes == {} and event.record_id == CASE
    # The header alone decides: parameters still present are not trusted either.
    assert parse(context(), headers).needs_reread


def test_a_context_without_a_target_needs_a_reread():
    assert parse(context(InputParameters=[])).needs_reread


def test_own_user_events_are_recognised():
    event = parse(context(UserId=APP_USER.upper()))
    assert is_own_event(event, APP_USER)
    assert is_own_event(event, "{" + APP_USER.upper() + "}")
    assert is_own_event(parse(context(InitiatingUserId=APP_USER)), APP_USER)
    assert not is_own_event(parse(context()), APP_USER)
    assert not is_own_event(event, None)


def test_allowed_entities_and_messages_are_configurable():
    body = json.dumps(context(PrimaryEntityName="contact", MessageName="Update")).encode()
    body = body.replace(b'"LogicalName": "incident"', b'"LogicalName": "contact"')
    event = parse_dataverse_event(
        body, {}, max_bytes=MAX, allowed_entities=["contact"], allowed_messages=["Update"]
    )
    assert (event.entity, event.message) == ("contact", "Update")


@pytest.mark.parametrize(
    ("name", "entity", "message"),
    [
        ("dataverse_webhook_create_incident.SYNTHETIC.json", "incident", "Create"),
        ("dataverse_webhook_update_contact_msdocs.json", "contact", "Update"),
    ],
)
def test_shared_samples(name, entity, message):
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not checked out")
    event = parse_dataverse_event(
        path.read_bytes(),
        {"x-ms-dynamics-entity-name": entity, "x-ms-dynamics-request-name": message},
        max_bytes=MAX,
        allowed_entities=[entity],
        allowed_messages=[message],
    )
    assert event.record_id == json.loads(path.read_bytes())["PrimaryEntityId"]
    assert event.depth == 1 and not event.needs_reread
    assert "_modifiedby_value" in event.attributes or event.attributes["prioritycode"] == 2


# --- every malformed form is a bounded 4xx ----------------------------------------------------
def target_with(*attributes: Any) -> dict[str, Any]:
    body = context()
    body["InputParameters"][0]["value"]["Attributes"] = list(attributes)
    return body


@pytest.mark.parametrize(
    ("body", "code", "match"),
    [
        (context(MessageName="Update"), "message_not_allowed", "not handled"),
        (context(MessageName=None), "invalid_body", "MessageName"),
        (context(PrimaryEntityName="account"), "table_not_allowed", "not enabled"),
        (context(PrimaryEntityName=["incident"]), "invalid_body", "PrimaryEntityName"),
        (context(PrimaryEntityId="not-a-guid"), "invalid_body", "PrimaryEntityId"),
        (context(PrimaryEntityId="0" * 32), "invalid_body", "PrimaryEntityId"),
        (context(PrimaryEntityId="00000000-0000-0000-0000-000000000000"), "invalid_body", "empty"),
        (context(UserId=None), "invalid_body", "UserId"),
        (context(InitiatingUserId=7), "invalid_body", "InitiatingUserId"),
        (context(CorrelationId="x"), "invalid_body", "CorrelationId"),
        (context(Depth="1"), "invalid_body", "Depth"),
        (context(Depth=True), "invalid_body", "Depth"),
        (context(Depth=-1), "invalid_body", "Depth"),
        (context(Depth=2**31), "invalid_body", "Depth"),
        (context(OperationCreatedOn="2024-01-01"), "invalid_body", "Date"),
        (context(OperationCreatedOn="/Date(999999999999999)/"), "invalid_body", "range"),
        (context(InputParameters={"Target": {}}), "invalid_body", "InputParameters"),
        (context(InputParameters=[["Target", {}]]), "invalid_body", "InputParameters"),
        (context(InputParameters=[{"value": 1}]), "invalid_body", "valid key"),
        (context(InputParameters=[{"key": "Target", "value": []}]), "invalid_body", "Target"),
        (
            context(InputParameters=[{"key": "Target", "value": {"LogicalName": "account"}}]),
            "invalid_body",
            "LogicalName",
        ),
        (
            context(InputParameters=[{"key": "Target", "value": {"Id": USER}}]),
            "invalid_body",
            "Target.Id",
        ),
        (
            target_with({"key": "prioritycode", "value": {"__type": OPTION, "Value": "1"}}),
            "invalid_body",
            "OptionSetValue",
        ),
        (
            target_with({"key": "prioritycode", "value": {"__type": OPTION, "Value": 2**40}}),
            "invalid_body",
            "OptionSetValue",
        ),
        (
            target_with({"key": "subjectid", "value": {"__type": REFERENCE, "Id": "x"}}),
            "invalid_body",
            "subjectid",
        ),
        (
            target_with({"key": "bad key!", "value": 1}),
            "invalid_body",
            "valid key",
        ),
        (
            target_with({"key": "title", "value": "a"}, {"key": "Title", "value": "b"}),
            "invalid_body",
            "twice",
        ),
        (
            target_with({"key": "title", "key2": 1, "Key": "x", "value": "a"}),
            "invalid_body",
            "twice",
        ),
        (target_with(*[{"key": f"a{i}", "value": i} for i in range(1001)]), "invalid_body", "1000"),
        ({**context(), "primaryentityid": USER}, "invalid_body", "twice"),
        ([context()], "invalid_body", "JSON object"),
    ],
)
def test_malformed_contexts_name_the_problem(body, code, match):
    error = refused(body if isinstance(body, dict) else json.dumps(body).encode())
    assert (error.status, error.code) == (400, code)
    assert match in str(error)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xef\xbb\xbf" + json.dumps(context()).encode(), "byte order mark"),
        (json.dumps(context()).encode("utf-16"), "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"Depth": ' + b"9" * 5000 + b"}", "longer than"),
        (b'{"Depth": NaN}', "NaN"),
    ],
)
def test_malformed_json_is_a_bounded_400(raw, match):
    error = refused(raw)
    assert (error.status, error.code) == (400, "malformed_json")
    assert match in str(error)


def test_oversize_body_is_413_before_parsing():
    with pytest.raises(InboundError) as caught:
        parse_dataverse_event(b"{" * 2000, {}, max_bytes=1000)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/json; charset=utf-16", "", "application/xml"]
)
def test_other_content_types_are_415(ctype):
    assert refused(context(), {"Content-Type": ctype}).status == 415


def test_a_missing_content_type_is_accepted():
    assert parse(context(), {"x-ms-dynamics-organization": "contoso"}).organization == "contoso"


@pytest.mark.parametrize(
    "headers",
    [{"x-ms-dynamics-entity-name": "account"}, {"x-ms-dynamics-request-name": "Delete"}],
)
def test_headers_that_disagree_with_the_body_are_refused(headers):
    assert "disagrees" in str(refused(context(), headers))


def test_long_values_are_never_echoed():
    huge = "A" * 5000
    for body in (
        context(MessageName=huge),
        context(PrimaryEntityName=huge),
        target_with({"key": huge, "value": 1}),
        {**context(), huge: 1, huge.lower(): 2},
    ):
        message = str(refused(body))
        assert "A" * 41 not in message


def test_nested_parent_contexts_within_the_depth_cap_are_accepted():
    body = context()
    for _ in range(2):
        body = context(ParentContext=copy.deepcopy(body))
    assert parse(body).record_id == CASE
