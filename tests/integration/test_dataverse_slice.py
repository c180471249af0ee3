"""The Dynamics 365 slice wired for real: Dataverse simulator on loopback HTTPS, msal, the real
connector, enrichers, pipeline and function app (webhook → queue → worker → $batch write)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import azure.functions as func
import pytest

import function_app
from connectors.dataverse import DataverseConnector
from connectors.queue import InMemoryJobQueue
from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
from domain.settings import HttpSettings, Settings, WebhookSettings
from enrichers import default_enrichers
from tests.integration.conftest import Delivery
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import simulator_connector, tls_session
from triage.dataverse_inbound import WebhookKeys
from triage.pipeline import Pipeline
from triage.service import Service

CLIENT = ("enricher-app", "enricher-app-secret-0123456789")
KEY = "dataverse-hook-key-0123456789"
OUTAGE = {
    "title": "Kasser nede i alle butikker",
    "description": "Hej, kasserne virker ikke i alle butikker siden i morges. Det haster!",
}


@dataclass
class DvSlice:
    sim: DataverseSimulator
    clock: FakeClock
    service: Service
    connector: DataverseConnector
    pending: list[str] = field(default_factory=list)

    def webhook(self, case_id: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
        sent_headers, body = self.sim.webhook_body(case_id)
        req = func.HttpRequest(
            method="POST",
            url="/api/dynamics/webhook",
            headers={**sent_headers, "x-triage-key": KEY, **(headers or {})},
            body=body,
        )
        out = _Out()
        resp = function_app.dynamics_webhook(req, out)
        if out.value is not None:
            self.pending.append(out.value)
        return resp

    def drain(self, *, dequeue_count: int = 1) -> int:
        ran = 0
        while self.pending:
            delivery = Delivery(id=str(ran), body=self.pending.pop(0).encode())
            delivery.count = dequeue_count
            function_app.enrich_worker(delivery)
            ran += 1
        return ran


class _Out:
    value: str | None = None

    def set(self, value: str) -> None:
        self.value = value


@pytest.fixture
def dv() -> Iterator[DvSlice]:
    clock = FakeClock(start=1_800_000_000.0)
    sim = DataverseSimulator(clients={CLIENT[0]: CLIENT[1]}, clock=clock)
    with sim:
        session = tls_session(sim)
        mapping = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
        connector, _ = simulator_connector(
            sim, CLIENT[0], CLIENT[1], mapping.column_types(), session=session
        )
        http = HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
        claims = MemoryClaimStore(now=clock.now)
        pipeline = Pipeline(connector, mapping, default_enrichers(mapping), claims=claims)
        servicenow = Pipeline(connector, load_mapping(), [], claims=claims)  # unused here
        service = Service(
            Settings(webhook=WebhookSettings(secret="unused"), http=http),
            servicenow,
            InMemoryJobQueue(),
            InMemoryJobQueue(),
            now=clock.now,
            others={"dataverse": pipeline},
            dataverse_keys=WebhookKeys(keys=(KEY,)),
        )
        function_app.services.override(service)
        try:
            yield DvSlice(sim, clock, service, connector)
        finally:
            function_app.services.override(None)
            session.close()


def notes(dv: DvSlice, case_id: str) -> list[str]:
    return [str(a.get("notetext")) for a in dv.sim.annotations(case_id)]


def test_a_new_case_gets_its_priority_and_one_note_in_one_change_set(dv: DvSlice) -> None:
    case_id = dv.sim.add_case(OUTAGE)
    assert dv.webhook(case_id).status_code == 202
    assert dv.drain() == 1
    case = dv.sim.get_case(case_id)
    assert case is not None and case["prioritycode"] == 1
    [note] = notes(dv, case_id)
    assert note.startswith("[auto-triage]") and "priority = critical" in note
    batches = [r for r in dv.sim.request_log if r.path.endswith("$batch")]
    assert len(batches) == 1  # values and note together, or not at all


def test_a_priority_an_agent_chose_stays(dv: DvSlice) -> None:
    case_id = dv.sim.add_case({**OUTAGE, "prioritycode": 3})
    dv.webhook(case_id)
    dv.drain()
    case = dv.sim.get_case(case_id)
    assert case is not None and case["prioritycode"] == 3
    assert notes(dv, case_id) == []


def test_our_own_update_does_not_loop(dv: DvSlice) -> None:
    case_id = dv.sim.add_case(OUTAGE)
    dv.webhook(case_id)
    dv.drain()
    # Dataverse would fire again only for a Create; a copy of the event after our write is
    # dropped by the worker's loop guard (our application user made the last update).
    dv.webhook(case_id)
    dv.drain()
    assert len(notes(dv, case_id)) == 1


def test_a_person_edit_between_read_and_write_is_re_decided_not_overwritten(
    dv: DvSlice,
) -> None:
    case_id = dv.sim.add_case(OUTAGE)
    edited: list[str] = []

    def person(entity_set: str, record_id: str, body: dict[str, object]) -> None:
        if not edited:
            edited.append(record_id)
            dv.sim.update_record(record_id, {"prioritycode": 3})

    dv.sim.before_write(person)
    dv.webhook(case_id)
    dv.drain()
    case = dv.sim.get_case(case_id)
    assert case is not None and case["prioritycode"] == 3  # the person's Low stands
    assert notes(dv, case_id) == []  # nothing left to fill after the re-read
    statuses = [r.status for r in dv.sim.request_log if r.path.endswith("$batch")]
    assert statuses == [400]  # one change set, refused whole (412 inside); no second write


def test_an_email_case_with_an_empty_description_is_enriched_from_the_email(
    dv: DvSlice,
) -> None:
    case_id = dv.sim.add_case({"title": "Kasse", "description": None})
    dv.sim.add_email(
        case_id,
        "<html><body><p>Hej,</p><p>Kasserne er nede i alle butikker siden i morges, ingen kan "
        "arbejde. Det haster!</p><p>Venlig hilsen<br>Anna</p></body></html>",
        subject="Kasse",
    )
    dv.webhook(case_id)
    dv.drain()
    case = dv.sim.get_case(case_id)
    assert case is not None and case["prioritycode"] == 1  # the title alone says nothing
    assert any(r.path.endswith("/emails") for r in dv.sim.request_log)


def test_token_expiry_mid_run_refreshes_once(dv: DvSlice) -> None:
    first = dv.sim.add_case(OUTAGE)
    dv.webhook(first)
    dv.drain()
    dv.sim.expire_tokens()
    second = dv.sim.add_case({**OUTAGE, "title": "Kasser nede igen"})
    dv.webhook(second)
    dv.drain()
    assert len(notes(dv, second)) == 1


def test_unauthenticated_and_malformed_webhooks_are_4xx_and_enqueue_nothing(
    dv: DvSlice,
) -> None:
    case_id = dv.sim.add_case(OUTAGE)
    assert dv.webhook(case_id, {"x-triage-key": "wrong-key-0123456789"}).status_code == 401
    bad = func.HttpRequest(
        method="POST",
        url="/api/dynamics/webhook",
        headers={"Content-Type": "application/json", "x-triage-key": KEY},
        body=b'{"MessageName": "Create"',
    )
    resp = function_app.dynamics_webhook(bad, _Out())
    assert resp.status_code == 400
    assert json.loads(resp.get_body())["error"]["code"]
    assert dv.pending == []
