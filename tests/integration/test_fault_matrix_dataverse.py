"""The Dataverse fault matrix as assertions: every fault family, and all at once, loses nothing.

Each scenario also proves its fault reached the slice (5xx and drops on writes, the 429 code it
names, the races and late commits it staged); the controls prove the matrix sees the damage
when a protection is removed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.state import Claim
from tests.integration.fault_matrix_dataverse import (
    CLIENT,
    SCENARIOS,
    THROTTLE_CODES,
    FaultyDataverse,
    IfMatchDropped,
    run_scenario,
)
from tests.simulators import FakeClock

CASES = 12


@pytest.fixture
def sim_clock() -> Iterator[tuple[FaultyDataverse, FakeClock]]:
    clock = FakeClock(start=1_800_000_000.0)
    sim = FaultyDataverse(clients={CLIENT[0]: CLIENT[1]}, clock=clock)
    with sim:
        sim.tokens.resource = sim.url  # the simulated environment lives at its loopback URL
        yield sim, clock


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_case_lost_no_note_doubled_no_human_value_overwritten(sim_clock, scenario):
    sim, clock = sim_clock
    outcome = run_scenario(scenario, sim, clock, tickets=CASES, seed=7)
    figures = outcome.as_dict()
    assert sim.errors == []
    assert (outcome.lost, outcome.duplicate_notes, outcome.overwritten_human_values) == (0, 0, 0)
    assert outcome.poisoned == 0, figures
    assert all(n == 1 for n in outcome.notes.values()), outcome.notes
    assert figures["foreign_notes"] == 0 and figures["unfilled"] == 0, figures
    if scenario in ("5xx_bursts", "dropped_connections", "everything_at_once"):
        assert outcome.failed_writes > 0, figures  # the faults reached the writes
    if scenario in THROTTLE_CODES:
        assert sim.throttle_codes[THROTTLE_CODES[scenario]] > 0, figures
    if scenario == "everything_at_once":
        assert set(sim.throttle_codes) == set(THROTTLE_CODES.values()), figures
    if scenario in ("late_commit", "everything_at_once"):
        assert figures["late_commits"] > 0, figures
    if scenario in ("person_edit_412", "everything_at_once"):
        # Every forced race happened, was refused (412), re-read and re-decided.
        assert figures["races"] == CASES // 2, figures
        assert outcome.conflicts_restored == CASES // 2, figures
    if scenario == "token_expiry":
        assert any(r.status == 401 for r in sim.request_log)


class _NoClaims:
    """No claim store: every worker may write."""

    def claim(self, key: str, *, lease_s: float) -> Claim:
        return Claim(key, "acquired")

    def complete(self, claim: Claim, outcome: str) -> None: ...
    def release(self, claim: Claim) -> None: ...
    def hold(self, claim: Claim, settle_s: float) -> None: ...
    def purge(self, older_than_s: float) -> int:
        return 0


def test_the_matrix_counts_overwrites_when_writes_drop_if_match(sim_clock):
    sim, clock = sim_clock
    outcome = run_scenario(
        "person_edit_412", sim, clock, tickets=CASES, seed=7, connector=IfMatchDropped
    )
    assert outcome.as_dict()["races"] == CASES // 2
    # Every race on a case whose priority we fill lost the person's value (where a person had
    # chosen it at creation already, the race changes nothing we write).
    filled = [i for i in range(0, CASES, 2) if i % 3 != 0]
    assert outcome.overwritten_human_values == len(filled) > 0


def test_without_claims_if_match_alone_keeps_duplicate_deliveries_to_one_note(sim_clock):
    # Two workers read the same etag; the second change set gets 412, re-reads a filled case
    # and has nothing left to write. (The claims make this cheaper, not correct.)
    sim, clock = sim_clock
    shared = _NoClaims()
    outcome = run_scenario(
        "duplicate_delivery", sim, clock, tickets=CASES, seed=7, claims=lambda: shared
    )
    assert (outcome.lost, outcome.duplicate_notes) == (0, 0)


@pytest.mark.parametrize("scenario", ["duplicate_delivery", "late_commit"])
def test_the_matrix_counts_duplicates_without_claims_or_if_match(sim_clock, scenario):
    sim, clock = sim_clock
    shared = _NoClaims()
    outcome = run_scenario(
        scenario, sim, clock, tickets=CASES, seed=7, claims=lambda: shared,
        connector=IfMatchDropped,
    )  # fmt: skip
    assert outcome.duplicate_notes > 0
