import hashlib
import json

import pytest

from connectors.queue import InMemoryJobQueue
from connectors.state import Claim
from domain.errors import AuthError, ThrottledError, UnavailableError
from domain.mapping import load_mapping
from domain.settings import QueueSettings, Settings, WebhookSettings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from triage.inbound import sign
from triage.jobs import EnrichJob, message_bytes
from triage.pipeline import Pipeline
from triage.service import Service

NOW = 1_800_000_000.0
SYS_ID = "abcdef0123456789abcdef0123456789"
SECRET = "hook-secret"


def make_service(records=None, secret=SECRET, **queue):
    settings = Settings(
        webhook=WebhookSettings(secret=secret, max_body_bytes=2048)
        if secret
        else WebhookSettings(),
        queue=QueueSettings(**queue),
    )
    connector = FakeConnector(records if records is not None else {})
    pipe = Pipeline(connector, load_mapping(), [FixedEnricher([suggestion("category", "network")])])
    svc = Service(settings, pipe, InMemoryJobQueue(), InMemoryJobQueue(), now=lambda: NOW)
    return svc, connector


def signed(body: bytes, t=NOW, secret=SECRET, ctype="application/json"):
    return {
        "Content-Type": ctype,
        "X-Triage-Timestamp": str(int(t)),
        "X-Triage-Signature": sign(body, secret.encode(), int(t)),
    }


def body(**extra):
    return json.dumps({"sys_id": SYS_ID, "table": "incident", **extra}).encode()


def test_valid_webhook_is_accepted_with_a_job():
    svc, _ = make_service()
    reply = svc.accept_servicenow_webhook(body(number="INC1"), signed(body(number="INC1")))
    assert reply.status == 202
    assert reply.job == EnrichJob(table="incident", record_id=SYS_ID, received_at=NOW)


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code"),
    [
        (b"{oops", signed(b"{oops"), 400, "malformed_json"),
        (body(), {**signed(body()), "X-Triage-Signature": "v1=AAAA"}, 401, "unauthenticated"),
        (body(), signed(body(), t=NOW - 301), 401, "unauthenticated"),
        (b"x" * 4096, signed(b"x" * 4096), 413, "too_large"),
        (body(), signed(body(), ctype="text/plain"), 415, "unsupported_media_type"),
        (b'{"sys_id": "nope"}', signed(b'{"sys_id": "nope"}'), 400, "invalid_body"),
    ],
)
def test_bad_webhooks_get_a_4xx_naming_the_problem(raw, headers, status, code):
    svc, _ = make_service()
    reply = svc.accept_servicenow_webhook(raw, headers)
    assert (reply.status, reply.body["error"]["code"]) == (status, code)
    assert reply.body["error"]["message"]
    assert reply.job is None


def test_unconfigured_secret_refuses_with_503_not_500():
    svc, _ = make_service(secret=None)
    reply = svc.accept_servicenow_webhook(body(), signed(body()))
    assert reply.status == 503


def job(**kw):
    return EnrichJob(table="incident", record_id=SYS_ID, received_at=NOW, **kw).to_message()


def incident():
    return {SYS_ID: {"category": "inquiry", "description": "vpn down", "sys_updated_by": "bob"}}


def test_job_enriches_the_record():
    svc, conn = make_service(incident())
    result = svc.process_job(job())
    assert result is not None and result.status == "written"
    assert conn.records[SYS_ID]["category"] == "network"


def test_throttled_job_is_requeued_with_the_platforms_delay():
    svc, conn = make_service(incident())
    conn.fail_next.append(ThrottledError("429", system="servicenow", retry_after_s=1800))
    assert svc.process_job(job()) is None
    [(message, delay)] = svc.requeue.sent
    assert delay == 1800
    assert EnrichJob.from_message(message).requeues == 1


def test_throttled_without_hint_uses_default_delay_and_gives_up_after_max_requeues():
    svc, conn = make_service(incident(), throttled_delay_s=90, max_requeues=1)
    conn.fail_next.append(ThrottledError("429", system="servicenow"))
    svc.process_job(job())
    assert svc.requeue.sent[0][1] == 90
    conn.fail_next.append(ThrottledError("429", system="servicenow"))
    with pytest.raises(ThrottledError):  # host retries, then poison queue
        svc.process_job(job(requeues=1))


def test_transient_failure_raises_for_a_host_retry():
    svc, conn = make_service(incident())
    conn.fail_next.append(UnavailableError("503", system="servicenow", status_code=503))
    with pytest.raises(UnavailableError):
        svc.process_job(job())
    assert svc.poison.sent == []


