"""SharedBudget on the memory backend: per-slot caps, steady use of the allowance, share and
factor, throttles that pause every instance and slow the scope down, execution time, threads."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import responses

from connectors._http import HttpClient
from connectors.backfill_pacing import (
    MIN_FACTOR,
    BudgetStats,
    MemoryBudgetRows,
    SharedBudget,
    budget_scope,
    combine,
    scope_key,
)
from domain.errors import ConfigError
from domain.settings import HttpSettings

EPOCH = 1_699_999_200.0  # a multiple of 5 and of 60: slot boundaries fall on it


class FakeClock:
    """``now`` and a ``sleep`` that advances it; ``step`` for the time requests take."""

    def __init__(self, start: float = EPOCH) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


class SteppedClock:
    """A clock for threads: time moves only when every live worker sleeps, to the earliest
    wake-up. A worker that reads ``now`` right after a grant therefore sees the grant's slot."""

    def __init__(self, workers: int, start: float = EPOCH) -> None:
        self.t = start
        self._cv = threading.Condition()
        self._active = workers
        self._sleepers: dict[object, float] = {}

    def now(self) -> float:
        with self._cv:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._cv:
            token = object()
            self._sleepers[token] = self.t + seconds
            self._advance()
            while self.t < self._sleepers[token]:
                if not self._cv.wait(timeout=10):
                    raise AssertionError("stepped clock stalled")
            del self._sleepers[token]

    def done(self) -> None:
        with self._cv:
            self._active -= 1
            self._advance()

    def _advance(self) -> None:
        targets = self._sleepers.values()
        if targets and len(self._sleepers) == self._active and min(targets) > self.t:
            self.t = min(targets)
            self._cv.notify_all()


class RecordingRows(MemoryBudgetRows):
    """Memory rows that remember the cap each slot opened with (caps only shrink in a slot)."""

    def __init__(self) -> None:
        super().__init__()
        self.caps: dict[int, int] = {}
        self.ops = 0

    def get(self, scope: str) -> Any:
        self.ops += 1
        return super().get(scope)

    def replace(self, scope: str, row: Any, etag: str) -> str | None:
        self.ops += 1
        new = super().replace(scope, row, etag)
        if new is not None:
            slot = int(row["slot"])
            self.caps[slot] = max(self.caps.get(slot, 0), int(row["cap"]))
        return new


def budget(rows: MemoryBudgetRows, clock: Any, **kwargs: Any) -> SharedBudget:
    params: dict[str, Any] = {"scope": "dataverse:acme:svc", "requests": 6000, "period_s": 300.0}
    params.update(kwargs)
    return SharedBudget(rows, now=clock.now, sleep=clock.sleep, **params)


def run(b: SharedBudget, clock: FakeClock, until: float, work_s: float = 0.0) -> Counter[int]:
    """Steady demand: request after request until ``until``; grants before it counted per slot
    (the last request, granted at or after ``until``, is not counted)."""
    grants: Counter[int] = Counter()
    while clock.t < until:
        with b.slot():
            if clock.t < until:
                grants[math.floor(clock.t / b.slot_s)] += 1
            clock.t += work_s
    return grants


def test_defaults_slots_of_a_sixtieth_of_the_period_at_least_one_second():
    rows, clock = MemoryBudgetRows(), FakeClock()
    assert budget(rows, clock).slot_s == 5.0
    assert budget(rows, clock).per_slot == pytest.approx(80.0)  # 6000 * 0.8 * 5 / 300
    assert budget(rows, clock, period_s=30.0, requests=60).slot_s == 1.0


@pytest.mark.parametrize("block", [1, 5])
def test_steady_demand_over_100_slots_uses_the_allowance_and_never_more(block):
    rows, clock = RecordingRows(), FakeClock()
    b = budget(rows, clock, block=block)
    grants = run(b, clock, EPOCH + 100 * b.slot_s)
    assert len(grants) == 100
    assert max(grants.values()) <= 80
    used = sum(grants.values()) / (b.per_slot * 100)
    assert used >= 0.97
    assert b.stats().granted == sum(grants.values()) + 1  # + the one granted at ``until``


def test_a_fractional_allowance_alternates_and_carries_so_the_rate_is_exact():
    rows, clock = RecordingRows(), FakeClock()
    # ServiceNow: 1,000 requests an hour at 0.8 -> 13.33 per 60 s slot.
    b = budget(rows, clock, requests=1000, period_s=3600.0)
    grants = run(b, clock, EPOCH + 90 * b.slot_s)
    assert set(grants.values()) == {13, 14}
    assert all(grants[k] <= rows.caps[k] for k in grants)
    total, allowed = sum(grants.values()), b.per_slot * 90
    assert allowed - 1 <= total <= allowed + 1


