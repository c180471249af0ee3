"""The Functions handlers, called with constructed HttpRequest / QueueMessage objects."""

import hashlib
import json
import time

import azure.functions as func
import pytest

import function_app
from connectors.queue import InMemoryJobQueue
from connectors.state import MemoryReplayGuard
from domain.errors import ConfigError, UnavailableError
from domain.mapping import load_mapping
from domain.settings import Settings, WebhookSettings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from triage.inbound import sign
from triage.jobs import EnrichJob
from triage.pipeline import Pipeline
from triage.service import Service

SYS_ID = "fedcba9876543210fedcba9876543210"
SECRET = "s"


class Out:
    def __init__(self):
        self.value = None

    def set(self, value):
        self.value = value

    def get(self):
        return self.value


@pytest.fixture
def service():
    conn = FakeConnector({SYS_ID: {"category": "", "description": "wifi", "sys_updated_by": "x"}})
    pipe = Pipeline(conn, load_mapping(), [FixedEnricher([suggestion("category", "network")])])
    svc = Service(
        Settings(webhook=WebhookSettings(secret=SECRET)),
        pipe,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
    )
    function_app.services.override(svc)
    yield svc
    function_app.services.override(None)


def request(body: bytes, headers):
    return func.HttpRequest(
        method="POST", url="/api/servicenow/webhook", headers=headers, body=body
    )


def signed(body, ctype="application/json"):
    import time

    t = int(time.time())
    return {
        "Content-Type": ctype,
        "X-Triage-Timestamp": str(t),
        "X-Triage-Signature": sign(body, SECRET.encode(), t),
    }


def test_functions_are_indexed():
    functions = function_app.app.get_functions()  # indexing twice raises: once per session
    names = {f.get_function_name() for f in functions}
    [preview] = [f for f in functions if f.get_function_name() == "preview"]
    [trigger] = [b for b in preview.get_bindings() if b.type == "httpTrigger"]
    assert trigger.auth_level == func.AuthLevel.FUNCTION  # a function key, unlike the webhooks
    assert trigger.route == "preview" and [str(m) for m in trigger.methods] == ["POST"]
    # No ENRICH_BACKFILL__SCHEDULE here: no backfill_schedule timer.
    assert names == {
        "servicenow_webhook", "dynamics_webhook", "enrich_worker", "state_cleanup", "preview",
        "backfill_worker", "backfill_submit", "backfill_status", "health",
    }  # fmt: skip
    [health] = [f for f in functions if f.get_function_name() == "health"]
    [http] = [b for b in health.get_bindings() if b.type == "httpTrigger"]
    assert http.auth_level == func.AuthLevel.FUNCTION  # a function key: it reads the platform
    assert http.route == "health" and [str(m) for m in http.methods] == ["GET"]
    for name, route, method in (("backfill_submit", "backfill", "POST"),
                                ("backfill_status", "backfill/{run_id}", "GET")):  # fmt: skip
        [fn] = [f for f in functions if f.get_function_name() == name]
        [http] = [b for b in fn.get_bindings() if b.type == "httpTrigger"]
        assert http.auth_level == func.AuthLevel.FUNCTION
        assert http.route == route and [str(m) for m in http.methods] == [method]
    [fn] = [f for f in functions if f.get_function_name() == "backfill_worker"]
    [queue] = [b for b in fn.get_bindings() if b.type == "queueTrigger"]
    assert queue.queue_name == "enrich-backfill" and queue.connection == "AzureWebJobsStorage"


def test_preview_answers_what_would_be_written_touching_no_platform(service):
    body = json.dumps({"title": "wifi nede", "platform": "servicenow"}).encode()
    req = func.HttpRequest(
        method="POST", url="/api/preview", headers={"Content-Type": "application/json"}, body=body
    )
    before = json.dumps(service.pipeline.connector.records, sort_keys=True)
    resp = function_app.ticket_preview(req)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    answer = json.loads(resp.get_body())
    assert answer["fields"]["category"]["value"] == "network"  # the service's FixedEnricher
    assert answer["would_write"] == ["category"]
    assert answer["fields"]["impact"] == {
        "value": None, "confidence": None, "source": None, "would_write": False, "action": None,
        "reason": "model not configured", "why": None,
    }  # fmt: skip
    # No platform call: the fake connector saw no read and no write.
    assert service.pipeline.connector.updates == []
    assert json.dumps(service.pipeline.connector.records, sort_keys=True) == before


def test_preview_bad_input_is_a_4xx_and_misconfiguration_a_503(service):
    req = func.HttpRequest(method="POST", url="/api/preview", headers={}, body=b"{")
    resp = function_app.ticket_preview(req)
    assert resp.status_code == 415
    assert json.loads(resp.get_body())["error"]["code"] == "unsupported_media_type"

    def broken():
        raise ConfigError("invalid settings: ENRICH_SERVICENOW__INSTANCE_URL: missing")

    original = function_app.services.set_factory(broken)
    try:
        resp = function_app.ticket_preview(req)
    finally:
        function_app.services.set_factory(original)
    assert resp.status_code == 503
    assert "INSTANCE_URL" not in resp.get_body().decode()


