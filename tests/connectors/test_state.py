"""connectors.state: replay guard and job claims, on Azurite and in memory, incl. races."""

from __future__ import annotations

import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.data.tables import TableClient

from connectors.state import Claim, ClaimStore, MemoryClaimStore, MemoryReplayGuard, ReplayGuard
from connectors.table_state import TableClaimStore, TableReplayGuard
from domain.errors import UnavailableError
from tests.azurite import connection_string
from tests.simulators import FakeClock


@pytest.fixture
def table_name() -> str:
    return f"t{uuid.uuid4().hex[:20]}"


def _client(azurite: Any, name: str) -> TableClient:
    return TableClient.from_connection_string(azurite.connection_string, name)


def _factories(kind: str) -> list[Any]:
    """(id, builder) where builder(azurite, table, clock) makes a fresh 'instance'."""
    if kind == "claims":
        table = pytest.param(
            lambda az, name, clock: TableClaimStore(_client(az, name), now=clock.now),
            id="table",
            marks=pytest.mark.azurite,
        )
        memory = pytest.param(None, id="memory")
    else:
        table = pytest.param(
            lambda az, name, clock: TableReplayGuard(_client(az, name), now=clock.now),
            id="table",
            marks=pytest.mark.azurite,
        )
        memory = pytest.param(None, id="memory")
    return [table, memory]


@pytest.fixture(params=_factories("claims"))
def claim_stores(request: pytest.FixtureRequest, table_name: str):
    """A function returning ClaimStores that share state (two instances of the app)."""
    clock = FakeClock()
    if request.param is None:
        shared = MemoryClaimStore(now=clock.now)
        return clock, lambda: shared
    azurite = request.getfixturevalue("azurite")
    return clock, lambda: request.param(azurite, table_name, clock)


@pytest.fixture(params=_factories("replay"))
def replay_guards(request: pytest.FixtureRequest, table_name: str):
    clock = FakeClock()
    if request.param is None:
        shared = MemoryReplayGuard(now=clock.now)
        return clock, lambda: shared
    azurite = request.getfixturevalue("azurite")
    return clock, lambda: request.param(azurite, table_name, clock)


class TestReplayGuard:
    def test_a_key_is_accepted_once(self, replay_guards):
        clock, make = replay_guards
        guard: ReplayGuard = make()
        assert guard.first_use("k1", expires_at=clock.now() + 300) is True
        assert guard.first_use("k1", expires_at=clock.now() + 300) is False
        assert make().first_use("k1", expires_at=clock.now() + 300) is False
        assert guard.first_use("k2", expires_at=clock.now() + 300) is True

    def test_concurrent_instances_accept_each_key_exactly_once(self, replay_guards):
        clock, make = replay_guards
        guards = [make() for _ in range(4)]
        keys = [f"req-{i}" for i in range(15)]
        expires = clock.now() + 300

        def offer(args: tuple[int, str]) -> tuple[str, bool]:
            i, key = args
            return key, guards[i % 4].first_use(key, expires_at=expires)

        work = [(i, k) for k in keys for i in range(4)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(offer, work))
        accepted = [k for k, ok in results if ok]
        assert sorted(accepted) == sorted(keys)


def test_replay_purge_drops_expired_keys_only(replay_guards):
    clock, make = replay_guards
    guard = make()
    guard.first_use("old", expires_at=clock.now() + 300)
    clock.advance(7200)
    guard.first_use("new", expires_at=clock.now() + 300)
    assert guard.purge() == 1
    assert guard.first_use("new", expires_at=clock.now() + 300) is False


class TestClaims:
    def test_acquire_busy_complete_done(self, claim_stores):
        clock, make = claim_stores
        a: ClaimStore = make()
        b: ClaimStore = make()
        first = a.claim("sn:1:h", lease_s=60)
        assert first.state == "acquired" and not first.reclaimed
        clock.advance(10)
        busy = b.claim("sn:1:h", lease_s=60)
        assert busy.state == "busy"
        assert busy.retry_after_s == pytest.approx(50, abs=0.01)
        a.complete(first, "written")
        clock.advance(3600)
        done = b.claim("sn:1:h", lease_s=60)
        assert (done.state, done.outcome) == ("done", "written")

    def test_release_lets_the_next_claim_in_at_once(self, claim_stores):
        _, make = claim_stores
        first = make().claim("k", lease_s=60)
        make().release(first)
        again = make().claim("k", lease_s=60)
        assert again.state == "acquired" and not again.reclaimed

    def test_an_expired_lease_is_taken_over_and_marked_reclaimed(self, claim_stores):
        clock, make = claim_stores
        first = make().claim("k", lease_s=60)
        clock.advance(61)
        second = make().claim("k", lease_s=60)
        assert second.state == "acquired" and second.reclaimed
        # The crashed holder wakes up late: its complete/release must not touch the new claim.
        make().complete(first, "written")
        make().release(first)
        third = make().claim("k", lease_s=60)
        assert third.state == "busy"

    def test_hold_shortens_the_lease_to_the_settle_time(self, claim_stores):
        clock, make = claim_stores
        store = make()
        claim = store.claim("k", lease_s=300)
        store.hold(claim, 20)
        clock.advance(10)
        assert make().claim("k", lease_s=300).state == "busy"
        clock.advance(11)
        taken = make().claim("k", lease_s=300)
        assert taken.state == "acquired" and taken.reclaimed

    @pytest.mark.parametrize("expired", [False, True], ids=["fresh", "expired"])
    def test_racing_instances_acquire_exactly_once(self, claim_stores, expired):
        clock, make = claim_stores
        if expired:
            make().claim("race", lease_s=5)
            clock.advance(6)
        stores = [make() for _ in range(6)]
        barrier = threading.Barrier(6)

        def go(store: ClaimStore) -> Claim:
            barrier.wait()
            return store.claim("race", lease_s=60)

        with ThreadPoolExecutor(6) as pool:
            claims = list(pool.map(go, stores))
        states = sorted(c.state for c in claims)
        assert states == ["acquired"] + ["busy"] * 5


def test_claim_purge_forgets_old_rows_only(claim_stores):
    clock, make = claim_stores
    store = make()
    store.complete(store.claim("old", lease_s=60), "written")
    clock.advance(8 * 86400)
    store.complete(store.claim("new", lease_s=60), "written")
    assert store.purge(7 * 86400) == 1
    assert make().claim("old", lease_s=60).state == "acquired"
    assert make().claim("new", lease_s=60).state == "done"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_storage_down_is_a_transient_connector_error():
    endpoint = f"http://127.0.0.1:{_closed_port()}/devstoreaccount1"
    client = TableClient.from_connection_string(
        connection_string(endpoint, endpoint, endpoint), "claims", retry_total=0
    )
    with pytest.raises(UnavailableError):
        TableClaimStore(client).claim("k", lease_s=60)
    with pytest.raises(UnavailableError):
        TableReplayGuard(client).first_use("k", expires_at=1.0)
