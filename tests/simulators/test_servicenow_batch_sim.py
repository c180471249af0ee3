"""The simulator's Batch API: shapes, order, auth, rate limit per sub-request, cuts, refusals."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from tests.simulators.servicenow import RateLimitRule

JSON = [
    {"name": "Content-Type", "value": "application/json"},
    {"name": "Accept", "value": "application/json"},
]


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def patch(sub_id: str, sys_id: str, body: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": sub_id,
        "method": "PATCH",
        "url": f"/api/now/table/incident/{sys_id}?sysparm_fields=sys_id,impact,sys_mod_count",
        "headers": JSON,
        "body": b64(body),
        **extra,
    }


def post_batch(sim, http, rest_requests: list[Any], batch_id: str = "b1"):
    payload = {"batch_request_id": batch_id, "rest_requests": rest_requests}
    return http.post(f"{sim.url}/api/now/v1/batch", json=payload)


def decoded(item: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(item["body"]))


def test_patches_run_in_order_and_answers_carry_the_documented_shape(sim, http):
    a, b = sim.add_record("incident"), sim.add_record("incident")
    resp = post_batch(
        sim,
        http,
        [
            patch("1", a, {"impact": "1", "work_notes": "first"}),
            patch("2", b, {"impact": "2"}, exclude_response_headers=True),
            patch("3", a, {"impact": "3"}),
        ],
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["batch_request_id"] == "b1"
    assert body["unserviced_requests"] == []
    items = body["serviced_requests"]
    assert [i["id"] for i in items] == ["1", "2", "3"]
    assert {i["status_code"] for i in items} == {200}
    assert items[0]["status_text"] == "OK" and isinstance(items[0]["execution_time"], int)
    assert decoded(items[0])["result"] == {"sys_id": a, "impact": "1", "sys_mod_count": "1"}
    # Run in order: the third PATCH saw the first one's write.
    assert decoded(items[2])["result"]["sys_mod_count"] == "2"
    assert sim.get_record("incident", a)["impact"] == "3"
    assert [n["value"] for n in sim.journal(a, "work_notes")] == ["first"]
    names = {h["name"] for h in items[0]["headers"]}
    assert {"X-Transaction-ID", "Content-Type"} <= names
    assert items[1]["headers"] == []
    assert sim.get_record("incident", a)["sys_updated_by"] == "admin"


def test_a_missing_record_fails_only_its_own_sub_request(sim, http):
    a = sim.add_record("incident")
    items = post_batch(
        sim, http, [patch("1", "0" * 32, {"impact": "1"}), patch("2", a, {"impact": "1"})]
    ).json()["serviced_requests"]
    assert [i["status_code"] for i in items] == [404, 200]
    assert decoded(items[0])["error"]["message"] == "No Record found"


def test_the_outer_request_needs_auth_and_runs_nothing_without_it(sim, http):
    a = sim.add_record("incident")
    http.auth = ("admin", "wrong")
    resp = post_batch(sim, http, [patch("1", a, {"impact": "1"})])
    assert resp.status_code == 401
    assert sim.get_record("incident", a)["impact"] == "3"
    assert sim.batch.sub_requests == []


def test_only_the_versioned_url_exists(sim, http):
    resp = http.post(f"{sim.url}/api/now/batch", json={"rest_requests": []})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Requested URI does not represent any resource"


def test_max_serviced_leaves_the_rest_unserviced_and_unrun(sim, http):
    ids = [sim.add_record("incident") for _ in range(4)]
    sim.batch.max_serviced = 2
    body = post_batch(
        sim, http, [patch(str(n), sid, {"work_notes": "x"}) for n, sid in enumerate(ids)]
    ).json()
    assert [i["id"] for i in body["serviced_requests"]] == ["0", "1"]
    assert body["unserviced_requests"] == ["2", "3"]
    assert [len(sim.journal(sid, "work_notes")) for sid in ids] == [1, 1, 0, 0]


def test_cut_next_applies_to_one_batch_each(sim, http):
    a = sim.add_record("incident")
    sim.batch.cut_next(0)
    first = post_batch(sim, http, [patch("1", a, {"impact": "1"})]).json()
    second = post_batch(sim, http, [patch("1", a, {"impact": "1"})]).json()
    assert (first["serviced_requests"], first["unserviced_requests"]) == ([], ["1"])
    assert [i["status_code"] for i in second["serviced_requests"]] == [200]


def test_rate_limit_counts_each_sub_request(sim, http):
    ids = [sim.add_record("incident") for _ in range(3)]
    sim.set_rate_limit(RateLimitRule(limit=2))
    items = post_batch(
        sim, http, [patch(str(n), sid, {"impact": "1"}) for n, sid in enumerate(ids)]
    ).json()["serviced_requests"]
    assert [i["status_code"] for i in items] == [200, 200, 429]
    headers = {h["name"]: h["value"] for h in items[2]["headers"]}
    assert int(headers["Retry-After"]) > 0
    assert sim.get_record("incident", ids[2])["impact"] == "3"


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ({"id": "1", "method": "PATCH", "url": "/x", "body": "!!not base64"}, "base64"),
        ({"id": "0", "method": "GET", "url": "/x"}, "repeated"),
        ({"method": "GET", "url": "/x"}, "id"),
        ({"id": "1", "method": "TRACE", "url": "/x"}, "method"),
        ({"id": "1", "method": "GET", "url": "http://evil/y"}, "relative"),
        ({"id": "1", "method": "GET", "url": "/x", "headers": {"a": "b"}}, "headers"),
        ("not an object", "object"),
    ],
)
def test_a_malformed_sub_request_refuses_the_whole_batch(sim, http, bad, detail):
    a = sim.add_record("incident")
    resp = post_batch(sim, http, [patch("0", a, {"impact": "1"}), bad])
    assert resp.status_code == 400
    assert detail in resp.json()["error"]["detail"]
    assert sim.get_record("incident", a)["impact"] == "3"  # nothing ran, not even the first
    assert sim.batch.sub_requests == []


@pytest.mark.parametrize("payload", [{"rest_requests": []}, {"batch_request_id": "1"}, [1]])
def test_a_batch_without_requests_is_refused(sim, http, payload):
    resp = http.post(f"{sim.url}/api/now/v1/batch", json=payload)
    assert resp.status_code == 400


def test_invalid_json_and_wrong_content_type_are_refused(sim, http):
    url = f"{sim.url}/api/now/v1/batch"
    bad_json = http.post(url, data=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400
    form = http.post(url, data=b"a=b", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415


def test_a_sub_request_outside_the_table_api_is_refused_and_surfaced(sim, http):
    items = post_batch(
        sim, http, [{"id": "1", "method": "GET", "url": "/api/global/user_role_inheritance"}]
    ).json()["serviced_requests"]
    assert items[0]["status_code"] == 400
    assert len(sim.errors) == 1
    sim.errors.clear()


def test_a_staged_drop_drops_the_batch_after_its_writes_committed(sim, http):
    a = sim.add_record("incident")
    sim.commit_then_drop(1)
    with pytest.raises(requests.ConnectionError):
        post_batch(sim, http, [patch("1", a, {"impact": "1", "work_notes": "n"})])
    assert sim.wait_idle()
    assert sim.get_record("incident", a)["impact"] == "1"
    assert len(sim.journal(a, "work_notes")) == 1


def test_write_callbacks_fire_for_batched_writes(sim, http):
    a = sim.add_record("incident")
    seen: list[tuple[str, str, str]] = []
    sim.on_write(lambda table, rec, op, user: seen.append((rec["sys_id"], op, user)))
    post_batch(sim, http, [patch("1", a, {"impact": "2"})])
    assert seen == [(a, "update", "admin")]


def test_outer_request_is_logged_once_and_sub_requests_separately(sim, http):
    a = sim.add_record("incident")
    post_batch(sim, http, [patch("1", a, {"impact": "2"}), patch("2", a, {"urgency": "2"})])
    batch_calls = [r for r in sim.request_log if r.path == "/api/now/v1/batch"]
    assert len(batch_calls) == 1 and batch_calls[0].status == 200
    assert [(s.id, s.method, s.status, s.body) for s in sim.batch.sub_requests] == [
        ("1", "PATCH", 200, {"impact": "2"}),
        ("2", "PATCH", 200, {"urgency": "2"}),
    ]
