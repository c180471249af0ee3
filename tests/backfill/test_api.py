"""The backfill HTTP API (triage/backfill/api.py): 202 with windows queued, 4xx JSON errors
that never echo more than 40 characters of the input, 404 for unknown runs, and a property:
no input makes the handler raise or answer a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.backfill.test_cli import kit
from triage.backfill.api import status_call, submit_call
from triage.backfill.spec import WindowJob

JSON = {"Content-Type": "application/json"}


def body(**values: object) -> bytes:
    return json.dumps({"platform": "servicenow", **values}).encode()


def test_submit_answers_202_with_the_run_id_and_queues_its_windows():
    service, _ = kit()
    reply = submit_call(body(since="2024-01-01", until="2024-01-04", dry_run=True), JSON, service)
    assert reply.status == 202
    run_id = reply.body["run_id"]
    assert reply.body == {"run_id": run_id, "windows": 3, "dry_run": True,
                          "status_url": f"/api/backfill/{run_id}"}  # fmt: skip
    jobs = [WindowJob.model_validate_json(m) for m in service.queue.messages]  # type: ignore[union-attr]
    assert [(j.run_id, j.window) for j in jobs] == [(run_id, 0), (run_id, 1), (run_id, 2)]
    spec = service.status(run_id).spec
    assert spec["origin"] == "http" and spec["dry_run"] is True and spec["system"] == "servicenow"


def test_status_of_a_run_and_404_for_an_unknown_one():
    service, _ = kit()
    run_id = submit_call(body(since="2024-01-01", until="2024-01-03"), JSON, service).body["run_id"]
    for message in list(service.queue.messages):  # type: ignore[union-attr]
        service.process(message)
    reply = status_call(run_id, service)
    assert reply.status == 200
    assert reply.body["state"] == "done" and reply.body["by_status"] == {"done": 2}
    assert reply.body["counts"] == {"scanned": 6, "filled": 5, "skipped": 1, "failed": 0}
    assert reply.body["filled"] == {"category": 5}
    assert reply.body["skipped"] == {"nothing to fill": 1}
    assert status_call("bf-unknown", service).status == 404
    bad = status_call("x" * 500, service)
    assert bad.status == 400 and "x" * 41 not in json.dumps(bad.body)


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code"),
    [
        (body(), {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (
            body(),
            {"Content-Type": "application/json; charset=latin-1"},
            415,
            "unsupported_media_type",
        ),
        (b"x" * 9000, JSON, 413, "too_large"),
        (b"{", JSON, 400, "malformed_json"),
        (b"\xff{}", JSON, 400, "malformed_json"),
        (b"[]", JSON, 400, "invalid_body"),
        (b"{}", JSON, 400, "invalid_body"),
        (body(platform="jira"), JSON, 400, "invalid_body"),
        (body(query="a=1", filter="b"), JSON, 400, "invalid_body"),
        (body(filter="statecode eq 0"), JSON, 400, "invalid_body"),
        (json.dumps({"platform": "dynamics", "query": "a=1"}).encode(), JSON, 400, "invalid_body"),
        (body(since="last tuesday"), JSON, 400, "invalid_body"),
        (body(since="2024-02-01", until="2024-01-01"), JSON, 400, "invalid_body"),
        (body(limit=0), JSON, 400, "invalid_body"),
        (body(limit="10"), JSON, 400, "invalid_body"),
        (body(dry_run="yes"), JSON, 400, "invalid_body"),
        (body(query="active=true^NQactive=false"), JSON, 400, "invalid_run"),
        (json.dumps({"platform": "dynamics"}).encode(), JSON, 400, "invalid_run"),
    ],
)
def test_bad_requests_get_a_4xx_json_error_and_queue_nothing(raw, headers, status, code):
    service, _ = kit()
    reply = submit_call(raw, headers, service)
    assert (reply.status, reply.body["error"]["code"]) == (status, code)
    assert reply.body["error"]["message"]
    assert service.queue.messages == []  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["platform", "query", "since", "by", "unknown_key"])
def test_errors_never_echo_more_than_40_characters_of_input(field):
    service, _ = kit()
    secret = "S3cr3t" * 400  # longer than any field allows
    data = {"platform": "servicenow", field: secret}
    if field == "unknown_key":
        data = {"platform": "servicenow", secret: 1}
    reply = submit_call(json.dumps(data).encode(), JSON, service)
    assert reply.status == 400
    assert secret[:41] not in json.dumps(reply.body)


def test_submit_without_storage_is_503_not_configured():
    service, _ = kit(queues=False)
    reply = submit_call(body(), JSON, service)
    assert reply.status == 503 and reply.body["error"]["code"] == "not_configured"


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=50))  # fmt: skip
_bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(
            ["platform", "query", "filter", "since", "until", "by", "limit", "dry_run", "x"]
        ),
        st.one_of(
            _values,
            st.sampled_from(
                [
                    "servicenow",
                    "dynamics",
                    "created",
                    "updated",
                    "2024-01-01",
                    "0001-01-01",
                    "9999-12-31T23:59:59",
                    "2024-01-01T00:00:00+14:00",
                ]
            ),
        ),
    ).map(lambda d: json.dumps(d).encode()),
)


@given(raw=_bodies, ctype=st.sampled_from(["application/json", "text/plain", ""]))
def test_no_input_makes_the_handler_raise_or_answer_5xx(raw, ctype):
    service, _ = kit()
    reply = submit_call(raw, {"Content-Type": ctype}, service)
    assert reply.status in (202, 400, 413, 415)
    assert len(json.dumps(reply.body)) < 1000