def test_share_scales_the_allowance():
    rows, clock = MemoryBudgetRows(), FakeClock()
    b = budget(rows, clock, share=0.25)
    grants = run(b, clock, EPOCH + 20 * b.slot_s)
    assert set(grants.values()) == {25}  # 6000 * 0.25 * 5 / 300


def test_throttled_pauses_a_second_instance_for_the_retry_after():
    rows, clock = MemoryBudgetRows(), FakeClock()
    first, second = budget(rows, clock), budget(rows, clock)
    with second.slot():
        pass
    clock.t += 1.0
    first.throttled(30.0)
    throttled_at = clock.t
    with second.slot():
        started = clock.t
    assert started >= throttled_at + 30.0
    assert second.stats().paused_s >= 30.0 - 1e-9
    assert first.stats().throttles == 1 and second.stats().throttles == 0
    assert rows.get(first.scope)[0]["throttles"] == 1  # type: ignore[index]


def test_after_a_throttle_the_rate_is_lower_and_recovers_step_by_step():
    rows, clock = MemoryBudgetRows(), FakeClock()
    worker, other = budget(rows, clock), budget(rows, clock)
    before = run(worker, clock, EPOCH + 3 * worker.slot_s)
    assert list(before.values()) == [80, 80, 80]
    clock.t += 1.0
    other.throttled(30.0)  # at EPOCH + 16: everyone waits until EPOCH + 46
    grants = run(worker, clock, EPOCH + 40 * worker.slot_s)
    first = math.floor(EPOCH / worker.slot_s)
    assert min(grants) - first == 9  # nothing before the slot in which the pause ends
    after = [grants[k] for k in sorted(grants)]
    assert after[0] == 40  # halved: 80 * 0.5
    assert after[1:4] == [44, 48, 52]  # each clean slot after it gives back 0.05 of the factor
    assert after[1:] == sorted(after[1:])  # never lower again without a new 429
    assert after[-1] == 80  # recovered within ten clean slots
    assert worker.stats().paused_s == pytest.approx(30.0)


def test_reports_during_a_running_pause_extend_it_but_cut_only_once():
    rows, clock = MemoryBudgetRows(), FakeClock()
    instances = [budget(rows, clock) for _ in range(5)]
    with instances[0].slot():
        pass
    for b in instances:  # five instances see the same overload
        b.throttled(20.0)
    instances[0].throttled(40.0)
    row = rows.get(instances[0].scope)[0]  # type: ignore[index]
    assert row["factor"] == 0.5 and row["cuts"] == 1 and row["throttles"] == 6
    assert row["paused_until"] == EPOCH + 40.0
    for _ in range(12):  # later episodes keep cutting, down to the floor
        clock.t = row["paused_until"] + 0.5
        instances[1].throttled(1.0)
        row = rows.get(instances[0].scope)[0]  # type: ignore[index]
    assert row["factor"] == MIN_FACTOR


def test_a_throttle_closes_the_current_slot_even_when_the_pause_is_short():
    rows, clock = MemoryBudgetRows(), FakeClock()
    b = budget(rows, clock)
    with b.slot():
        pass
    b.throttled(0.5)
    clock.t += 1.0
    with b.slot():
        assert math.floor(clock.t / b.slot_s) == math.floor(EPOCH / b.slot_s) + 1


def test_execution_time_limits_the_slot_and_carries_its_debt():
    rows, clock = MemoryBudgetRows(), FakeClock()
    # 20 minutes per 5 minutes at 0.8 -> 16 s of execution per 5 s slot; each request runs 4 s
    # (sequential here, so 4 s of wall time too: only 1.25 requests per slot fit in time).
    b = budget(rows, clock, max_execution_s=1200.0)
    grants = run(b, clock, EPOCH + 200 * b.slot_s, work_s=4.0)
    spent = sum(grants.values()) * 4.0
    assert spent <= b.exec_per_slot * 200 + 4.0 * 1  # type: ignore[operator]
    # Long requests: a slot opens, but the seconds reported into it refuse what follows.
    rows2, clock2 = MemoryBudgetRows(), FakeClock()
    slow = budget(rows2, clock2, max_execution_s=60.0)  # 0.8 s of execution per 5 s slot
    grants2 = run(slow, clock2, EPOCH + 100 * slow.slot_s, work_s=0.4)
    assert sum(grants2.values()) * 0.4 <= slow.exec_per_slot * 100 + 0.4 * 2  # type: ignore[operator]
    assert max(grants2.values()) <= 3  # without the execution budget: 80 a slot