def envelope(message: str) -> dict:
    return json.loads(message)


def test_permanent_failure_and_malformed_jobs_go_to_poison_at_once():
    svc, conn = make_service(incident())
    conn.fail_next.append(AuthError("denied", system="servicenow", status_code=403))
    assert svc.process_job(job()) is None
    assert svc.process_job("not json") is None
    permanent, malformed = map(envelope, svc.poison.messages)
    assert permanent == {
        "reason": "AuthError: [servicenow, HTTP 403] denied",
        "sha256": hashlib.sha256(job().encode()).hexdigest(),
        "size": len(job()),
        "message": job(),
    }
    assert malformed["reason"].startswith("malformed_job: job message is not JSON")
    assert malformed["message"] == "not json"
    assert malformed["sha256"] == hashlib.sha256(b"not json").hexdigest()


def test_deleted_record_is_dropped():
    svc, _conn = make_service({})
    assert svc.process_job(job()) is None
    assert svc.poison.sent == [] and svc.requeue.sent == []


def test_malformed_job_error_names_the_key_without_echoing_values():
    from domain.errors import InboundError

    bad = job().replace(SYS_ID, "zz-not-an-id-zz")
    with pytest.raises(InboundError, match="record_id") as info:
        EnrichJob.from_message(bad)
    assert "zz-not-an-id-zz" not in str(info.value)


def test_random_garbage_never_raises_and_never_answers_5xx():
    import random

    rng = random.Random(1234)
    svc, _ = make_service()
    samples = [b"", b"{}", b"null", b'{"sys_id": null}', b'{"sys_id": ["a"]}', b"\x00" * 10]
    samples += [rng.randbytes(rng.randint(0, 3000)) for _ in range(300)]
    samples += [json.dumps({"sys_id": "a" * rng.randint(0, 40), "table": rng.choice(["", "x", 1])}).encode()
                for _ in range(100)]  # fmt: skip
    for raw in samples:
        for headers in (signed(raw), {}, {"X-Triage-Timestamp": "1", "X-Triage-Signature": "v1="}):
            reply = svc.accept_servicenow_webhook(raw, headers)
            assert 400 <= reply.status < 500, (raw[:40], reply)
            assert reply.job is None


def test_random_garbage_jobs_go_to_poison_without_raising():
    import random

    rng = random.Random(99)
    svc, _ = make_service(incident())
    garbage: list[bytes | str] = ["", "{}", "[]", '{"version": 2}']
    garbage += [job().replace("incident", "INCIDENT")]
    garbage += [rng.randbytes(rng.randint(1, 200)) for _ in range(50)]
    for raw in garbage:
        assert svc.process_job(raw) is None
    digests = [envelope(m)["sha256"] for m in svc.poison.messages]
    assert digests == [hashlib.sha256(message_bytes(raw)).hexdigest() for raw in garbage]


def test_job_arrives_as_bytes():
    svc, conn = make_service(incident())
    assert svc.process_job(job().encode()) is not None
    assert conn.records[SYS_ID]["category"] == "network"


@pytest.mark.parametrize(
    "raw",
    [
        job().replace('"version":1', '"version":true'),
        job().replace(f'"received_at":{NOW}', '"received_at":1e999'),
        job().replace(f'"received_at":{NOW}', '"received_at":' + "1" * 4400),
        "[" * 5000 + "]" * 5000,
        job().encode()[:-1] + b"\xff}",
    ],
)
def test_lax_or_unparseable_jobs_are_poisoned_not_run(raw):
    svc, conn = make_service(incident())
    assert svc.process_job(raw) is None
    [poisoned] = svc.poison.messages
    assert envelope(poisoned)["sha256"] == hashlib.sha256(message_bytes(raw)).hexdigest()
    assert conn.records[SYS_ID]["category"] == "inquiry"


@pytest.mark.parametrize("raw", ["x" * 60_000, b"\xff" * 30_000, "é" * 40_000])
def test_oversize_malformed_job_is_poisoned_within_the_queue_limit(raw):
    # Sending the raw message used to raise RejectedError (64 KiB once base64 encoded).
    svc, _ = make_service(incident())
    assert svc.process_job(raw) is None
    [poisoned] = svc.poison.messages
    assert envelope(poisoned)["size"] == len(message_bytes(raw))
    assert "…[truncated " in envelope(poisoned)["message"]