def test_webhook_enqueues_and_answers_202(service):
    body = json.dumps({"sys_id": SYS_ID, "table": "incident"}).encode()
    out = Out()
    resp = function_app.servicenow_webhook(request(body, signed(body)), out)
    assert resp.status_code == 202
    assert resp.mimetype == "application/json"
    assert EnrichJob.from_message(out.value).record_id == SYS_ID


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [(b"{", "application/json", 400), (b"{}", "text/xml", 415), (b"x" * 70_000, "a/b", 413)],
)
def test_webhook_bad_input_is_4xx_json_and_enqueues_nothing(service, body, ctype, status):
    out = Out()
    resp = function_app.servicenow_webhook(request(body, signed(body, ctype)), out)
    assert resp.status_code == status
    assert json.loads(resp.get_body())["error"]["message"]
    assert out.value is None


def test_webhook_unsigned_is_401(service):
    out = Out()
    resp = function_app.servicenow_webhook(
        request(b"{}", {"Content-Type": "application/json"}), out
    )
    assert resp.status_code == 401
    assert out.value is None


def test_webhook_misconfiguration_is_503_not_500():
    def broken():
        raise ConfigError("invalid settings: ENRICH_SERVICENOW__INSTANCE_URL: missing")

    original = function_app.services.set_factory(broken)
    try:
        resp = function_app.servicenow_webhook(request(b"{}", {}), Out())
    finally:
        function_app.services.set_factory(original)
    assert resp.status_code == 503
    assert "INSTANCE_URL" not in resp.get_body().decode()


def test_worker_processes_a_queue_message(service):
    msg = func.QueueMessage(
        id="1",
        body=EnrichJob(table="incident", record_id=SYS_ID, received_at=1).to_message().encode(),
    )
    function_app.enrich_worker(msg)
    assert service.pipeline.connector.records[SYS_ID]["category"] == "network"


def test_worker_raises_transient_errors_for_host_retry(service):
    service.pipeline.connector.fail_next.append(UnavailableError("x", system="servicenow"))
    msg = func.QueueMessage(
        id="1",
        body=EnrichJob(table="incident", record_id=SYS_ID, received_at=1).to_message().encode(),
    )
    with pytest.raises(UnavailableError):
        function_app.enrich_worker(msg)


@pytest.mark.parametrize("raw", [b"\xff\xfe garbage", b"\xff" * 30 * 1024])
def test_worker_poisons_undecodable_bytes_with_their_hash(service, raw):
    # The worker used to decode with errors="replace": the hash was of other bytes, and 30 KiB
    # of bad bytes became 90 KiB of text that the poison queue refused.
    function_app.enrich_worker(func.QueueMessage(id="1", body=raw))
    [poisoned] = service.poison.messages
    envelope = json.loads(poisoned)
    assert envelope["sha256"] == hashlib.sha256(raw).hexdigest()
    assert envelope["size"] == len(raw)
    assert envelope["reason"].startswith("malformed_job: job message is not UTF-8")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Triage-Timestamp": "9" * 400, "X-Triage-Signature": "v1=AAAA"}, 401),
        ({**signed(b"{}"), "Content-Type": "text/x" + "\r\n" * 25_000}, 415),
    ],
)
def test_webhook_hostile_headers_get_a_bounded_4xx(service, headers, status):
    resp = function_app.servicenow_webhook(request(b"{}", headers), Out())
    assert resp.status_code == status
    assert len(resp.get_body()) <= 500


def _timer() -> func.TimerRequest:
    from azure.functions.timer import TimerRequest  # the concrete class the host hands over

    return TimerRequest(past_due=False)


def test_state_cleanup_timer_purges_expired_replay_keys(service):
    clock = [time.time()]
    guard = MemoryReplayGuard(now=lambda: clock[0])
    svc = Service(service.settings, service.pipeline, service.requeue, service.poison, replay=guard)
    function_app.services.override(svc)
    raw = json.dumps({"sys_id": SYS_ID, "table": "incident"}).encode()
    assert function_app.servicenow_webhook(request(raw, signed(raw)), Out()).status_code == 202
    clock[0] += 3600
    function_app.state_cleanup(_timer())
    assert guard.purge() == 0  # the timer already forgot the expired key
    assert guard.first_use("fresh", expires_at=clock[0] + 1) is True


def test_state_cleanup_timer_with_broken_settings_logs_and_returns():
    def broken():
        raise ConfigError("invalid settings: ENRICH_SERVICENOW__INSTANCE_URL: missing")

    original = function_app.services.set_factory(broken)
    try:
        function_app.state_cleanup(_timer())  # no exception escapes to the host
    finally:
        function_app.services.set_factory(original)


def test_dynamics_webhook_enqueues_a_dataverse_job_and_answers_202():
    from tests.triage.test_dataverse_hook import HEADERS, body, make

    svc, _ = make()
    function_app.services.override(svc)
    try:
        out = Out()
        req = func.HttpRequest(
            method="POST", url="/api/dynamics/webhook", headers=HEADERS, body=body()
        )
        resp = function_app.dynamics_webhook(req, out)
        unauthenticated = function_app.dynamics_webhook(
            func.HttpRequest(method="POST", url="/api/dynamics/webhook", headers={}, body=body()),
            Out(),
        )
    finally:
        function_app.services.override(None)
    assert resp.status_code == 202
    assert EnrichJob.from_message(out.value).system == "dataverse"
    assert unauthenticated.status_code == 401
