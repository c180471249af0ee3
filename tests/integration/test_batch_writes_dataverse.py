"""Backfill I/O against the Dataverse simulator on loopback HTTPS: read_page and update_many."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.dataverse import DataverseConnector
from domain.errors import ConflictError
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import simulator_connector

CLIENT = ("backfill-app", "backfill-app-secret-0123456789")
FIELD_TYPES = {"casetypecode": "choice", "prioritycode": "choice", "title": "text"}


@pytest.fixture
def sim() -> Iterator[DataverseSimulator]:
    with DataverseSimulator(dict([CLIENT]), FakeClock()) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def dv(sim: DataverseSimulator) -> Iterator[DataverseConnector]:
    connector, _ = simulator_connector(sim, *CLIENT, FIELD_TYPES)
    yield connector
    connector.close()


def batch_posts(sim: DataverseSimulator) -> list[Any]:
    return [r for r in sim.request_log if r.method == "POST" and r.path.endswith("/$batch")]


def test_250_cases_in_3_batches_each_with_its_values_and_one_note(
    sim: DataverseSimulator, dv: DataverseConnector
) -> None:
    cases = [sim.add_case({"title": f"case {n}"}) for n in range(250)]
    page = dv.read_page("incident", "casetypecode eq null", ["title"], limit=5000)
    assert len(page.records) == 250 and page.more is False
    updates = [
        (r.record_id, {"casetypecode": str(n % 3 + 1), "annotation": f"filled {n}"}, r.etag)
        for n, r in enumerate(page.records)
    ]
    before = len(sim.request_log)
    outcomes = dv.update_many("incident", updates)

    assert len(sim.request_log) - before == 3  # 3 $batch requests, no re-read
    assert len(batch_posts(sim)) == 3 and all(r.status == 200 for r in batch_posts(sim))
    assert all(o.ok for o in outcomes)
    for (record_id, changes, _), outcome in zip(updates, outcomes, strict=True):
        stored = sim.get_case(record_id)
        assert stored is not None and stored["casetypecode"] == int(changes["casetypecode"])
        notes = sim.annotations(record_id)
        assert [n["notetext"] for n in notes] == [changes["annotation"]]
        record = outcome.result()  # the PATCH's representation: stored values, new etag
        assert record.fields["casetypecode"] == stored["casetypecode"]
        assert record.etag == f'W/"{stored["versionnumber"]}"'
    assert {r.record_id for r in page.records} == set(cases)


def test_a_case_changed_after_the_read_is_a_conflict_and_left_alone(
    sim: DataverseSimulator, dv: DataverseConnector
) -> None:
    for n in range(6):
        sim.add_case({"title": f"case {n}"})
    page = dv.read_page("incident", "", ["title"], limit=10)
    raced = page.records[2].record_id
    sim.update_record(raced, {"title": "edited by a person"})  # its etag moves on
    changed = sim.get_case(raced)
    updates = [
        (r.record_id, {"casetypecode": "2", "annotation": "n"}, r.etag) for r in page.records
    ]
    outcomes = dv.update_many("incident", updates, cases_per_batch=4)

    assert len(batch_posts(sim)) == 2
    assert isinstance(outcomes[2].error, ConflictError) and outcomes[2].may_have_run is False
    assert sim.get_case(raced) == changed and sim.annotations(raced) == []
    for record, outcome in zip(page.records, outcomes, strict=True):
        if record.record_id != raced:
            assert outcome.ok
            assert sim.get_case(record.record_id)["casetypecode"] == 2  # type: ignore[index]
            assert len(sim.annotations(record.record_id)) == 1


def test_keyset_pages_with_fills_between_them_return_every_row_once(
    sim: DataverseSimulator, dv: DataverseConnector
) -> None:
    # Pairs share a createdon, so the key orders inside a timestamp.
    cases = {
        sim.add_case({"title": f"c{n}", "createdon": f"2026-02-01T08:{n // 2:02d}:00Z"})
        for n in range(23)
    }
    filled_before = sim.add_case({"title": "done", "casetypecode": 1})
    query, seen, cursor, pages = "casetypecode eq null", [], None, 0
    while True:
        page = dv.read_page("incident", query, ["title"], limit=5, cursor=cursor)
        pages += 1
        seen += [r.record_id for r in page.records]
        # What a backfill does: fill the column the filter selects on, then read on.
        outcomes = dv.update_many(
            "incident", [(r.record_id, {"casetypecode": "3"}, r.etag) for r in page.records]
        )
        assert all(o.ok for o in outcomes)
        if not page.more:
            break
        cursor = page.cursor
    assert pages == 5
    assert sorted(seen) == sorted(cases) and len(seen) == len(set(seen)) == 23
    assert filled_before not in seen
    assert dv.read_page("incident", query, ["title"], limit=5).records == []