def test_malformed_job_with_the_poison_queue_down_is_logged_by_hash_not_content(caplog):
    svc, _ = make_service(incident())
    svc.poison.error = UnavailableError("send message: down", system="storage")
    raw = "SECRET-TICKET-TEXT " * 100
    assert svc.process_job(raw) is None
    [record] = [r for r in caplog.records if "could not be poisoned" in r.getMessage()]
    text = record.getMessage()
    assert hashlib.sha256(raw.encode()).hexdigest() in text and str(len(raw)) in text
    assert "SECRET-TICKET-TEXT" not in text


def test_permanent_failure_with_the_poison_queue_down_raises_for_a_host_retry():
    # Unlike a malformed message, the job itself is fine: the host retries it and finally
    # moves it to the poison queue itself, so nothing is lost.
    svc, conn = make_service(incident())
    conn.fail_next.append(AuthError("denied", system="servicenow", status_code=403))
    svc.poison.error = UnavailableError("send message: down", system="storage")
    with pytest.raises(UnavailableError):
        svc.process_job(job())


# ---- replay guard -------------------------------------------------------------------------


def test_a_replayed_signed_request_is_refused_with_409_and_enqueues_nothing():
    svc, _ = make_service()
    raw = body(sys_mod_count=0)
    headers = signed(raw)
    assert svc.accept_servicenow_webhook(raw, headers).status == 202
    again = svc.accept_servicenow_webhook(raw, headers)
    assert (again.status, again.body["error"]["code"], again.job) == (409, "replayed", None)
    # Another valid v1= value beside the captured one does not make it a new request.
    rotated = {**headers, "X-Triage-Signature": headers["X-Triage-Signature"] + ",v1=AAAA"}
    assert svc.accept_servicenow_webhook(raw, rotated).status == 409


def test_the_business_rule_firing_again_is_a_new_request():
    svc, _ = make_service()
    first, second = body(sys_mod_count=0), body(sys_mod_count=1)
    assert svc.accept_servicenow_webhook(first, signed(first)).status == 202
    assert svc.accept_servicenow_webhook(second, signed(second)).status == 202
    # Same body a second later: a new signature over a new timestamp.
    assert svc.accept_servicenow_webhook(first, signed(first, t=NOW + 1)).status == 202


class _DownReplay:
    def first_use(self, key: str, *, expires_at: float) -> bool:
        raise UnavailableError("create entity: ServiceUnavailable", system="storage")

    def purge(self) -> int:
        raise UnavailableError("query: ServiceUnavailable", system="storage")


def test_replay_store_down_fails_closed_with_503_not_500():
    svc, _ = make_service()
    svc = Service(svc.settings, svc.pipeline, svc.requeue, svc.poison, replay=_DownReplay())
    raw = body()
    reply = svc.accept_servicenow_webhook(raw, signed(raw, t=svc.now()))
    assert (reply.status, reply.body["error"]["code"], reply.job) == (503, "unavailable", None)


# ---- claims, back-off and state upkeep -------------------------------------------------------


class _BusyClaims:
    def claim(self, key: str, *, lease_s: float) -> Claim:
        return Claim(key, "busy", retry_after_s=42.0)

    def complete(self, claim: Claim, outcome: str) -> None: ...
    def release(self, claim: Claim) -> None: ...
    def hold(self, claim: Claim, settle_s: float) -> None: ...
    def purge(self, older_than_s: float) -> int:
        return 7


def test_a_job_busy_in_another_worker_is_requeued_with_the_claims_remaining_lease():
    svc, conn = make_service(incident())
    svc.pipeline.claims = _BusyClaims()
    assert svc.process_job(job()) is None
    [(message, delay)] = svc.requeue.sent
    assert delay == 42.0
    assert EnrichJob.from_message(message).requeues == 1
    assert conn.updates == []


def test_throttling_without_a_hint_backs_off_exponentially_up_to_an_hour():
    svc, conn = make_service(incident(), throttled_delay_s=60)
    delays = []
    for requeues in (0, 1, 3, 6, 12, 20):
        conn.fail_next.append(ThrottledError("429", system="servicenow"))
        svc.process_job(job(requeues=requeues))
        delays.append(svc.requeue.sent[-1][1])
    assert delays == [60, 120, 480, 3600, 3600, 3600]


def test_purge_state_counts_and_never_raises():
    svc, _ = make_service()
    svc.pipeline.claims = _BusyClaims()
    assert svc.purge_state() == {"replay": 0, "claims": 7}
    down = Service(svc.settings, svc.pipeline, svc.requeue, svc.poison, replay=_DownReplay())
    assert down.purge_state() == {"claims": 7}
