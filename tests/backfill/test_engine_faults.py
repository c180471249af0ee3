"""Backfill windows under 429 storms and permanent failures (ServiceNow simulator, real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.backfill_pacing import MemoryBudgetRows, SharedBudget
from connectors.queue import InMemoryJobQueue
from tests.backfill.sn_kit import Kit, sn_kit
from tests.simulators.servicenow import RateLimitRule
from triage.backfill.run import BackfillWorker, plan_run, run_local, submit


@pytest.fixture
def kit() -> Iterator[Kit]:
    with sn_kit() as k:
        yield k


def filled_count(kit: Kit) -> int:
    return sum(1 for i in kit.ids if kit.notes(i))


def budget(kit: Kit, rows: MemoryBudgetRows, **kwargs: Any) -> SharedBudget:
    values: dict[str, Any] = {"requests": 3600, "period_s": 3600.0, "share": 1.0, "slot_s": 10.0}
    values.update(kwargs)
    return SharedBudget(rows, scope="servicenow:sim:svc", now=kit.clock.now,
                        sleep=kit.clock.advance, **values)  # fmt: skip


def test_a_429_storm_slows_the_whole_run_and_loses_nothing(kit: Kit) -> None:
    kit.add_tickets(150, days=2)
    rows = MemoryBudgetRows()
    mine, neighbour = budget(kit, rows), budget(kit, rows)
    # The instance allows 6 requests an hour to the integration user: 429 after that.
    kit.clock.advance(3600 - kit.clock.now() % 3600)
    kit.sim.set_rate_limit(RateLimitRule(limit=6, mode="retry_after"))
    runner = kit.runner(connector_options={"pacer": mine.slot, "on_throttle": mine.throttled})
    status = run_local(kit.spec(until=kit.spec().since.replace(day=3), page_size=50), runner,
                       kit.store, sleep=kit.clock.advance, max_wait_s=48 * 3600)  # fmt: skip
    assert status.state == "done"
    assert mine.stats().throttles >= 1
    # The neighbour instance shares the scope: the storm slowed it too.
    state = rows.get(mine.scope)
    assert state is not None and state[0]["throttles"] >= 1
    assert neighbour.scope == mine.scope
    assert all(len(kit.notes(i)) <= 1 for i in kit.ids)
    with sn_kit() as clean:
        clean.add_tickets(150, days=2)
        run_local(clean.spec(until=clean.spec().since.replace(day=3)), clean.runner(), clean.store)
        assert filled_count(kit) == filled_count(clean) > 0
    assert status.counts.failed == 0


def test_a_budget_keeps_the_run_under_its_share(kit: Kit) -> None:
    kit.add_tickets(120, days=1)
    rows = MemoryBudgetRows()
    paced = budget(kit, rows, requests=360, period_s=3600.0, slot_s=10.0)  # 1 request per 10 s
    runner = kit.runner(connector_options={"pacer": paced.slot, "on_throttle": paced.throttled})
    start = kit.clock.now()
    run_local(kit.spec(until=kit.spec().since.replace(day=2), page_size=20), runner, kit.store,
              sleep=kit.clock.advance)  # fmt: skip
    api = [r for r in kit.sim.request_log if r.path.startswith("/api/")]
    posts = sum(1 for r in api if r.path == "/api/now/v1/batch")
    # A rate-limit rule counts each Batch API sub-request: so does the budget.
    counted = len(api) - posts + len(kit.sim.batch.sub_requests)
    assert paced.stats().granted == counted
    elapsed = kit.clock.now() - start
    assert counted >= 60
    assert counted <= elapsed / 10 + 2  # never faster than the share allows


def test_a_window_that_fails_for_good_is_poisoned_and_the_run_says_why(kit: Kit) -> None:
    kit.add_tickets(20, days=1)
    # A query term the instance cannot run (the simulator refuses it as ServiceNow would
    # answer it: 400): every window fails permanently.
    spec = kit.spec(until=kit.spec().since.replace(day=2), query="short_descriptionJOINfoo")
    queue, poison = InMemoryJobQueue(), InMemoryJobQueue()
    runner = kit.runner()
    worker = BackfillWorker(kit.store, lambda system: runner, queue, poison)
    assert submit(spec, kit.store, queue) == 1
    [(message, _)] = queue.sent
    outcome = worker.process(message.encode())
    assert outcome is not None and outcome.state == "failed"
    [(poisoned, _)] = poison.sent
    envelope = json.loads(poisoned)
    assert envelope["reason"].startswith("window_failed: ")
    status = kit.store.run_status(spec.run_id)
    assert status.state == "failed"
    [(index, reason)] = status.failures
    assert index == 0 and "Rejected" in reason
    # A redelivery of the same message changes nothing and poisons nothing more.
    assert worker.process(message.encode()).state == "failed"  # type: ignore[union-attr]
    assert len(poison.sent) == 1


def test_the_worker_requeues_a_paused_window_with_its_wait(kit: Kit) -> None:
    kit.add_tickets(30, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2))
    queue, poison = InMemoryJobQueue(), InMemoryJobQueue()
    runner = kit.runner()
    worker = BackfillWorker(kit.store, lambda system: runner, queue, poison)
    plan_run(spec, kit.store)
    lease = kit.store.acquire(spec.run_id, 0, lease_s=120)  # another instance holds it
    assert lease.state == "acquired"
    message = b'{"run_id": "run-1", "window": 0}'
    outcome = worker.process(message)
    assert outcome is not None and outcome.state == "busy"
    [(again, delay)] = queue.sent
    assert json.loads(again)["window"] == 0 and 100 <= delay <= 121
    assert poison.sent == []
    for bad in (b"", b"{}", b'{"run_id": "x", "window": -1}', b"\xff" * 10, b"[" * 5000):
        assert worker.process(bad) is None
    assert len(poison.sent) == 5
    unknown = b'{"run_id": "nope", "window": 0}'
    assert worker.process(unknown) is None
    assert "unknown_run" in json.loads(poison.sent[-1][0])["reason"]
