"""The whole slice wired for real: simulator on loopback, real connector, real enrichers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest

import function_app
from connectors.queue import InMemoryJobQueue
from connectors.servicenow import ServiceNowConnector
from connectors.shadow import ShadowStore
from connectors.state import ClaimStore, MemoryClaimStore, MemoryReplayGuard
from domain.mapping import load_mapping
from domain.settings import HttpSettings, ServiceNowSettings, Settings, WebhookSettings
from enrichers import default_enrichers
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator
from triage.inbound import sign
from triage.pipeline import Pipeline
from triage.service import Service

SECRET = "integration-secret"
CLIENT = ("enricher-client", "enricher-client-secret")
INTEGRATION_USER = "svc_ticket_enricher"


@dataclass
class Slice:
    """Simulator + function app wired together; ``pending`` holds queued job messages."""

    sim: ServiceNowSimulator
    clock: FakeClock
    service: Service
    sleeps: list[float] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def webhook(self, sys_id: str, table: str = "incident") -> func.HttpResponse:
        # What docs/servicenow-business-rule.js sends: its sys_mod_count makes each firing
        # a different signed request (the replay guard refuses an identical one).
        rec = self.sim.get_record(table, sys_id) or {}
        body = json.dumps(
            {
                "sys_id": sys_id,
                "table": table,
                "number": rec.get("number"),
                "sys_updated_by": rec.get("sys_updated_by"),
                "sys_mod_count": int(rec.get("sys_mod_count") or 0),
            }
        ).encode()
        t = int(self.clock.now())
        headers = {
            "Content-Type": "application/json",
            "X-Triage-Timestamp": str(t),
            "X-Triage-Signature": sign(body, SECRET.encode(), t),
        }
        req = func.HttpRequest(
            method="POST", url="/api/servicenow/webhook", headers=headers, body=body
        )
        out = _Out()
        resp = function_app.servicenow_webhook(req, out)
        if out.value is not None:
            self.pending.append(out.value)
        return resp

    def drain(self, limit: int = 10, *, dequeue_count: int = 1) -> int:
        """Run queued jobs through the worker (as the host would), returning how many ran."""
        ran = 0
        while self.pending and ran < limit:
            message = self.pending.pop(0)
            delivery = Delivery(id=str(ran), body=message.encode())
            delivery.count = dequeue_count
            function_app.enrich_worker(delivery)
            ran += 1
        return ran


class Delivery(func.QueueMessage):
    """A queue message as the host hands it over, with its dequeue count."""

    count: int = 1

    @property
    def dequeue_count(self) -> int:
        return self.count


class _Out:
    value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[ServiceNowSimulator]:
    simulator = ServiceNowSimulator(
        users={"anna.b": "pw"},
        oauth_clients={CLIENT[0]: (CLIENT[1], INTEGRATION_USER)},
        clock=clock,
    )
    with simulator:
        yield simulator


def build_slice(
    sim: ServiceNowSimulator,
    clock: FakeClock,
    *,
    client_secret: str = CLIENT[1],
    wrap: Callable[[ServiceNowConnector], Any] | None = None,
    claims: ClaimStore | None = None,
    shadow: ShadowStore | None = None,
    **http: float,
) -> Slice:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    sn = ServiceNowSettings(
        instance_url=sim.url, auth="oauth", client_id=CLIENT[0], client_secret=client_secret
    )
    http_settings = HttpSettings(
        **{"read_timeout_s": 5.0, "backoff_initial_s": 0.1, "backoff_max_s": 2.0, **http}
    )
    connector = ServiceNowConnector(
        sn, http_settings, sleep=sleep, now=clock.now, monotonic=clock.now
    )
    mapping = load_mapping()
    settings = Settings(servicenow=sn, http=http_settings, webhook=WebhookSettings(secret=SECRET))
    pipeline = Pipeline(
        wrap(connector) if wrap else connector,
        mapping,
        default_enrichers(mapping),
        claims=claims if claims is not None else MemoryClaimStore(now=clock.now),
        shadow=shadow,
        now=clock.now,
    )
    service = Service(
        settings,
        pipeline,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
        replay=MemoryReplayGuard(now=clock.now),
        now=clock.now,
    )
    return Slice(sim=sim, clock=clock, service=service, sleeps=sleeps)


@contextmanager
def installed(s: Slice) -> Iterator[Slice]:
    """Make ``s`` the function app's service for the duration."""
    function_app.services.override(s.service)
    try:
        yield s
    finally:
        function_app.services.override(None)
        s.service.pipeline.connector.close()  # type: ignore[attr-defined]


@pytest.fixture
def app_slice(sim: ServiceNowSimulator, clock: FakeClock) -> Iterator[Slice]:
    with installed(build_slice(sim, clock)) as s:
        yield s
