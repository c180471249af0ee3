"""Service protection, injected faults, the write hook and the request log (dataverse.md §5-6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.simulators import FakeClock
from tests.simulators.dataverse import PERSON, DataverseSimulator, Limits
from tests.simulators.dataverse_testkit import CLIENT, SECRET, api_session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DataverseSimulator]:
    with DataverseSimulator({CLIENT: SECRET, "other": "pw"}, clock, limits=Limits(requests=3)) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def http(sim: DataverseSimulator) -> Iterator[requests.Session]:
    with api_session(sim) as session:
        yield session


def whoami(sim: DataverseSimulator, http: requests.Session) -> requests.Response:
    return http.get(f"{sim.api_url}/WhoAmI", timeout=5)


def test_request_count_limit_per_user_with_retry_after_and_sliding_window(
    sim: DataverseSimulator, http: requests.Session, clock: FakeClock
) -> None:
    for _ in range(2):
        assert whoami(sim, http).status_code == 200
        clock.advance(100)
    assert whoami(sim, http).status_code == 200  # 3 requests at t=0, 100, 200
    blocked = whoami(sim, http)
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "0x80072322"
    assert "limit of 3 over time window of 300 seconds" in blocked.json()["error"]["message"]
    assert blocked.headers["Retry-After"] == "100"  # the t=0 request leaves the window at 300
    with api_session(sim, "other", "pw") as other:
        assert whoami(sim, other).status_code == 200  # per user
    clock.advance(100)
    assert whoami(sim, http).status_code == 200


def test_execution_time_limit(sim: DataverseSimulator, http: requests.Session) -> None:
    sim.limits.requests, sim.limits.cost_ms = 100, 600_000
    assert whoami(sim, http).status_code == 200
    assert whoami(sim, http).status_code == 200
    blocked = whoami(sim, http)
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "0x80072321"
    assert int(blocked.headers["Retry-After"]) >= 1


def test_concurrency_limit_while_a_request_is_in_flight(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    sim.limits.requests, sim.limits.concurrent = 100, 1
    case = sim.add_case({"title": "x"})
    entered, release = threading.Event(), threading.Event()

    def hold(entity_set: str, rid: str, body: dict[str, Any]) -> None:
        entered.set()
        release.wait(5)

    sim.before_write(hold)
    slow: list[int] = []
    thread = threading.Thread(
        target=lambda: slow.append(
            http.patch(
                f"{sim.api_url}/incidents({case})", json={"title": "y"}, timeout=5
            ).status_code
        )
    )
    thread.start()
    assert entered.wait(5)
    with api_session(sim) as second:
        blocked = whoami(sim, second)
    release.set()
    thread.join()
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "0x80072326"
    assert blocked.headers["Retry-After"]
    assert slow == [204]
    sim.before_write(None)
    with api_session(sim) as third:
        assert whoami(sim, third).status_code == 200  # the slot was released


def test_fail_next_and_drop_next(sim: DataverseSimulator, http: requests.Session) -> None:
    sim.limits.requests = 100
    sim.fail_next(1, 429, "0x80072322", "Number of requests exceeded", retry_after_s=7)
    sim.fail_next(1, 503)
    first, second = whoami(sim, http), whoami(sim, http)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 503 and second.json()["error"]["message"] == "Service Unavailable"
    assert first.headers["x-ms-service-request-id"] != second.headers["x-ms-service-request-id"]
    sim.drop_next()
    with pytest.raises(requests.ConnectionError):
        whoami(sim, http)
    assert whoami(sim, http).status_code == 200
    assert [e.status for e in sim.request_log if e.path.endswith("WhoAmI")] == [429, 503, 0, 200]


def test_before_write_stages_a_person_edit_that_fails_our_if_match(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    case = sim.add_case({"title": "x"})
    etag = http.get(f"{sim.api_url}/incidents({case})", timeout=5).json()["@odata.etag"]
    sim.before_write(lambda es, rid, body: sim.update_record(rid, {"prioritycode": 3}))
    resp = http.patch(
        f"{sim.api_url}/incidents({case})",
        json={"prioritycode": 1},
        headers={"If-Match": etag},
        timeout=5,
    )
    assert resp.status_code == 412
    stored = sim.get_case(case)
    assert stored is not None
    assert (stored["prioritycode"], stored["_modifiedby_value"]) == (3, PERSON)


def test_request_log_keeps_api_bodies_and_users(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    case = sim.add_case({"title": "x"})
    http.patch(f"{sim.api_url}/incidents({case})", json={"title": "y"}, timeout=5)
    entry = sim.request_log[-1]
    assert (entry.method, entry.status, entry.user) == ("PATCH", 204, sim.user_id(CLIENT))
    assert entry.body == {"title": "y"}
    assert entry.path == f"/api/data/v9.2/incidents({case})"
