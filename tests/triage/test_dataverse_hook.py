"""Service.accept_dataverse_webhook and Dataverse jobs through the worker."""

import json

from connectors.queue import InMemoryJobQueue
from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
from domain.settings import Settings, WebhookSettings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from tests.triage.test_dataverse_inbound import APP_USER, CASE, KEY, USER, context
from triage.dataverse_inbound import WebhookKeys
from triage.jobs import EnrichJob
from triage.pipeline import Pipeline
from triage.service import Service

NOW = 1_800_000_000.0
MAPPING = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH).model_copy(
    update={"integration_user": APP_USER}
)
HEADERS = {"Content-Type": "application/json", "x-triage-key": KEY}
KEYS = WebhookKeys(keys=(KEY,))


def make(keys: WebhookKeys | None = KEYS):
    conn = FakeConnector(
        {CASE: {"title": "Kasse nede", "description": "", "prioritycode": "2",
                "_modifiedby_value": USER}}
    )  # fmt: skip
    dataverse = Pipeline(
        conn, MAPPING, [FixedEnricher([suggestion("priority", "high")])], claims=MemoryClaimStore()
    )
    servicenow = Pipeline(FakeConnector(), load_mapping(), [], claims=MemoryClaimStore())
    service = Service(
        Settings(webhook=WebhookSettings(secret="s")),
        servicenow,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
        now=lambda: NOW,
        others={"dataverse": dataverse},
        dataverse_keys=keys,
    )
    return service, conn


def body(**overrides) -> bytes:
    return json.dumps(context(**overrides)).encode()


def test_a_new_case_is_accepted_as_a_dataverse_job_and_the_worker_fills_it():
    service, conn = make()
    reply = service.accept_dataverse_webhook(body(), HEADERS, {})
    assert reply.status == 202
    assert reply.job == EnrichJob(
        system="dataverse", table="incident", record_id=CASE, received_at=NOW
    )
    result = service.process_job(reply.job.to_message())
    assert result is not None and result.status == "written"
    assert conn.updates == [(CASE, {"prioritycode": "1"})]
    assert len(conn.notes) == 1


def test_our_own_update_is_acknowledged_without_a_job():
    service, _ = make()
    reply = service.accept_dataverse_webhook(body(UserId=APP_USER), HEADERS, {})
    assert (reply.status, reply.job) == (200, None)


def test_without_a_key_configured_calls_are_refused_with_503():
    service, _ = make(keys=None)
    reply = service.accept_dataverse_webhook(body(), HEADERS, {})
    assert (reply.status, reply.body["error"]["code"], reply.job) == (503, "not_configured", None)


def test_a_wrong_key_is_401_and_an_oversize_body_413():
    service, _ = make()
    wrong = service.accept_dataverse_webhook(body(), {**HEADERS, "x-triage-key": "x" * 20}, {})
    assert (wrong.status, wrong.job) == (401, None)
    big = service.accept_dataverse_webhook(b"{" + b" " * 600_000 + b"}", HEADERS, {})
    assert (big.status, big.job) == (413, None)


def test_a_large_create_under_the_256_kb_trim_is_accepted():
    service, _ = make()
    padding = "x" * 250_000  # Dataverse sends up to 256 KB before it trims the context
    reply = service.accept_dataverse_webhook(body(OrganizationName=padding), HEADERS, {})
    assert reply.status == 202


def test_a_dataverse_job_without_a_dataverse_platform_goes_to_poison():
    service, _ = make()
    service.others = {}
    job = EnrichJob(system="dataverse", table="incident", record_id=CASE, received_at=NOW)
    assert service.process_job(job.to_message()) is None
    [(message, _)] = service.poison.sent
    assert json.loads(message)["reason"].startswith("not_configured")
