"""SharedBudget under random interleavings of several instances' requests, throttles and clock
steps (one memory row, one fake clock).

Exact bounds asserted:

* grants started in slot ``k`` <= the cap slot ``k`` opened with, which is
  ``floor(carry + A * factor) <= ceil(A)`` with ``A = requests * share * slot_s / period_s``,
  whatever each instance's ``block`` (grants of a block are only used in the slot that reserved
  it, so blocks add nothing to this bound);
* over the whole run, grants <= ``A * slots`` from the first slot to the last grant's
  (caps telescope: ``cap_k = carry_(k-1) + A_k - carry_k`` and the first carry is 0);
* after ``throttled(s)`` at ``t``, the throttling instance starts nothing before ``t + s``; every
  other instance starts at most ``block - 1`` requests before ``t + s``, all in ``t``'s slot
  (grants it already held when the pause began).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connectors.backfill_pacing import MemoryBudgetRows, SharedBudget

EPOCH = 1_699_999_200.0


class Clock:
    def __init__(self) -> None:
        self.t = EPOCH

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


class CapRows(MemoryBudgetRows):
    """Remembers the cap each slot opened with (a throttle only lowers it)."""

    def __init__(self) -> None:
        super().__init__()
        self.caps: dict[int, int] = {}

    def replace(self, scope: str, row: Any, etag: str) -> str | None:
        new = super().replace(scope, row, etag)
        if new is not None:
            slot = int(row["slot"])
            self.caps[slot] = max(self.caps.get(slot, 0), int(row["cap"]))
        return new


actions = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 3), st.floats(0.0, 3.0)),
        st.tuples(st.just("throttle"), st.integers(0, 3), st.floats(0.0, 40.0)),
        st.tuples(st.just("step"), st.integers(0, 3), st.floats(0.0, 30.0)),
    ),
    min_size=1,
    max_size=80,
)


@given(
    actions=actions,
    blocks=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    requests=st.integers(10, 3000),
    share=st.floats(0.1, 1.0),
    slot_s=st.sampled_from([1.0, 5.0, 60.0]),
)
def test_grants_never_exceed_a_slots_cap_and_pauses_hold(actions, blocks, requests, share, slot_s):
    clock, rows = Clock(), CapRows()
    budgets = [
        SharedBudget(
            rows,
            scope="servicenow:acme:svc",
            requests=requests,
            period_s=300.0,
            share=share,
            slot_s=slot_s,
            block=block,
            now=clock.now,
            sleep=clock.sleep,
        )
        for block in blocks
    ]
    full = budgets[0].per_slot
    grants: Counter[int] = Counter()
    starts: list[tuple[float, int, int]] = []  # (time, instance, sequence number)
    pauses: list[tuple[float, float, int, int]] = []  # (from, until, reporter, sequence number)
    for kind, who, amount in actions:
        if kind == "request":
            with budgets[who].slot():
                grants[math.floor(clock.t / slot_s)] += 1
                starts.append((clock.t, who, len(starts) + len(pauses)))
                clock.t += amount  # the request's duration
        elif kind == "throttle":
            budgets[who].throttled(amount)
            pauses.append((clock.t, clock.t + amount, who, len(starts) + len(pauses)))
        else:
            clock.t += amount

    for slot, count in grants.items():
        assert count <= rows.caps[slot] <= math.ceil(full - 1e-9)
    if grants:
        slots = max(grants) - math.floor(EPOCH / slot_s) + 1
        assert sum(grants.values()) <= full * slots + 1e-6
    for begin, until, reporter, seq in pauses:
        inside = [(t, i) for t, i, n in starts if n > seq and t < until]
        assert all(i != reporter for _, i in inside)
        for instance, count in Counter(i for _, i in inside).items():
            assert count <= blocks[instance] - 1
        assert all(math.floor(t / slot_s) == math.floor(begin / slot_s) for t, _ in inside)
    assert sum(b.stats().granted for b in budgets) == len(starts)
