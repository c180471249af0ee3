"""ServiceNowBatch / ServiceNowConnector.update_many: exact Batch API requests and their mapping."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr

from connectors._http import HttpClient
from connectors.servicenow import ServiceNowConnector
from connectors.servicenow_batch import BATCH_PATH, ServiceNowBatch
from domain.errors import (
    AuthError,
    NotFoundError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from domain.settings import ServiceNowSettings
from tests.connectors.conftest import INSTANCE

BATCH_URL = f"{INSTANCE}{BATCH_PATH}"
FIELDS_QS = (
    "sysparm_display_value=false&sysparm_exclude_reference_link=true"
    "&sysparm_fields=impact%2Cwork_notes%2Csys_id%2Csys_updated_by%2Csys_updated_on%2Csys_mod_count"
)
JSON_HEADERS = [
    {"name": "Accept", "value": "application/json"},
    {"name": "Content-Type", "value": "application/json"},
]


def sid(n: int) -> str:
    return f"{n:032x}"


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def ok(sub_id: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": sub_id,
        "status_code": 200,
        "status_text": "OK",
        "headers": [{"name": "X-Transaction-ID", "value": f"tx{sub_id}"}],
        "body": b64({"result": record}),
        "execution_time": 7,
    }


def failed(sub_id: str, status: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    error = {"error": {"message": "No Record found", "detail": "ACL"}, "status": "failure"}
    return {
        "id": sub_id,
        "status_code": status,
        "status_text": "",
        "headers": [{"name": k, "value": v} for k, v in (headers or {}).items()],
        "body": b64(error),
        "execution_time": 1,
    }


def answer(serviced: list[dict[str, Any]], unserviced: list[str] = ()) -> dict[str, Any]:
    return {
        "batch_request_id": "ignored",
        "serviced_requests": serviced,
        "unserviced_requests": list(unserviced),
    }


def sent(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


def sent_ids(call: Any) -> list[str]:
    return [r["id"] for r in sent(call)["rest_requests"]]


@pytest.fixture
def sn(http_settings, clock) -> ServiceNowConnector:
    settings = ServiceNowSettings(
        instance_url=INSTANCE, auth="basic", username="svc", password=SecretStr("pw")
    )
    return ServiceNowConnector(
        settings, http_settings, sleep=clock.sleep, now=clock.now, monotonic=clock.monotonic
    )


def changes(n: int) -> dict[str, str]:
    return {"impact": str(n % 3 + 1), "work_notes": f"note {n}"}


def test_one_batch_request_carries_each_patch_in_the_documented_shape(rsps, sn):
    rsps.post(BATCH_URL, json=answer([ok("0", {"sys_id": sid(1), "impact": "2"})]))
    [outcome] = sn.update_many("incident", [(sid(1), {"impact": "2", "work_notes": "hi"})])
    call = rsps.calls[0]
    assert call.request.headers["Content-Type"] == "application/json"
    assert call.request.headers["Accept"] == "application/json"
    assert call.request.headers["Authorization"].startswith("Basic ")
    payload = sent(call)
    assert isinstance(payload["batch_request_id"], str) and payload["batch_request_id"]
    [sub] = payload["rest_requests"]
    assert sub["id"] == "0"
    assert sub["method"] == "PATCH"
    assert sub["url"] == f"/api/now/table/incident/{sid(1)}?{FIELDS_QS}"
    assert sorted(sub["headers"], key=lambda h: h["name"]) == JSON_HEADERS
    assert json.loads(base64.b64decode(sub["body"])) == {"impact": "2", "work_notes": "hi"}
    assert sub["exclude_response_headers"] is False
    assert outcome.ok and outcome.error is None
    assert (outcome.record.table, outcome.record.record_id) == ("incident", sid(1))
    assert dict(outcome.result().fields) == {"sys_id": sid(1), "impact": "2"}


def test_updates_are_chunked_by_batch_size_and_outcomes_keep_the_callers_order(rsps, sn):
    updates = [(sid(n), changes(n)) for n in range(5)]
    rsps.post(BATCH_URL, json=answer([ok(str(n), {"sys_id": sid(n)}) for n in (1, 0)]))
    rsps.post(BATCH_URL, json=answer([ok(str(n), {"sys_id": sid(n)}) for n in (2, 3)]))
    rsps.post(BATCH_URL, json=answer([ok("4", {"sys_id": sid(4)})]))
    outcomes = sn.update_many("incident", updates, batch_size=2)
    assert [sent_ids(c) for c in rsps.calls] == [["0", "1"], ["2", "3"], ["4"]]
    assert [o.record.fields["sys_id"] for o in outcomes] == [sid(n) for n in range(5)]


def test_sub_request_errors_map_like_update_does_and_stay_with_their_record(rsps, sn):
    updates = [(sid(n), changes(n)) for n in range(5)]
    rsps.post(
        BATCH_URL,
        json=answer(
            [
                ok("0", {"sys_id": sid(0)}),
                failed("1", 404, {"X-Transaction-ID": "abc123"}),
                failed("2", 429, {"Retry-After": "42"}),
                failed("3", 503),
                failed("4", 403),
            ]
        ),
    )
    outcomes = sn.update_many("incident", updates)
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, NotFoundError)
    assert outcomes[1].error.request_id == "abc123"
    assert f"/api/now/table/incident/{sid(1)}" in str(outcomes[1].error)
    assert isinstance(outcomes[2].error, ThrottledError)
    assert outcomes[2].error.retry_after_s == 42
    assert isinstance(outcomes[3].error, UnavailableError)
    assert isinstance(outcomes[4].error, AuthError)
    # 429 and 403 are refused before processing; a 404 or a 503 may have done something.
    assert [o.may_have_run for o in outcomes[1:]] == [True, False, True, False]
    with pytest.raises(NotFoundError):
        outcomes[1].result()
    assert len(rsps.calls) == 1  # a serviced PATCH is never sent again, whatever its status


def test_unserviced_requests_are_re_sent_with_backoff_and_never_the_serviced_ones(rsps, sn, clock):
    updates = [(sid(n), changes(n)) for n in range(4)]
    rsps.post(BATCH_URL, json=answer([ok("0", {"sys_id": sid(0)})], ["1", "2", "3"]))
    rsps.post(BATCH_URL, json=answer([ok("1", {"sys_id": sid(1)})], ["2", "3"]))
    rsps.post(BATCH_URL, json=answer([ok("2", {"sys_id": sid(2)}), ok("3", {"sys_id": sid(3)})]))
    outcomes = sn.update_many("incident", updates)
    assert [sent_ids(c) for c in rsps.calls] == [["0", "1", "2", "3"], ["1", "2", "3"], ["2", "3"]]
    first, second = (sent(c) for c in rsps.calls[:2])
    assert first["batch_request_id"] != second["batch_request_id"]
    assert second["rest_requests"][0] == first["rest_requests"][1]  # the very same PATCH
    assert all(o.ok for o in outcomes)
    assert clock.waits == [1.0, 2.0]


def test_requests_still_unserviced_after_the_last_send_did_not_run(rsps, sn):
    for _ in range(3):
        rsps.post(BATCH_URL, json=answer([], ["0"]))
    [outcome] = sn.update_many("incident", [(sid(0), changes(0))])
    assert isinstance(outcome.error, UnavailableError)
    assert outcome.may_have_run is False
    assert "3 sends" in str(outcome.error)


def test_a_request_the_answer_does_not_mention_may_have_run(rsps, sn):
    rsps.post(BATCH_URL, json=answer([ok("0", {"sys_id": sid(0)})]))
    outcomes = sn.update_many("incident", [(sid(0), changes(0)), (sid(1), changes(1))])
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, UnavailableError)
    assert outcomes[1].may_have_run is True
    assert len(rsps.calls) == 1


def test_outer_5xx_is_not_retried_and_stops_the_remaining_chunks(rsps, sn):
    rsps.post(BATCH_URL, status=503, json={"error": {"message": "down"}})
    outcomes = sn.update_many("incident", [(sid(n), changes(n)) for n in range(3)], batch_size=2)
    assert len(rsps.calls) == 1
    assert all(isinstance(o.error, UnavailableError) for o in outcomes)
    assert [o.may_have_run for o in outcomes] == [True, True, False]


def test_outer_429_is_retried_by_the_http_layer_as_it_ran_nothing(rsps, sn, clock):
    rsps.post(BATCH_URL, status=429, headers={"Retry-After": "3"}, json={})
    rsps.post(BATCH_URL, json=answer([ok("0", {"sys_id": sid(0)})]))
    [outcome] = sn.update_many("incident", [(sid(0), changes(0))])
    assert outcome.ok
    assert sent(rsps.calls[0])["rest_requests"] == sent(rsps.calls[1])["rest_requests"]
    assert clock.waits == [3.0]


def test_a_non_json_answer_is_unavailable_and_may_have_run(rsps, sn):
    rsps.post(BATCH_URL, body="<html>sleeping instance</html>", content_type="text/html")
    [outcome] = sn.update_many("incident", [(sid(0), changes(0))])
    assert isinstance(outcome.error, UnavailableError)
    assert outcome.may_have_run is True


def test_a_serviced_200_without_a_result_envelope_is_rejected(rsps, sn):
    item = {**ok("0", {}), "body": b64({"unexpected": 1})}
    rsps.post(BATCH_URL, json=answer([item]))
    [outcome] = sn.update_many("incident", [(sid(0), changes(0))])
    assert isinstance(outcome.error, RejectedError)


@pytest.mark.parametrize(
    ("table", "record_id", "change"),
    [
        ("incident; drop", sid(1), {"impact": "1"}),
        ("incident", "not-a-sys-id", {"impact": "1"}),
        ("incident", sid(1), {"impact^x": "1"}),
        ("incident", sid(1), {}),
    ],
)
def test_bad_input_is_rejected_before_anything_is_sent(rsps, sn, table, record_id, change):
    with pytest.raises(RejectedError):
        sn.update_many(table, [(sid(0), {"impact": "1"}), (record_id, change)])
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_is_bounded(http_settings, size):
    with pytest.raises(RejectedError):
        ServiceNowBatch(HttpClient("servicenow", http_settings), INSTANCE, batch_size=size,
                        sleep=lambda s: None)  # fmt: skip


def test_no_updates_send_nothing(rsps, sn):
    assert sn.update_many("incident", []) == []