def test_unused_block_grants_are_lost_at_the_slot_end():
    rows, clock = RecordingRows(), FakeClock()
    b = budget(rows, clock, requests=600, period_s=60.0, share=1.0, slot_s=1.0, block=5)
    with b.slot():
        pass  # reserved 5, used 1
    assert rows.get(b.scope)[0]["used"] == 5
    clock.t += 1.0
    with b.slot():
        pass  # the 4 held from the last slot are dropped: a new block is reserved here
    row = rows.get(b.scope)[0]
    assert (row["slot"], row["used"]) == (EPOCH + 1.0, 5)
    assert b.stats().granted == 2


def test_threads_of_two_instances_never_exceed_the_per_slot_allowance():
    per_instance, requests_each = 8, 20
    clock = SteppedClock(workers=2 * per_instance)
    rows = RecordingRows()
    instances = [
        budget(rows, clock, requests=300, period_s=60.0, slot_s=1.0, block=block)
        for block in (1, 3)
    ]  # 4 per 1 s slot
    grants: Counter[int] = Counter()
    lock = threading.Lock()

    def work(b: SharedBudget) -> None:
        try:
            for _ in range(requests_each):
                with b.slot(), lock:
                    grants[math.floor(clock.now())] += 1
        finally:
            clock.done()

    threads = [
        threading.Thread(target=work, args=(b,)) for b in instances for _ in range(per_instance)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    assert sum(grants.values()) == 2 * per_instance * requests_each
    assert max(grants.values()) <= 4
    assert all(grants[k] <= rows.caps[k] for k in grants)
    assert sum(b.stats().granted for b in instances) == 320


def test_http_client_wired_to_the_budget_slows_the_other_instance():
    rows, clock = MemoryBudgetRows(), FakeClock()
    first, second = budget(rows, clock), budget(rows, clock)
    settings = HttpSettings(max_retry_wait_s=60.0)
    http = HttpClient(
        "dataverse",
        settings,
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.now,
        pacer=first.slot,
        on_throttle=first.throttled,
    )
    url = "https://acme.crm.dynamics.com/api/data/v9.2/WhoAmI"
    with responses.RequestsMock() as mock:
        mock.get(
            url, status=429, headers={"Retry-After": "30"}, json={"error": {"code": "0x80072322"}}
        )
        mock.get(url, json={})
        http.request("GET", url)
    assert first.stats().granted == 2 and first.stats().throttles == 1
    with second.slot():
        assert clock.t >= EPOCH + 30.0


def test_combine_enters_in_order_and_leaves_in_reverse():
    events: list[str] = []

    def pacer(name: str) -> Callable[[], Any]:
        @contextmanager
        def slot() -> Iterator[None]:
            events.append(f"enter {name}")
            try:
                yield
            finally:
                events.append(f"leave {name}")

        return slot

    with combine(pacer("process"), pacer("shared"))():
        events.append("send")
    assert events == ["enter process", "enter shared", "send", "leave shared", "leave process"]


def test_scopes_are_valid_injective_partition_keys():
    assert budget_scope("servicenow", "ACME.service-now.com ", "svc") == (
        "servicenow:acme.service-now.com:svc"
    )
    nasty = "dataverse:org/x\\y#z?w%\x00\x1f\x7f\x85:user"
    key = scope_key(nasty)
    assert not any(c in key for c in "/\\#?") and all(
        ord(c) >= 32 and not 0x7F <= ord(c) <= 0x9F for c in key
    )
    assert key == "dataverse:org%2Fx%5Cy%23z%3Fw%25%00%1F%7F%85:user"
    assert scope_key("a/b") != scope_key("a%2Fb")  # the escape character is escaped too
    long_a, long_b = scope_key("s:" + "a" * 500), scope_key("s:" + "a" * 499 + "b")
    assert len(long_a) == 200 and long_a != long_b
    b = budget(MemoryBudgetRows(), FakeClock(), scope=budget_scope("servicenow", "h", "a/b"))
    assert b.scope == "servicenow:h:a%2Fb"  # sanitised once, by the budget


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests": 0},
        {"period_s": 0.0},
        {"share": 0.0},
        {"share": 1.5},
        {"block": 0},
        {"slot_s": 0.0},
        {"max_execution_s": -1.0},
    ],
)
def test_invalid_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        budget(MemoryBudgetRows(), FakeClock(), **kwargs)


def test_stats_start_empty():
    assert budget(MemoryBudgetRows(), FakeClock()).stats() == BudgetStats(0, 0.0, 0, 0.0)
