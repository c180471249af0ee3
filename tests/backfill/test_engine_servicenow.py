"""Backfill windows end to end against the ServiceNow simulator: real connector, real policy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.backfill.sn_kit import USER, Kit, sn_kit
from triage.backfill.report import MemoryReport
from triage.backfill.run import plan_run, run_local
from triage.pipeline import input_hash

BATCH = "/api/now/v1/batch"


@pytest.fixture
def kit() -> Iterator[Kit]:
    with sn_kit() as k:
        yield k


def requests_by(kit: Kit) -> Counter[str]:
    return Counter(
        f"{r.method} {'batch' if r.path == BATCH else r.path}" for r in kit.sim.request_log
    )


def filled(kit: Kit) -> list[str]:
    return [
        i for i in kit.ids if kit.sim.get_record("incident", i)["category"] not in ("", "inquiry")
    ]


def test_a_run_fills_every_ticket_once_reading_pages_and_writing_in_batches(kit: Kit) -> None:
    kit.add_tickets(200)
    status = run_local(kit.spec(), kit.runner(), kit.store)
    assert status.state == "done"
    counts = status.counts
    assert counts.scanned == 200
    assert counts.scanned == counts.filled + counts.skipped + counts.failed
    assert counts.failed == 0
    assert counts.filled == len(filled(kit)) > 100
    assert counts.detail("filled:category") == counts.filled
    assert counts.by_kind("skipped")  # the "hello / thanks" tickets, with their reason
    for sys_id in kit.ids:
        notes = kit.notes(sys_id)
        assert len(notes) == (1 if sys_id in filled(kit) else 0)
        if notes:
            assert kit.sim.get_record("incident", sys_id)["sys_updated_by"] == USER
    seen = requests_by(kit)
    assert seen["PATCH /api/now/table/incident"] == 0  # every write went through the batch API
    assert seen["POST batch"] >= 1
    table_reads = seen["GET /api/now/table/incident"]
    # One read per page of 40 (plus the last, short one per window), one batch per page.
    assert table_reads <= 200 / 40 + 3 + 3
    assert (table_reads + seen["POST batch"]) / counts.filled < 0.2


def test_a_second_run_over_the_same_range_writes_nothing(kit: Kit) -> None:
    kit.add_tickets(120)
    first = run_local(kit.spec("first"), kit.runner(), kit.store)
    writes = requests_by(kit)["POST batch"]
    second = run_local(kit.spec("second"), kit.runner(), kit.store)
    assert requests_by(kit)["POST batch"] == writes
    assert second.counts.filled == 0
    # Only what had nothing to fill is read again: the filled tickets left the query.
    assert second.counts.scanned == first.counts.skipped


def test_a_person_s_value_is_never_selected_nor_overwritten(kit: Kit) -> None:
    kit.add_tickets(30)
    mine = kit.ids[0]
    kit.sim.update_record("incident", mine, {"category": "hardware", "impact": "2"}, user="anna.b")
    status = run_local(kit.spec(), kit.runner(), kit.store)
    rec = kit.sim.get_record("incident", mine)
    assert (rec["category"], rec["impact"]) == ("hardware", "2")
    assert status.counts.scanned == 30  # still read: its urgency was unset


def test_dry_run_reports_and_changes_nothing(kit: Kit) -> None:
    kit.add_tickets(36)
    report = MemoryReport()
    status = run_local(kit.spec(dry_run=True), kit.runner(report=report), kit.store)
    assert requests_by(kit)["POST batch"] == 0
    assert all(kit.notes(i) == [] for i in kit.ids)
    assert status.counts.filled > 0  # "would fill"
    fills = [r for r in report.rows if r.action == "fill"]
    assert {r.record_id for r in fills} == {
        i for i in kit.ids if any(r.record_id == i for r in fills)
    }
    row = fills[0]
    assert row.field and row.column and row.new_value and 0 < row.confidence <= 1
    assert row.old_value in ("", "inquiry", "3")
    assert len({r.record_id for r in fills}) == status.counts.filled


def test_limit_stops_the_run_after_that_many_tickets(kit: Kit) -> None:
    kit.add_tickets(100)
    status = run_local(kit.spec(limit=50), kit.runner(), kit.store)
    assert status.counts.scanned == 50
    assert status.taken == 50


def test_a_killed_run_resumes_without_losing_or_repeating_a_ticket(kit: Kit) -> None:
    kit.add_tickets(160, days=1)

    class Killed(BaseException):
        """The process dies (not an exception the code could handle)."""

    class DiesAfterSending:
        def __init__(self, inner, after: int) -> None:
            self.inner, self.left = inner, after

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def update_many(self, table, updates):
            outcomes = self.inner.update_many(table, updates)
            self.left -= 1
            if self.left == 0:
                raise Killed  # the batch landed, its answer was never settled
            return outcomes

    spec = kit.spec(page_size=30)
    with pytest.raises(Killed):
        run_local(
            spec,
            kit.runner(wrap=lambda c: DiesAfterSending(c, 2)),
            kit.store,
            sleep=kit.clock.advance,
        )
    with pytest.raises(Killed):
        run_local(
            spec,
            kit.runner(wrap=lambda c: DiesAfterSending(c, 2), lease_s=60),
            kit.store,
            sleep=kit.clock.advance,
        )
    # The dead workers' leases (and claims) run out; a new process resumes the same run.
    kit.clock.advance(700)
    status = run_local(spec, kit.runner(), kit.store, sleep=kit.clock.advance)
    assert status.state == "done"
    for sys_id in kit.ids:
        assert len(kit.notes(sys_id)) <= 1, "a ticket was written twice"
    assert len(filled(kit)) == sum(1 for i in kit.ids if kit.notes(i))
    # None lost: every ticket a clean run fills is filled.
    with sn_kit() as clean:
        clean.add_tickets(160, days=1)
        run_local(clean.spec(page_size=30), clean.runner(), clean.store)
        assert len(filled(kit)) == len(filled(clean))


def test_a_duplicate_delivery_of_a_window_is_harmless(kit: Kit) -> None:
    kit.add_tickets(60, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2))
    runner = kit.runner()
    plan_run(spec, kit.store)
    assert runner.run(spec, 0).state == "done"
    before = len(kit.sim.request_log)
    again = kit.runner().run(spec, 0)
    assert again.state == "done" and len(kit.sim.request_log) == before
    assert all(len(kit.notes(i)) <= 1 for i in kit.ids)


def test_a_ticket_being_enriched_live_is_left_to_it(kit: Kit) -> None:
    kit.add_tickets(40, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2))
    live = kit.runner().pipeline  # the live path, same claim store
    record = live.connector.get("incident", kit.ids[3], live.mapping.platform_fields())
    key = f"servicenow:incident:{kit.ids[3]}:{input_hash(live.ticket_of(record))}"
    held = kit.claims.claim(key, lease_s=30)  # a live worker is writing this ticket now
    plan_run(spec, kit.store)
    outcome = kit.runner().run(spec, 0)
    assert outcome.state == "busy" and outcome.retry_after_s >= 1
    assert kit.notes(kit.ids[3]) == []
    # Live finishes its write; the window resumes and does not write that ticket again.
    kit.claims.release(held)
    assert live.enrich_record("incident", kit.ids[3]).status == "written"
    kit.clock.advance(5)
    while (o := kit.runner().run(spec, 0)).state != "done":
        kit.clock.advance(max(o.retry_after_s, 1))
    assert len(kit.notes(kit.ids[3])) == 1
    assert all(len(kit.notes(i)) <= 1 for i in kit.ids)


def test_shadow_mode_and_field_modes_are_obeyed(kit: Kit) -> None:
    from connectors.shadow import MemoryShadowStore

    kit.add_tickets(24, days=1)
    spec = kit.spec(until=kit.spec().since.replace(day=2), dry_run=True)
    shadow = MemoryShadowStore()
    report = MemoryReport()
    runner = kit.runner(report=report)
    runner.pipeline.shadow = shadow
    status = run_local(spec, runner, kit.store)
    assert requests_by(kit)["POST batch"] == 0
    assert status.counts.filled == 0 and status.counts.detail("skipped:shadow mode") > 0
    assert {r.action for r in report.rows} <= {"shadow", "skip"}
    assert "shadow" in {r.action for r in report.rows}
    assert list(shadow.since(0)) == []  # a dry run records nothing, not even shadow rows
    # A real run in shadow mode records the suggestions and writes nothing.
    runner = kit.runner()
    runner.pipeline.shadow = shadow
    run_local(kit.spec("shadow", until=spec.until), runner, kit.store)
    assert requests_by(kit)["POST batch"] == 0
    assert {r.record_id for r in shadow.since(0)} >= set(kit.ids[:5]) - {kit.ids[5]}

    # Category in suggest mode, the rest filled: category never written, only noted.
    runner = kit.runner(report=(modes := MemoryReport()))
    runner.pipeline.mapping = runner.pipeline.mapping.model_copy(
        update={"modes": {"category": "suggest", "subcategory": "suggest"}}
    )
    status = run_local(kit.spec("real", until=spec.until), runner, kit.store)
    assert all(kit.sim.get_record("incident", i)["category"] in ("", "inquiry") for i in kit.ids)
    assert status.counts.detail("filled:category") == 0
    assert "suggest" in {r.action for r in modes.rows if r.field == "category"}
    noted = [i for i in kit.ids if kit.notes(i)]
    assert noted and all("category" in kit.notes(i)[0] for i in noted)
