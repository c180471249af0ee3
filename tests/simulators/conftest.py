"""Fixtures shared by the ServiceNow simulator's tests: a running simulator and a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator

AUTH = ("admin", "pw")
CLIENT_SECRET = "csecret"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[ServiceNowSimulator]:
    """A running simulator; a test that provokes a refusal clears ``sim.errors`` itself."""
    clients = {"cid": (CLIENT_SECRET, "svc_ticket_enricher")}
    with ServiceNowSimulator(users={"admin": "pw"}, oauth_clients=clients, clock=clock) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = AUTH
        yield session
