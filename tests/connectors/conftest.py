"""Shared doubles for connector tests: a fake clock whose sleep advances time, and a mock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from responses.registries import OrderedRegistry

from domain.settings import HttpSettings

INSTANCE = "https://acme.service-now.com"
EPOCH = 1_700_000_000.0


class FakeClock:
    """Wall clock and monotonic clock in one; ``sleep`` records the wait and advances both."""

    def __init__(self, start: float = EPOCH) -> None:
        self.t = start
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http_settings() -> HttpSettings:
    return HttpSettings(
        connect_timeout_s=3.05,
        read_timeout_s=20.0,
        max_attempts=5,
        max_elapsed_s=60.0,
        backoff_initial_s=0.5,
        backoff_max_s=1.0,
        max_retry_wait_s=30.0,
    )


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Responses served once each, in registration order; unused ones fail the test."""
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        yield mock
