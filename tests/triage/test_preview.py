"""POST /api/preview's logic: what would be written and why, per platform, touching no platform."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.queue import InMemoryJobQueue
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
from domain.models import Ticket
from domain.settings import Settings
from enrichers import default_enrichers
from triage.pipeline import Pipeline
from triage.preview import MAX_PREVIEW_BYTES, explain_ticket, preview_call
from triage.service import Service

JSON_HEADERS = {"Content-Type": "application/json"}
OUTAGE = "Hej, kassen er nede i hele butikken siden i morges. Det haster!"
FIELD_KEYS = {"value", "confidence", "source", "would_write", "action", "reason", "why"}


class RefusingConnector:
    """A connector that fails the test on any use: a preview must touch no platform."""

    system = "servicenow"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the preview used the connector ({name})")


def make_service(*, dynamics: bool = True) -> Service:
    mapping = load_mapping()
    pipe = Pipeline(RefusingConnector(), mapping, default_enrichers(mapping))  # type: ignore[arg-type]
    others = {}
    if dynamics:
        dv = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
        others["dataverse"] = Pipeline(RefusingConnector(), dv, default_enrichers(dv))  # type: ignore[arg-type]
    return Service(Settings(), pipe, InMemoryJobQueue(), InMemoryJobQueue(), others=others)


SERVICE = make_service()


def call(body: Any, headers: dict[str, str] | None = None, service: Service = SERVICE):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = preview_call(
        raw, headers if headers is not None else JSON_HEADERS, service.pipeline_for
    )
    return reply.status, reply.body


def test_servicenow_preview_answers_every_field_with_what_would_be_written_and_why():
    status, body = call({"title": "", "description": OUTAGE, "platform": "servicenow"})
    assert status == 200
    assert body["platform"] == "servicenow"
    assert body["mapping_version"] == SERVICE.pipeline.mapping.fingerprint
    fields = body["fields"]
    assert list(fields)[:6] == [
        "category",
        "subcategory",
        "impact",
        "urgency",
        "priority",
        "summary",
    ]
    assert all(set(f) == FIELD_KEYS for f in fields.values())
    assert fields["urgency"]["value"] == "high" and fields["urgency"]["would_write"] is True
    assert "haster" in fields["urgency"]["reason"]
    # ServiceNow computes priority: shown, not written, and the policy says why.
    assert fields["priority"]["value"] == "critical" and fields["priority"]["would_write"] is False
    assert fields["priority"]["why"] == "not written back (mapping)"
    assert fields["category"]["value"] is None and fields["category"]["reason"]
    assert body["would_write"] == sorted(f for f, v in fields.items() if v["would_write"])
    assert "summary" in body["would_write"]  # no title: the summary lands in short_description


def test_the_answer_is_the_same_explanation_as_enrich_jsonl():
    mapping = SERVICE.pipeline.mapping
    ticket = Ticket(
        system="servicenow",
        record_id="preview",
        description=OUTAGE,
        current=dict.fromkeys(
            ("category", "subcategory", "impact", "urgency", "priority", "summary")
        ),
    )
    _, body = call({"description": OUTAGE, "platform": "servicenow"})
    assert body["fields"] == explain_ticket(ticket, SERVICE.pipeline.enrichers, mapping)


def test_dynamics_preview_uses_the_dataverse_mapping():
    _, sn = call({"title": "Kasser nede", "description": OUTAGE, "platform": "servicenow"})
    status, dv = call({"title": "Kasser nede", "description": OUTAGE, "platform": "dynamics"})
    assert status == 200
    assert dv["mapping_version"] != sn["mapping_version"]
    # Dynamics does not derive priority, so we write it; a Case has no impact/urgency column.
    assert dv["fields"]["priority"]["would_write"] is True
    assert sn["fields"]["priority"]["would_write"] is False
    assert dv["fields"]["impact"]["value"] == "high" and not dv["fields"]["impact"]["would_write"]
    # ServiceNow's summary lands in the title field, which this ticket already has.
    assert sn["fields"]["summary"]["would_write"] is False
    assert "already set" in sn["fields"]["summary"]["why"]


def test_current_values_are_never_overwritten():
    body = {"description": OUTAGE, "platform": "servicenow", "current": {"urgency": "low"}}
    _, answer = call(body)
    urgency = answer["fields"]["urgency"]
    assert urgency["value"] == "high" and urgency["would_write"] is False
    assert "already set" in urgency["why"]
    # Priority is derived from the person's urgency, not ours.
    assert "urgency low (person)" in answer["fields"]["priority"]["reason"]


def test_a_platform_that_is_not_configured_is_a_4xx():
    status, body = call(
        {"title": "VPN", "platform": "dynamics"}, service=make_service(dynamics=False)
    )
    assert status == 400
    assert body["error"]["code"] == "not_configured"


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code", "words"),
    [
        (b"x" * (MAX_PREVIEW_BYTES + 1), JSON_HEADERS, 413, "too_large", "limit"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "application/json"),
        (b"{}", {}, 415, "unsupported_media_type", "application/json"),
        (b"{}", {"Content-Type": "application/json; charset=latin-1"}, 415, "unsupported", "UTF-8"),
        (b"\xef\xbb\xbf{}", JSON_HEADERS, 400, "malformed_json", "byte order mark"),
        (b'{"title": "\xff"}', JSON_HEADERS, 400, "malformed_json", "not UTF-8"),
        (b"{", JSON_HEADERS, 400, "malformed_json", "not valid JSON"),
        (b'{"title": NaN, "platform": "servicenow"}', JSON_HEADERS, 400, "malformed_json", "NaN"),
        (b"[1]", JSON_HEADERS, 400, "invalid_body", "JSON object"),
        (b'{"title": "x"}', JSON_HEADERS, 400, "invalid_body", "platform"),
        (b'{"title": "x", "platform": "jira"}', JSON_HEADERS, 400, "invalid_body", "platform"),
        (b'{"title": 5, "platform": "servicenow"}', JSON_HEADERS, 400, "invalid_body", "title"),
        (b'{"title": "x", "platform": "servicenow", "sys_id": "a"}', JSON_HEADERS, 400,
         "invalid_body", "sys_id"),
        (b'{"title": "x", "platform": "servicenow", "current": {"Bad Key": "a"}}', JSON_HEADERS,
         400, "invalid_body", "current"),
        (b'{"title": "x", "platform": "servicenow", "current": {"colour": "a"}}', JSON_HEADERS,
         400, "invalid_body", "current.colour: not a field of the servicenow mapping"),
        (b'{"title": " ", "platform": "servicenow"}', JSON_HEADERS, 400, "invalid_body",
         "title or a description"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_problem(raw, headers, status, code, words):
    reply = preview_call(raw, headers, SERVICE.pipeline_for)
    assert reply.status == status
    assert reply.body["error"]["code"].startswith(code)
    assert words in reply.body["error"]["message"]
    assert len(json.dumps(reply.body)) <= 500


def test_refusals_never_echo_large_input():
    secret = "S3CRET-" + "z" * 500
    for body in (
        {"title": secret + "z" * 1000, "platform": "servicenow"},  # longer than 1,000
        {"title": "x", "platform": secret},
        {"title": "x", "platform": "servicenow", secret: 1},
        {"title": "x", "platform": "servicenow", "current": {"category": secret}},
        {"title": "x", "platform": "servicenow", "current": {"a" * 60: "b"}},
    ):
        reply = preview_call(json.dumps(body).encode(), JSON_HEADERS, SERVICE.pipeline_for)
        text = json.dumps(reply.body)
        assert reply.status == 400
        assert "z" * 41 not in text and "a" * 41 not in text
        assert len(text) <= 500
