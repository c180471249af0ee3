"""DataverseConnector.update_many against `responses`: the $batch requests and each outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from connectors.odata_batch import (
    BatchRequest,
    BatchResult,
    ChangeSet,
    build_batch_response,
    parse_batch_request,
)
from domain.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from tests.connectors.test_dataverse import BATCH, StubTokens, make

Override = Callable[[int, BatchRequest], BatchResult | None]


def guid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def update(n: int, etag: str | None = None) -> tuple[str, dict[str, str], str | None]:
    changes = {"prioritycode": str(n % 3 + 1), "new_summary": f"s{n}", "annotation": f"note {n}"}
    return guid(n), changes, etag if etag is not None else f'W/"{1000 + n}"'


@pytest.fixture
def dv(http_settings, clock):
    return make(http_settings, clock, StubTokens(), bypass_business_logic="CustomAsync")


def sent_sets(request: Any) -> list[ChangeSet]:
    items = parse_batch_request(request.body, request.headers["Content-Type"])
    assert all(isinstance(i, ChangeSet) for i in items)
    return [i for i in items if isinstance(i, ChangeSet)]


def case_of(operation: BatchRequest) -> int:
    """The case number of a PATCH (its URL) or a note (its binding)."""
    path = operation.url if operation.method == "PATCH" else operation.body[
        "objectid_incident@odata.bind"]  # fmt: skip
    return int(path.split("(")[1].split(")")[0].rsplit("-", 1)[1], 16)


def ok(operation: BatchRequest) -> BatchResult:
    if operation.method == "POST":
        return BatchResult(204, content_id=operation.content_id)
    n = case_of(operation)
    row = {
        "@odata.context": "x",
        "@odata.etag": f'W/"{5000 + n}"',
        "incidentid": guid(n),
        **{k: int(v) if k == "prioritycode" else v for k, v in operation.body.items()},
        "modifiedon": "2026-01-01T00:00:00Z",
        "_modifiedby_value": guid(999),
    }
    headers = {"Content-Type": "application/json", "ETag": row["@odata.etag"]}
    return BatchResult(200, headers=headers, body=json.dumps(row).encode(), content_id=operation.content_id)  # fmt: skip


def answering(override: Override | None = None, status: int = 200):
    """A responses callback answering every change set, ``override`` deciding a failed part."""

    def callback(request: Any) -> tuple[int, dict[str, str], bytes]:
        answers: list[list[BatchResult]] = []
        for change_set in sent_sets(request):
            parts: list[BatchResult] = []
            for operation in change_set.requests:
                failed = override(case_of(operation), operation) if override else None
                if failed is not None:
                    parts = [failed]  # a failed change set answers its failing part only
                    break
                parts.append(ok(operation))
            answers.append(parts)
        encoded = build_batch_response(answers)
        return status, {"Content-Type": encoded.content_type, "REQ_ID": "outer-1"}, encoded.body

    return callback


def error_part(status: int, operation: BatchRequest, **headers: str) -> BatchResult:
    body = json.dumps({"error": {"code": "0x1", "message": f"part {status}"}}).encode()
    return BatchResult(
        status, headers={"Content-Type": "application/json", **headers}, body=body,
        content_id=operation.content_id,
    )  # fmt: skip


def test_250_cases_are_3_batches_of_one_change_set_per_case(rsps, dv):
    for _ in range(3):
        rsps.add_callback(responses.POST, BATCH, callback=answering())
    updates = [update(n) for n in range(249)] + [(guid(249), {"prioritycode": "1"}, None)]
    outcomes = dv.update_many("incident", updates)

    assert len(rsps.calls) == 3  # ceil(250 / 100), and no re-read
    sizes = [len(sent_sets(c.request)) for c in rsps.calls]
    assert sizes == [100, 100, 50]
    for call in rsps.calls:
        assert call.request.headers["Prefer"] == "odata.continue-on-error"
        assert call.request.headers["MSCRM.BypassBusinessLogicExecution"] == "CustomAsync"
    change_sets = [s for c in rsps.calls for s in sent_sets(c.request)]
    content_ids: list[str | None] = []
    for n, change_set in enumerate(change_sets[:249]):
        patch, note = change_set.requests
        content_ids += [patch.content_id, note.content_id]
        assert patch.method == "PATCH" and urlsplit(patch.url).path == (
            f"/api/data/v9.2/incidents({guid(n)})"
        )
        assert patch.headers["If-Match"] == f'W/"{1000 + n}"'
        assert patch.headers["Prefer"] == "return=representation"
        assert parse_qs(urlsplit(patch.url).query)["$select"] == [
            "prioritycode,new_summary,modifiedon,_modifiedby_value"
        ]
        assert patch.body == {"prioritycode": n % 3 + 1, "new_summary": f"s{n}"}
        assert (note.method, note.url) == ("POST", "/api/data/v9.2/annotations")
        assert note.body == {
            "subject": "Ticket enrichment",
            "notetext": f"note {n}",
            "objectid_incident@odata.bind": f"/incidents({guid(n)})",
        }
    assert len(set(content_ids)) == len(content_ids)  # unique within the run
    (last,) = change_sets[249].requests  # values only: no note POST
    assert last.headers["If-Match"] == "*"  # no etag known: never create a case (update's rule)

    assert [o.record_id for o in outcomes] == [guid(n) for n in range(250)]
    assert all(o.ok and o.error is None for o in outcomes)
    first = outcomes[0].result()
    assert first.etag == 'W/"5000"' and first.record_id == guid(0)
    assert first.fields["prioritycode"] == 1 and first.fields["new_summary"] == "s0"
    assert "@odata.etag" not in first.fields and first.fields["modifiedon"]


def test_a_412_in_case_k_fails_only_case_k(rsps, dv):
    def stale(n: int, operation: BatchRequest) -> BatchResult | None:
        return error_part(412, operation) if n == 3 and operation.method == "PATCH" else None

    rsps.add_callback(responses.POST, BATCH, callback=answering(stale))
    outcomes = dv.update_many("incident", [update(n) for n in range(6)])
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    failed = outcomes[3]
    assert isinstance(failed.error, ConflictError) and failed.may_have_run is False
    assert failed.error.status_code == 412 and "PATCH /api/data/v9.2/incidents(" in str(
        failed.error
    )
    with pytest.raises(ConflictError):
        failed.result()


@pytest.mark.parametrize(
    ("status", "error", "method"),
    [
        (404, NotFoundError, "PATCH"),
        (400, RejectedError, "POST"),  # the note was refused: the PATCH rolled back with it
        (500, UnavailableError, "PATCH"),  # inside a change set: rolled back
        (403, AuthError, "PATCH"),
    ],
)
def test_a_failed_part_is_mapped_and_its_change_set_did_not_run(rsps, dv, status, error, method):
    def fail(n: int, operation: BatchRequest) -> BatchResult | None:
        return error_part(status, operation) if n == 1 and operation.method == method else None

    rsps.add_callback(responses.POST, BATCH, callback=answering(fail))
    outcomes = dv.update_many("incident", [update(n) for n in range(3)])
    assert isinstance(outcomes[1].error, error) and outcomes[1].may_have_run is False
    assert outcomes[1].error.request_id == "outer-1"  # the batch's id when the part has none
    assert outcomes[0].ok and outcomes[2].ok


def test_a_429_of_the_batch_fails_every_case_unsent_and_sends_nothing_more(rsps, dv, clock):
    rsps.post(
        BATCH,
        status=429,
        headers={"Retry-After": "600"},  # beyond max_retry_wait_s: not slept on
        json={"error": {"code": "0x80072322", "message": "Number of requests exceeded"}},
    )
    outcomes = dv.update_many("incident", [update(n) for n in range(5)], cases_per_batch=2)
    assert len(rsps.calls) == 1
    assert all(isinstance(o.error, ThrottledError) for o in outcomes)
    assert all(o.may_have_run is False for o in outcomes)
    assert outcomes[0].error.retry_after_s == 600  # type: ignore[union-attr]


def test_a_timeout_leaves_that_batch_unknown_and_later_ones_unsent(rsps, dv):
    rsps.add_callback(responses.POST, BATCH, callback=answering())
    rsps.post(BATCH, body=requests.exceptions.ReadTimeout("read timed out"))
    outcomes = dv.update_many("incident", [update(n) for n in range(5)], cases_per_batch=2)
    assert len(rsps.calls) == 2  # a write is not re-sent after a timeout, nor the rest sent
    assert [o.ok for o in outcomes] == [True, True, False, False, False]
    assert all(isinstance(o.error, UnavailableError) for o in outcomes[2:])
    assert [o.may_have_run for o in outcomes[2:]] == [True, True, False]


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 503, "json": {"error": {"code": "", "message": "busy"}}},
        {"status": 200, "body": "<html>proxy</html>", "content_type": "text/html"},
    ],
)
def test_a_5xx_or_unreadable_answer_is_unknown_for_that_batch(rsps, dv, answer):
    rsps.post(BATCH, **answer)
    outcomes = dv.update_many("incident", [update(n) for n in range(3)], cases_per_batch=2)
    assert len(rsps.calls) == 1
    assert [o.may_have_run for o in outcomes] == [True, True, False]
    assert all(isinstance(o.error, UnavailableError) for o in outcomes)


def test_401_twice_is_auth_for_all_and_nothing_ran(rsps, dv):
    for _ in range(2):
        rsps.post(BATCH, status=401, json={"error": {"code": "", "message": "no"}})
    outcomes = dv.update_many("incident", [update(n) for n in range(3)], cases_per_batch=2)
    assert len(rsps.calls) == 2  # the batch, and once more with a fresh token
    assert all(isinstance(o.error, AuthError) and not o.may_have_run for o in outcomes)


def test_a_throttled_part_stops_later_batches(rsps, dv):
    def throttle(n: int, operation: BatchRequest) -> BatchResult | None:
        return error_part(429, operation, **{"Retry-After": "5"}) if n == 1 else None

    rsps.add_callback(responses.POST, BATCH, callback=answering(throttle))
    outcomes = dv.update_many("incident", [update(n) for n in range(4)], cases_per_batch=2)
    assert len(rsps.calls) == 1
    assert outcomes[0].ok
    assert all(isinstance(o.error, ThrottledError) and not o.may_have_run for o in outcomes[1:])


def test_a_batch_stopped_at_its_first_failure_did_not_run_the_rest(rsps, dv):
    """Continue-on-error not honoured: 400 with the answers up to the failing change set."""

    def callback(request: Any) -> tuple[int, dict[str, str], bytes]:
        first, second, _third = sent_sets(request)
        answers = [[ok(o) for o in first.requests], [error_part(412, second.requests[0])]]
        encoded = build_batch_response(answers)
        return 400, {"Content-Type": encoded.content_type}, encoded.body

    rsps.add_callback(responses.POST, BATCH, callback=callback)
    outcomes = dv.update_many("incident", [update(n) for n in range(3)])
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, ConflictError) and not outcomes[1].may_have_run
    assert isinstance(outcomes[2].error, UnavailableError) and not outcomes[2].may_have_run


def test_a_note_only_change_set_has_no_patch_and_an_empty_record(rsps, dv):
    rsps.add_callback(responses.POST, BATCH, callback=answering())
    [outcome] = dv.update_many("incident", [(guid(7), {"annotation": "only a note"}, 'W/"1"')])
    ((note,),) = (s.requests for s in sent_sets(rsps.calls[0].request))
    assert note.method == "POST" and note.body["notetext"] == "only a note"
    record = outcome.result()
    assert record.record_id == guid(7) and dict(record.fields) == {} and record.etag is None


@pytest.mark.parametrize(
    "bad",
    [
        (guid(1), {"prioritycode": "High"}, None),
        (guid(1), {"unknown_column": "x"}, None),
        ("not-a-guid", {"prioritycode": "1"}, None),
        (guid(1), {}, None),
    ],
)
def test_bad_updates_are_refused_before_any_request(rsps, dv, bad):
    with pytest.raises(RejectedError):
        dv.update_many("incident", [update(0), bad])
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("size", [0, 501])
def test_cases_per_batch_is_bounded_by_the_batch_limit(rsps, dv, size):
    with pytest.raises(RejectedError):
        dv.update_many("incident", [update(0)], cases_per_batch=size)


def test_no_updates_send_nothing(rsps, dv):
    assert dv.update_many("incident", []) == []
