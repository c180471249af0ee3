"""connectors.backfill_state on memory, a local file and Azurite: advance, kill-and-resume,
duplicate window delivery, failed windows, run status.

``make()`` builds a fresh store "instance" over the same state (another process, or the same
one after a restart), as tests/connectors/test_state.py does for claims.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from connectors.backfill_state import (
    CheckpointStore,
    Counts,
    MemoryCheckpointStore,
    RowCheckpointStore,
    WindowLease,
)
from connectors.backfill_stores import FileCheckpointStore, TableCheckpointStore
from domain.errors import ClaimedError, ConfigError
from domain.mapping import load_mapping
from tests.simulators import FakeClock
from tests.simulators.encoded_query import parse
from triage.backfill.windows import Position, Window, parse_time, plan_windows, window_query

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LEASE = 60.0
Make = Callable[[], RowCheckpointStore]


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("file", id="file"),
        pytest.param("table", id="table", marks=pytest.mark.azurite),
    ]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FakeClock, Make]:
    clock = FakeClock()
    if request.param == "memory":
        shared = MemoryCheckpointStore(now=clock.now)
        return clock, lambda: shared
    if request.param == "file":
        path = tmp_path / "state" / "backfill.json"
        return clock, lambda: FileCheckpointStore(path, now=clock.now)
    azurite = request.getfixturevalue("azurite")
    table = f"t{uuid.uuid4().hex[:20]}"

    def make() -> RowCheckpointStore:
        client = TableClient.from_connection_string(azurite.connection_string, table)
        return TableCheckpointStore(client, now=clock.now)

    return clock, make


def _run(store: CheckpointStore, windows: int = 2) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    spans = [(f"2024-01-0{i + 1}T00:00:00+00:00", f"2024-01-0{i + 2}T00:00:00+00:00")
             for i in range(windows)]  # fmt: skip
    store.create_run(run_id, spans, spec={"platform": "servicenow", "query": "active=true"})
    return run_id


def _held(lease: WindowLease) -> WindowLease:
    assert lease.state == "acquired", lease
    return lease


# ---- basic semantics ----------------------------------------------------------------------


def test_advance_moves_the_checkpoint_and_sums_counts(stores):
    clock, make = stores
    store = make()
    run_id = _run(store)
    lease = _held(store.acquire(run_id, 0, lease_s=LEASE))
    assert not lease.reclaimed and lease.checkpoint is not None
    assert lease.checkpoint.start == "2024-01-01T00:00:00+00:00"
    lease = store.advance(lease, last_time="2024-01-01T01:00:00+00:00", last_id="a" * 32,
                          delta=Counts(scanned=3, filled=2, skipped=1))  # fmt: skip
    clock.advance(10)
    lease = store.advance(lease, last_time="2024-01-01T02:00:00+00:00", last_id="b" * 32,
                          delta=Counts(scanned=2, filled=1, failed=1))  # fmt: skip
    seen = make().get(run_id, 0)
    assert seen is not None
    assert (seen.status, seen.last_time, seen.last_id) == (
        "running",
        "2024-01-01T02:00:00+00:00",
        "b" * 32,
    )
    assert seen.counts == Counts(scanned=5, filled=3, skipped=1, failed=1)
    assert seen.lease_until == pytest.approx(clock.now() + LEASE)  # advancing renews the lease
    done = store.finish(lease, Counts(scanned=1, skipped=1))
    assert done.state == "done"
    assert make().acquire(run_id, 0, lease_s=LEASE).state == "done"
    status = make().run_status(run_id)
    assert status.counts == Counts(scanned=6, filled=3, skipped=2, failed=1)
    assert dict(status.by_status) == {"done": 1, "pending": 1}
    assert status.state == "running"
    assert status.spec == {"platform": "servicenow", "query": "active=true"}


def test_create_run_again_keeps_progress(stores):
    _, make = stores
    store = make()
    run_id = _run(store)
    lease = store.advance(_held(store.acquire(run_id, 1, lease_s=LEASE)),
                          last_time="t", last_id="x", delta=Counts(scanned=4))  # fmt: skip
    store.finish(lease)
    make().create_run(run_id, [("a", "b"), ("c", "d"), ("e", "f")])  # a retried submit
    windows = make().windows(run_id)
    assert [(w.index, w.status) for w in windows] == [(0, "pending"), (1, "done"), (2, "pending")]
    assert windows[1].counts.scanned == 4


def test_a_large_run_is_created_whole_and_a_crashed_create_completes_it(stores):
    _, make = stores
    store = make()
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    spans = [(f"s{i}", f"e{i}") for i in range(230)]
    store.create_run(run_id, spans[:150])  # the first attempt died after 150 windows
    store.finish(_held(store.acquire(run_id, 120, lease_s=LEASE)), Counts(scanned=7))
    make().create_run(run_id, spans)
    windows = make().windows(run_id)
    assert [(w.index, w.start) for w in windows] == [(i, f"s{i}") for i in range(230)]
    assert (windows[120].status, windows[120].counts.scanned) == ("done", 7)
    assert make().run_status(run_id).by_status == {"pending": 229, "done": 1}


def test_unknown_windows_and_runs(stores):
    _, make = stores
    store = make()
    assert store.acquire("nope", 0, lease_s=LEASE).state == "missing"
    assert store.get("nope", 3) is None
    assert store.run_status("nope").state == "missing"
    with pytest.raises(ConfigError):
        store.create_run("bad/run", [])


def test_release_gives_the_window_back_with_its_checkpoint(stores):
    _, make = stores
    store = make()
    run_id = _run(store)
    lease = _held(store.acquire(run_id, 0, lease_s=LEASE))
    lease = store.advance(lease, last_time="t1", last_id="id1", delta=Counts(scanned=1))
    released = store.release(lease, Counts(scanned=1))  # a transient failure: retry soon
    assert released.state == "released"
    again = _held(make().acquire(run_id, 0, lease_s=LEASE))  # no need to wait for the lease
    assert not again.reclaimed
    assert again.checkpoint is not None
    assert (again.checkpoint.last_id, again.checkpoint.counts.scanned) == ("id1", 2)
    with pytest.raises(ClaimedError):
        store.advance(lease, last_time="t2", last_id="id2", delta=Counts())


def test_a_failed_window_keeps_its_reason_and_the_run_says_so(stores):
    _, make = stores
    store = make()
    run_id = _run(store)
    store.finish(_held(store.acquire(run_id, 0, lease_s=LEASE)), Counts(scanned=2, filled=2))
    lease = _held(store.acquire(run_id, 1, lease_s=LEASE))
    failed = store.fail(lease, "[servicenow, HTTP 400] rejected: " + "x" * 1000, Counts(failed=1))
    assert failed.state == "failed"
    # A redelivery of the failed window does not run it again.
    assert make().acquire(run_id, 1, lease_s=LEASE).state == "failed"
    status = make().run_status(run_id)
    assert status.state == "failed"
    assert dict(status.by_status) == {"done": 1, "failed": 1}
    ((index, reason),) = status.failures
    assert index == 1 and reason.startswith("[servicenow, HTTP 400] rejected")
    assert len(reason) == 300
    assert status.counts == Counts(scanned=2, filled=2, failed=1)


def test_a_run_whose_windows_are_all_done_is_done(stores):
    _, make = stores
    store = make()
    run_id = _run(store)
    assert store.run_status(run_id).state == "pending"
    for index in (0, 1):
        store.finish(_held(store.acquire(run_id, index, lease_s=LEASE)))
    assert make().run_status(run_id).state == "done"


# ---- duplicate delivery -------------------------------------------------------------------


def test_a_second_delivery_backs_off_while_the_lease_lives(stores):
    clock, make = stores
    run_id = _run(make())
    first = _held(make().acquire(run_id, 0, lease_s=LEASE))
    clock.advance(20)
    second = make().acquire(run_id, 0, lease_s=LEASE)
    assert second.state == "busy"
    assert second.retry_after_s == pytest.approx(40)
    make().advance(first, last_time="t", last_id="a", delta=Counts(scanned=1))


def test_after_a_takeover_only_the_new_holder_advances(stores):
    clock, make = stores
    run_id = _run(make())
    old = _held(make().acquire(run_id, 0, lease_s=LEASE))
    old = make().advance(old, last_time="t1", last_id="a", delta=Counts(scanned=1))
    clock.advance(LEASE + 1)  # the old holder stalls past its lease
    new = _held(make().acquire(run_id, 0, lease_s=LEASE))
    assert new.reclaimed
    with pytest.raises(ClaimedError) as caught:
        make().advance(old, last_time="t9", last_id="z", delta=Counts(scanned=50))
    assert caught.value.retry_after_s == pytest.approx(LEASE)
    with pytest.raises(ClaimedError):
        make().finish(old)
    with pytest.raises(ClaimedError):
        make().fail(old, "late")
    make().advance(new, last_time="t2", last_id="b", delta=Counts(scanned=1))
    final = make().get(run_id, 0)
    assert final is not None
    assert (final.status, final.last_id, final.counts.scanned) == ("running", "b", 2)


@pytest.mark.parametrize("expired", [False, True], ids=["pending", "expired-lease"])
def test_racing_deliveries_acquire_a_window_exactly_once(stores, expired):
    clock, make = stores
    run_id = _run(make())
    if expired:
        _held(make().acquire(run_id, 0, lease_s=LEASE))
        clock.advance(LEASE + 1)
    instances = [make() for _ in range(6)]
    barrier = threading.Barrier(6)

    def deliver(store: RowCheckpointStore) -> WindowLease:
        barrier.wait()
        return store.acquire(run_id, 0, lease_s=LEASE)

    with ThreadPoolExecutor(6) as pool:
        leases = list(pool.map(deliver, instances))
    winners = [lease for lease in leases if lease.state == "acquired"]
    assert len(winners) == 1
    assert all(lease.state == "busy" for lease in leases if lease not in winners)
    assert winners[0].reclaimed is expired


def test_racing_holders_of_the_same_lease_advance_exactly_once(stores):
    """Two copies of one lease (a duplicated message handled with the same view): one wins."""
    _, make = stores
    run_id = _run(make())
    lease = _held(make().acquire(run_id, 0, lease_s=LEASE))
    barrier = threading.Barrier(4)

    def push(i: int) -> str:
        barrier.wait()
        try:
            make().advance(lease, last_time="t", last_id=f"id{i}", delta=Counts(scanned=1))
        except ClaimedError:
            return "lost"
        return "won"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(push, range(4)))
    assert results.count("won") == 1
    final = make().get(run_id, 0)
    assert final is not None and final.counts.scanned == 1


# ---- kill and resume ----------------------------------------------------------------------

SN = load_mapping()


class _Schema:
    fields = ("sys_id", "sys_created_on", "category", "subcategory", "impact", "urgency",
              "short_description")  # fmt: skip

    def target(self, path: str) -> tuple[str, str] | None:
        return ("incident", path) if path in self.fields else None

    def lookup(self, record: Any, path: str) -> str:
        return str(record.get(path, ""))


class Killed(Exception):
    """The process died."""


class Platform:
    """ServiceNow records evaluated with the simulator's query engine; counts every write."""

    def __init__(self, n: int) -> None:
        self.records: list[dict[str, str]] = []
        for i in range(n):
            # Groups of five tickets share a second: resuming must tie-break on sys_id.
            created = T0 + timedelta(hours=1, seconds=i // 5)
            needs = i % 4 != 0  # every fourth ticket is complete already
            self.records.append({
                "sys_id": "f" + hashlib.sha256(str(i).encode()).hexdigest()[1:32],
                "sys_created_on": created.strftime("%Y-%m-%d %H:%M:%S"),
                "category": "inquiry" if needs else "software",
                "subcategory": "email", "impact": "2", "urgency": "2",
                "short_description": "mail",
            })  # fmt: skip
        self.writes: dict[str, int] = {}
        self.scans: list[str] = []

    def query(self, query: str) -> list[dict[str, str]]:
        return list(parse(query).select(self.records, _Schema()))

    def enrich(self, record: dict[str, str]) -> bool:
        """Fill the category unless the enricher abstains (every third ticket)."""
        self.scans.append(record["sys_id"])
        if int(record["sys_id"][-2:], 16) % 3 == 0:
            return False
        record["category"] = "software"
        self.writes[record["sys_id"]] = self.writes.get(record["sys_id"], 0) + 1
        return True

    def needing(self) -> set[str]:
        return {r["sys_id"] for r in self.records if r["category"] == "inquiry"}


def work(store: RowCheckpointStore, platform: Platform, window: Window, *, die_after: int | None,
         die_before_checkpoint: bool = False) -> str:  # fmt: skip
    """A worker handling one window delivery; raises Killed after ``die_after`` records."""
    lease = store.acquire(window.run_id, window.index, lease_s=LEASE)
    if lease.state != "acquired":
        return lease.state
    assert lease.checkpoint is not None
    cp = lease.checkpoint
    after = Position(parse_time(cp.last_time), cp.last_id) if cp.last_time else None
    query = window_query(window, "servicenow", SN, after=after)
    for handled, record in enumerate(platform.query(query), start=1):
        filled = platform.enrich(record)
        if die_before_checkpoint and handled == die_after:
            raise Killed  # the write landed, the checkpoint did not
        delta = Counts(scanned=1, filled=int(filled), skipped=int(not filled))
        last = parse_time(record["sys_created_on"]).isoformat()
        lease = store.advance(lease, last_time=last, last_id=record["sys_id"], delta=delta)
        if handled == die_after:
            raise Killed
    store.finish(lease)
    return "done"


@pytest.mark.parametrize("die_after", [1, 4, 7, 13])
@pytest.mark.parametrize("before_checkpoint", [False, True], ids=["after-ckpt", "before-ckpt"])
def test_a_killed_window_resumes_without_repeating_or_skipping_a_ticket(
    stores, die_after, before_checkpoint
):
    clock, make = stores
    platform = Platform(24)
    need_before = platform.needing()
    (window,) = plan_windows(T0, T0 + timedelta(days=1), run_id=f"run-{uuid.uuid4().hex[:8]}")
    make().create_run(window.run_id, [(window.start.isoformat(), window.end.isoformat())])
    with pytest.raises(Killed):
        work(make(), platform, window, die_after=die_after,
             die_before_checkpoint=before_checkpoint)  # fmt: skip
    # A redelivery while the dead worker's lease lives backs off ...
    assert work(make(), platform, window, die_after=None) == "busy"
    clock.advance(LEASE + 1)
    # ... and once it has expired, a fresh process resumes from the checkpoint.
    assert work(make(), platform, window, die_after=None) == "done"
    # Every ticket that needed something was looked at; none was written twice.
    assert set(platform.scans) == need_before
    assert set(platform.writes.values()) == {1}
    if not before_checkpoint:
        assert len(platform.scans) == len(need_before)  # not even a skipped one scanned again
    status = make().run_status(window.run_id)
    assert status.state == "done"
    counted = status.counts
    # Killed between a write and its checkpoint: that ticket is filled (the query no longer
    # selects it) but uncounted; had the enricher skipped it, it is scanned once more.
    kth = platform.scans[die_after - 1]
    lost = int(before_checkpoint and kth in platform.writes)
    rescanned = int(before_checkpoint and kth not in platform.writes)
    assert len(platform.scans) == len(need_before) + rescanned
    assert counted.scanned == len(need_before) - lost
    assert counted.filled == len(platform.writes) - lost
    assert counted.skipped == len(need_before) - len(platform.writes)


def test_a_second_run_over_the_same_range_only_rescans_skipped_tickets(stores):
    _, make = stores
    platform = Platform(24)
    scanned_first = 0
    for _ in range(2):
        (window,) = plan_windows(T0, T0 + timedelta(days=1), run_id=f"r{uuid.uuid4().hex[:8]}")
        make().create_run(window.run_id, [(window.start.isoformat(), window.end.isoformat())])
        still_needing = platform.needing()
        scanned_first = len(platform.scans)
        assert work(make(), platform, window, die_after=None) == "done"
    assert sorted(platform.scans[scanned_first:]) == sorted(still_needing)
    assert 0 < len(still_needing) < scanned_first  # only the abstained ones come back
    assert set(platform.writes.values()) == {1}


# ---- the file itself ----------------------------------------------------------------------


def test_file_store_writes_valid_json_atomically_and_leaves_no_temp_files(tmp_path: Path):
    path = tmp_path / "bf.json"
    store = FileCheckpointStore(path)
    run_id = _run(store)
    store.advance(_held(store.acquire(run_id, 0, lease_s=LEASE)), last_time="t", last_id="a",
                  delta=Counts(scanned=1))  # fmt: skip
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {run_id}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf.json", "bf.json.lock"]


def test_a_corrupt_checkpoint_file_is_refused_by_name(tmp_path: Path):
    path = tmp_path / "bf.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bf\.json"):
        FileCheckpointStore(path).get("run-1", 0)


def test_file_store_survives_a_real_sigkill_mid_window(tmp_path: Path):
    """A child process advances five times and SIGKILLs itself: the file holds the fifth."""
    path = tmp_path / "bf.json"
    store = FileCheckpointStore(path)
    run_id = _run(store)
    script = f"""
import os, signal
from connectors.backfill_state import Counts
from connectors.backfill_stores import FileCheckpointStore
store = FileCheckpointStore({str(path)!r})
lease = store.acquire({run_id!r}, 0, lease_s=60)
for i in range(5):
    lease = store.advance(lease, last_time=f"t{{i}}", last_id=f"id{{i}}", delta=Counts(scanned=1))
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                           check=False, timeout=60)  # fmt: skip
    assert child.returncode == -signal.SIGKILL
    seen = FileCheckpointStore(path).get(run_id, 0)
    assert seen is not None
    assert (seen.status, seen.last_id, seen.counts.scanned) == ("running", "id4", 5)
