"""The fault matrix as assertions: every fault family, and all at once, loses nothing."""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import TableClient

from connectors.state import Claim
from connectors.table_state import TableClaimStore
from tests.integration.fault_matrix import SCENARIOS, run_scenario
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator

from .fault_matrix import CLIENT, INTEGRATION_USER

TICKETS = 12


@pytest.fixture
def sim_clock():
    clock = FakeClock(start=1_800_000_000.0)
    sim = ServiceNowSimulator(
        users={"anna.b": "pw"},
        oauth_clients={CLIENT[0]: (CLIENT[1], INTEGRATION_USER)},
        clock=clock,
    )
    with sim:
        yield sim, clock


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_ticket_lost_no_note_doubled_no_human_value_overwritten(sim_clock, scenario):
    sim, clock = sim_clock
    outcome = run_scenario(scenario, sim, clock, tickets=TICKETS, seed=7)
    assert sim.errors == []
    assert (outcome.lost, outcome.duplicate_notes, outcome.overwritten_human_values) == (0, 0, 0)
    assert outcome.poisoned == 0
    assert all(n == 1 for n in outcome.notes.values()), outcome.notes
    if scenario in ("5xx_bursts", "dropped_connections"):
        assert outcome.failed_writes > 0  # the faults reached the writes, not only the reads
    if scenario.startswith("429"):
        assert outcome.throttled > 0
    if scenario == "person_edit_between_read_and_write":
        assert outcome.conflicts_restored == TICKETS // 2  # every forced race was repaired


@pytest.mark.azurite
@pytest.mark.parametrize("scenario", ["duplicate_delivery", "everything_at_once"])
def test_instances_share_their_claims_through_table_storage(sim_clock, azurite, scenario):
    sim, clock = sim_clock
    table = f"claims{uuid.uuid4().hex[:12]}"

    def claims() -> TableClaimStore:  # one client per instance, one table for the app
        return TableClaimStore(
            TableClient.from_connection_string(azurite.connection_string, table), now=clock.now
        )

    outcome = run_scenario(scenario, sim, clock, tickets=TICKETS, seed=11, claims=claims)
    assert (outcome.lost, outcome.duplicate_notes, outcome.overwritten_human_values) == (0, 0, 0)
    assert outcome.poisoned == 0


class _NoClaims:
    """What the app had before: every worker may write (the matrix must see the damage)."""

    def claim(self, key: str, *, lease_s: float) -> Claim:
        return Claim(key, "acquired")

    def complete(self, claim: Claim, outcome: str) -> None: ...
    def release(self, claim: Claim) -> None: ...
    def hold(self, claim: Claim, settle_s: float) -> None: ...
    def purge(self, older_than_s: float) -> int:
        return 0


def test_the_matrix_counts_duplicates_when_nothing_claims(sim_clock):
    sim, clock = sim_clock
    shared = _NoClaims()
    outcome = run_scenario(
        "commit_after_redelivered_read", sim, clock, tickets=TICKETS, seed=7, claims=lambda: shared
    )
    assert outcome.duplicate_notes > 0
