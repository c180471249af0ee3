"""update_many end to end: the real connector against the simulator's Batch API on loopback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from connectors.servicenow import ServiceNowConnector
from domain.errors import NotFoundError, ThrottledError
from domain.settings import HttpSettings, ServiceNowSettings
from tests.simulators import FakeClock
from tests.simulators.servicenow import RateLimitRule, ServiceNowSimulator

USER = "svc_ticket_enricher"
BATCH = "/api/now/v1/batch"


@pytest.fixture
def sim() -> Iterator[ServiceNowSimulator]:
    with ServiceNowSimulator(users={USER: "pw"}, clock=FakeClock()) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sn(sim: ServiceNowSimulator, sleeps: list[float]) -> Iterator[ServiceNowConnector]:
    settings = ServiceNowSettings(
        instance_url=sim.url, auth="basic", username=USER, password=SecretStr("pw")
    )
    http = HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
    connector = ServiceNowConnector(settings, http, sleep=sleeps.append)
    yield connector
    connector.close()


def note(sys_id: str) -> str:
    return f"[enrich] filled category for {sys_id}"


def updates_for(ids: list[str]) -> list[tuple[str, dict[str, str]]]:
    return [
        (sys_id, {"category": "network", "impact": "2", "work_notes": note(sys_id)})
        for sys_id in ids
    ]


def batch_calls(sim: ServiceNowSimulator) -> list[int]:
    return [r.status for r in sim.request_log if r.path == BATCH]


def test_120_updates_go_in_3_batch_requests_each_record_once(sim, sn):
    ids = [sim.add_record("incident", {"short_description": f"t{n}"}) for n in range(120)]
    outcomes = sn.update_many("incident", updates_for(ids))
    assert batch_calls(sim) == [200, 200, 200]
    assert len(sim.request_log) == 3  # no other request at all
    assert [o.record_id for o in outcomes] == ids
    for sys_id, outcome in zip(ids, outcomes, strict=True):
        stored = sim.get_record("incident", sys_id)
        assert (stored["category"], stored["impact"], stored["priority"]) == (
            "network",
            "2",
            "4",
        )  # priority derived, as by a single PATCH
        assert stored["sys_updated_by"] == USER and stored["sys_mod_count"] == "1"
        assert [n["value"] for n in sim.journal(sys_id, "work_notes")] == [note(sys_id)]
        assert outcome.result().fields["sys_mod_count"] == "1"
        assert outcome.result().fields["category"] == "network"


def test_unserviced_requests_are_re_sent_and_no_patch_runs_twice(sim, sn, sleeps):
    ids = [sim.add_record("incident") for _ in range(60)]
    sim.batch.cut_next(20, 0)  # chunk 1 (50): 20 serviced, then none, then the other 30
    outcomes = sn.update_many("incident", updates_for(ids))
    assert all(o.ok for o in outcomes)
    assert len(batch_calls(sim)) == 4  # chunk 1 took three sends, chunk 2 (10) one
    per_batch = Counter(s.batch_request_id for s in sim.batch.sub_requests)
    assert sorted(per_batch.values()) == [10, 20, 30]
    ran = Counter(s.path for s in sim.batch.sub_requests)
    assert set(ran.values()) == {1}  # every PATCH ran exactly once
    assert len(ran) == 60
    assert all(len(sim.journal(i, "work_notes")) == 1 for i in ids)
    assert sleeps == [1.0, 2.0]  # backoff before each re-send


def test_a_missing_record_fails_alone_as_not_found(sim, sn):
    ids = [sim.add_record("incident") for _ in range(3)]
    ghost = "f" * 32
    outcomes = sn.update_many("incident", updates_for([ids[0], ghost, ids[1], ids[2]]))
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1].error, NotFoundError)
    assert outcomes[1].error.request_id  # the sub-response's X-Transaction-ID
    with pytest.raises(NotFoundError):
        outcomes[1].result()
    assert all(sim.get_record("incident", i)["category"] == "network" for i in ids)
    assert len(batch_calls(sim)) == 1  # the 404 was not re-sent


def test_the_rate_limit_throttles_sub_requests_past_the_quota(sim, sn):
    ids = [sim.add_record("incident") for _ in range(5)]
    sim.set_rate_limit(RateLimitRule(limit=3, user=USER))
    outcomes = sn.update_many("incident", updates_for(ids))
    assert [o.ok for o in outcomes] == [True, True, True, False, False]
    assert all(isinstance(o.error, ThrottledError) for o in outcomes[3:])
    assert all(o.error.retry_after_s and not o.may_have_run for o in outcomes[3:])
    assert [len(sim.journal(i, "work_notes")) for i in ids] == [1, 1, 1, 0, 0]


def test_a_lost_batch_answer_is_not_re_sent(sim, sn):
    ids = [sim.add_record("incident") for _ in range(2)]
    sim.commit_then_drop(1)  # the first PATCH commits, then the batch's connection drops
    outcomes = sn.update_many("incident", updates_for(ids))
    assert sim.wait_idle()
    assert len(batch_calls(sim)) == 1
    assert all(not o.ok and o.may_have_run for o in outcomes)
    # Both ran (the drop comes after the whole batch): each has exactly one note.
    assert [len(sim.journal(i, "work_notes")) for i in ids] == [1, 1]
