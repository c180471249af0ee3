"""A backfill racing live enrichment on the same tickets, two instances on one window: the
checkpoints and claims in Table Storage (Azurite), the ServiceNow simulator, real threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient

from connectors.backfill_stores import TableCheckpointStore
from connectors.table_state import TableClaimStore
from domain.errors import ClaimedError
from tests.backfill.sn_kit import Kit, sn_kit
from triage.backfill.run import plan_run, run_local


@pytest.fixture
def kit(azurite: Any) -> Iterator[Kit]:
    suffix = uuid.uuid4().hex[:10]

    def table(name: str) -> TableClient:
        return TableClient.from_connection_string(azurite.connection_string, f"{name}{suffix}")

    with sn_kit() as k:
        # Real time: leases and claims expire by the wall clock across threads.
        k.store = TableCheckpointStore(table("bf"))
        k.claims = TableClaimStore(table("claims"))
        k.clock.now = time.time  # type: ignore[method-assign]
        yield k


def test_backfill_and_live_on_the_same_tickets_write_each_once(kit: Kit) -> None:
    kit.add_tickets(60, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2), page_size=10)
    live = kit.runner().pipeline
    errors: list[BaseException] = []

    def live_worker() -> None:
        for sys_id in reversed(kit.ids):  # from the other end: they meet in the middle
            for _ in range(50):
                try:
                    live.enrich_record("incident", sys_id)
                    break
                except ClaimedError as exc:
                    time.sleep(min(exc.retry_after_s, 0.05))
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return

    def backfill() -> None:
        try:
            run_local(spec, kit.runner(), kit.store, sleep=lambda s: time.sleep(min(s, 0.05)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=live_worker), threading.Thread(target=backfill)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    notes = {i: len(kit.notes(i)) for i in kit.ids}
    assert max(notes.values()) == 1, "a ticket got two notes"
    fillable = sum(1 for n, _ in enumerate(kit.ids) if n % 6 != 5)  # all but "hello / thanks"
    assert sum(notes.values()) == fillable
    assert kit.store.run_status(spec.run_id).state == "done"


def test_two_instances_given_the_same_window_write_each_ticket_once(kit: Kit) -> None:
    kit.add_tickets(80, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2), page_size=10)
    plan_run(spec, kit.store)
    outcomes: list[str] = []

    def instance() -> None:
        runner = kit.runner(lease_s=60)
        for _ in range(200):
            outcome = runner.run(spec, 0)
            outcomes.append(outcome.state)
            if outcome.state == "done":
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=instance) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert "busy" in outcomes  # the duplicate delivery found the window held
    assert all(len(kit.notes(i)) <= 1 for i in kit.ids)
    status = kit.store.run_status(spec.run_id)
    assert status.state == "done" and status.counts.scanned == 80
