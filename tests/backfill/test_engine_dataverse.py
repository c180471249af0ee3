"""Backfill windows end to end against the Dataverse simulator: HTTPS, msal, $batch, paging."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.backfill_state import MemoryCheckpointStore
from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
from enrichers import default_enrichers
from tests.simulators import FakeClock
from tests.simulators.dataverse import PERSON, DataverseSimulator
from tests.simulators.dataverse_testkit import simulator_connector, tls_session
from triage.backfill.engine import WindowRunner
from triage.backfill.run import run_local
from triage.backfill.spec import BackfillSpec
from triage.pipeline import Pipeline

CLIENT = ("backfill-app", "backfill-app-secret-0123456789")
START = datetime(2024, 3, 1, tzinfo=UTC)
TEXTS = [
    ("Kasser nede", "Kasserne virker ikke i alle butikker siden i morges. Det haster!"),
    ("Outage", "Complete outage: all users in every store cannot log in, urgent."),
    ("Question", "Can you tell me the opening hours of the Aarhus store?"),
    ("Slow", "The website is a bit slow for me today."),
]


class Kit:
    def __init__(self, sim: DataverseSimulator, clock: FakeClock) -> None:
        self.sim, self.clock = sim, clock
        self.store = MemoryCheckpointStore(now=clock.now)
        self.claims = MemoryClaimStore(now=clock.now)
        self.mapping = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
        self.ids: list[str] = []
        self.sessions: list[Any] = []

    def runner(self, wrap: Any = None, **kwargs: Any) -> WindowRunner:
        session = tls_session(self.sim)
        self.sessions.append(session)
        connector, _ = simulator_connector(
            self.sim, *CLIENT, self.mapping.column_types(), session=session
        )
        pipeline = Pipeline(
            wrap(connector) if wrap else connector,
            self.mapping,
            default_enrichers(self.mapping),
            claims=self.claims,
            now=self.clock.now,
        )
        return WindowRunner(pipeline, self.store, monotonic=self.clock.now, **kwargs)

    def add_cases(self, count: int, seed: int = 3) -> None:
        rng = random.Random(seed)
        for n in range(count):
            title, text = TEXTS[n % len(TEXTS)]
            at = START + timedelta(seconds=rng.randrange(2 * 86400))
            self.ids.append(
                self.sim.add_case(
                    {
                        "title": f"{title} {n}",
                        "description": text,
                        "createdon": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
            )

    def notes(self, case_id: str) -> list[str]:
        return [str(a.get("notetext")) for a in self.sim.annotations(case_id)]

    def filled(self) -> list[str]:
        return [i for i in self.ids if self.sim.get_case(i)["prioritycode"] not in (2, None)]

    def spec(self, run_id: str = "dv-1", **overrides: Any) -> BackfillSpec:
        values: dict[str, Any] = {"run_id": run_id, "system": "dataverse", "since": START,
                                  "until": START + timedelta(days=2), "page_size": 25}  # fmt: skip
        return BackfillSpec(**{**values, **overrides})


@pytest.fixture
def kit() -> Iterator[Kit]:
    clock = FakeClock(start=1_800_000_000.0)
    with DataverseSimulator(dict([CLIENT]), clock) as sim:
        k = Kit(sim, clock)
        yield k
        for s in k.sessions:
            s.close()
    assert sim.errors == []


def batches(kit: Kit) -> int:
    return sum(1 for r in kit.sim.request_log if r.path.endswith("/$batch"))


def test_a_run_fills_each_case_once_in_batches_following_next_links(kit: Kit) -> None:
    kit.add_cases(120)
    status = run_local(kit.spec(), kit.runner(), kit.store, sleep=kit.clock.advance)
    assert status.state == "done"
    assert status.counts.scanned == 120 and status.counts.failed == 0
    filled = kit.filled()
    assert status.counts.filled == len(filled) >= 40
    assert status.counts.detail("filled:priority") == len(filled)
    for case_id in kit.ids:
        assert len(kit.notes(case_id)) == (1 if case_id in filled else 0)
    api = [r for r in kit.sim.request_log if "/api/data/" in r.path]
    assert not [r for r in api if r.method == "PATCH"]  # every write in a $batch
    assert len(api) / len(filled) < 0.5
    # Two windows of ~60 cases, 25 a page: each window follows its @odata.nextLink twice.
    reads = [r for r in api if r.method == "GET" and r.path.endswith("/incidents")]
    assert len(reads) >= 6


def test_a_second_run_writes_nothing(kit: Kit) -> None:
    kit.add_cases(60)
    run_local(kit.spec("a"), kit.runner(), kit.store, sleep=kit.clock.advance)
    before = batches(kit)
    second = run_local(kit.spec("b"), kit.runner(), kit.store, sleep=kit.clock.advance)
    assert batches(kit) == before and second.counts.filled == 0
    assert second.counts.scanned == 60 - len(kit.filled())


def test_killed_twice_then_resumed_no_case_lost_or_written_twice(kit: Kit) -> None:
    kit.add_cases(150)

    class Killed(BaseException):
        pass

    class Dies:
        def __init__(self, inner: Any, after: int) -> None:
            self.inner, self.left = inner, after

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def update_many(self, table: str, updates: Any) -> Any:
            outcomes = self.inner.update_many(table, updates)
            self.left -= 1
            if self.left == 0:
                raise Killed
            return outcomes

    spec = kit.spec()
    for _ in range(2):
        with pytest.raises(Killed):
            run_local(spec, kit.runner(wrap=lambda c: Dies(c, 2), lease_s=60), kit.store,
                      sleep=kit.clock.advance)  # fmt: skip
    kit.clock.advance(400)
    status = run_local(spec, kit.runner(), kit.store, sleep=kit.clock.advance)
    assert status.state == "done"
    assert all(len(kit.notes(i)) <= 1 for i in kit.ids)
    assert len(kit.filled()) == sum(1 for i in kit.ids if kit.notes(i))
    urgent = ("Kasser nede", "Outage")
    expected = [i for n, i in enumerate(kit.ids) if TEXTS[n % len(TEXTS)][0] in urgent]
    assert set(expected) <= set(kit.filled())


def test_a_case_a_person_changed_after_the_read_is_decided_again(kit: Kit) -> None:
    kit.add_cases(8)
    target = kit.ids[0]  # an outage: the backfill wants priority High

    class PersonFirst:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def update_many(self, table: str, updates: Any) -> Any:
            # A person sets Low between our read and our write: the etag no longer matches.
            kit.sim.store.write("incidents", target, {"prioritycode": 3}, PERSON, validate=False)
            return self.inner.update_many(table, updates)

    status = run_local(kit.spec(), kit.runner(wrap=PersonFirst), kit.store,
                       sleep=kit.clock.advance)  # fmt: skip
    assert kit.sim.get_case(target)["prioritycode"] == 3  # theirs stands
    assert kit.notes(target) == []
    assert status.counts.failed == 0
    # The 412 sent the case through the live path: re-read alone, decided again, left alone.
    assert any(r.method == "GET" and target in r.path for r in kit.sim.request_log)
    assert status.counts.by_kind("skipped").get("no suggestion cleared the policy") == 1
