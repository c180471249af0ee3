"""Health: the checker over fake probes, the probes against the simulator and Azurite."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from connectors.queue_depth import QueueDepths
from domain.errors import AuthError, ConfigError, ThrottledError, UnavailableError
from tests.azurite import Azurite
from tests.integration.conftest import Slice, build_slice, clock, installed, sim  # noqa: F401  (fixtures)
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator
from triage.backfill.spec import BACKFILL_QUEUE
from triage.health import Check, HealthChecker, short_reason
from triage.health_probes import QUEUE_NAMES, probes_for, service_probes

pytest_plugins = ["tests.azurite"]

OK = Check("ok")


def checker(**probes: object) -> HealthChecker:
    return HealthChecker(lambda: probes, timeout_s=0.5)  # type: ignore[arg-type]


def test_all_ok_is_ok_and_a_failing_critical_check_fails() -> None:
    assert checker(configuration=lambda: OK, queues=lambda: OK).report().status == "ok"
    failing = Check("failing", {"reason": "x"})
    report = checker(configuration=lambda: OK, platform=lambda: failing).report()
    assert report.status == "failing" and report.http_status == 503
    # A failing non-critical check (model) only degrades.
    report = checker(configuration=lambda: OK, model=lambda: failing).report()
    assert report.status == "degraded" and report.http_status == 200


def test_a_probe_that_raises_is_failing_with_its_type_only() -> None:
    def boom() -> Check:
        raise UnavailableError(
            "secret-token-xyz leaked in text", system="servicenow", status_code=502
        )

    report = checker(platform=boom).report()
    body = json.dumps(report.as_json())
    assert report.checks["platform"].detail == {"reason": "UnavailableError (HTTP 502)"}
    assert "secret-token-xyz" not in body


def test_each_check_is_bounded_in_time() -> None:
    release = threading.Event()

    def hangs() -> Check:
        release.wait(10)
        return OK

    try:
        report = checker(configuration=lambda: OK, platform=hangs).report()
    finally:
        release.set()
    assert report.checks["platform"] == Check("failing", {"reason": "timed out after 0.5 s"})
    assert report.checks["configuration"] == OK


def test_the_report_is_cached_for_a_few_seconds() -> None:
    now = [0.0]
    calls: list[int] = []

    def counted() -> Check:
        calls.append(1)
        return OK

    health = HealthChecker(lambda: {"platform": counted}, ttl_s=10.0, clock=lambda: now[0])
    for _ in range(5):
        health.report()
    assert len(calls) == 1
    now[0] = 10.5
    health.report()
    assert len(calls) == 2


def test_broken_settings_fail_configuration() -> None:
    def broken() -> object:
        raise ConfigError("invalid settings: ENRICH_SERVICENOW__CLIENT_SECRET=hunter2")

    report = HealthChecker(probes_for(broken, lambda s: None)).report()  # type: ignore[arg-type]
    assert report.status == "failing"
    assert report.checks["configuration"].detail == {"reason": "ConfigError"}
    assert "hunter2" not in json.dumps(report.as_json())


@pytest.fixture
def app(sim: ServiceNowSimulator, clock: FakeClock) -> Iterator[Slice]:  # noqa: F811
    with installed(build_slice(sim, clock)) as s:
        yield s


def depths(**counts: int) -> dict[str, int]:
    return {name: counts.get(name.replace("-", "_"), 0) for name in QUEUE_NAMES}


def test_probes_against_the_simulator_pass(app: Slice) -> None:
    report = HealthChecker(lambda: service_probes(app.service, lambda: depths())).report()
    assert report.status == "ok", report.as_json()
    checks = report.as_json()["checks"]
    mapping = app.service.pipeline.mapping
    assert checks["mapping"]["servicenow"] == {"version": 1, "fingerprint": mapping.fingerprint}
    assert checks["model"] == {"status": "ok", "servicenow": None}
    assert checks["token"] == {"status": "ok", "servicenow": "acquired"}
    assert checks["platform"]["servicenow"]["reachable"] is True
    # ONE cheap authenticated read: sys_user, limit 1 (token and platform share it).
    reads = [r for r in app.sim.request_log if "/api/now/table/" in r.path]
    assert len(reads) == 1 and reads[0].path.endswith("/sys_user")
    assert reads[0].query["sysparm_limit"] == "1" and reads[0].user == "svc_ticket_enricher"
    assert reads[0].query["sysparm_query"].startswith("user_name=svc_ticket_enricher^")


def test_a_refused_token_fails_token_and_platform(app: Slice) -> None:
    app.sim.fail_next(1, status=401, message="User Not Authenticated")
    app.sim.fail_next(1, status=401, message="User Not Authenticated")  # the one refresh
    report = HealthChecker(lambda: service_probes(app.service, lambda: depths())).report()
    checks = report.as_json()["checks"]
    assert report.status == "failing"
    assert checks["token"]["status"] == "failing"
    assert checks["platform"]["servicenow"]["reachable"] is True


def test_an_unreachable_platform_fails(app: Slice) -> None:
    app.sim.fail_next(10, status=503)
    report = HealthChecker(lambda: service_probes(app.service, lambda: depths())).report()
    checks = report.as_json()["checks"]
    assert report.status == "failing"
    assert checks["platform"]["servicenow"] == {
        "reachable": False,
        "latency_ms": checks["platform"]["servicenow"]["latency_ms"],
        "reason": "UnavailableError (HTTP 503)",
    }
    assert checks["token"]["status"] == "degraded"


def test_poison_messages_and_a_backlog_degrade(app: Slice) -> None:
    report = HealthChecker(
        lambda: service_probes(app.service, lambda: depths(enrich_jobs_poison=2))
    ).report()
    assert report.status == "degraded" and report.checks["queues"].status == "degraded"
    report = HealthChecker(
        lambda: service_probes(app.service, lambda: depths(enrich_jobs=5000))
    ).report()
    assert report.checks["queues"].status == "degraded"
    report = HealthChecker(lambda: service_probes(app.service, None)).report()
    assert report.checks["queues"].status == "failing" and report.status == "failing"


def test_short_reason_names_type_and_status_only() -> None:
    assert short_reason(ThrottledError("wait", system="servicenow")) == "ThrottledError (HTTP 429)"
    assert short_reason(AuthError("bad", system="dataverse", status_code=403)) == (
        "AuthError (HTTP 403)"
    )
    assert short_reason(ValueError("ticket text")) == "ValueError"


def test_queue_names_match_the_app() -> None:
    assert BACKFILL_QUEUE in QUEUE_NAMES and f"{BACKFILL_QUEUE}-poison" in QUEUE_NAMES


def test_queue_depths_on_azurite(azurite: Azurite, queue_name: str) -> None:
    jobs = azurite.queue_client(queue_name)
    jobs.create_queue()
    for n in range(3):
        jobs.send_message(f"m{n}")
    env = {"AzureWebJobsStorage": azurite.connection_string}
    reader = QueueDepths.from_settings(
        env, "AzureWebJobsStorage", [queue_name, f"{queue_name}-poison"]
    )
    assert reader.read() == {queue_name: 3, f"{queue_name}-poison": 0}  # no poison queue yet


def test_queue_depths_when_storage_is_down() -> None:
    env = {
        "AzureWebJobsStorage": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        )
    }
    reader = QueueDepths.from_settings(env, "AzureWebJobsStorage", ["enrich-jobs"], timeout_s=0.5)
    with pytest.raises(UnavailableError):
        reader.read()
