"""``GET /api/health`` through the Functions handler, with constructed HttpRequest objects."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest

import function_app
from domain.errors import ConfigError
from tests.integration.conftest import Slice, build_slice, clock, installed, sim  # noqa: F401  (fixtures)
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator
from triage.health import HealthChecker
from triage.health_probes import QUEUE_NAMES, probes_for
from triggers import health


def get() -> func.HttpResponse:
    return function_app.health_check(func.HttpRequest(method="GET", url="/api/health", body=b""))


@pytest.fixture
def app(sim: ServiceNowSimulator, clock: FakeClock) -> Iterator[Slice]:  # noqa: F811
    with installed(build_slice(sim, clock)) as s:
        depths = dict.fromkeys(QUEUE_NAMES, 0)
        health.override(
            HealthChecker(probes_for(function_app.services.get, lambda s: lambda: depths))
        )
        try:
            yield s
        finally:
            health.override(None)


def test_health_is_200_json_with_every_check(app: Slice) -> None:
    resp = get()
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = json.loads(resp.get_body())
    assert body["status"] == "ok"
    assert set(body["checks"]) == {
        "configuration",
        "mapping",
        "model",
        "token",
        "platform",
        "queues",
    }
    assert body["checks"]["queues"]["depths"] == dict.fromkeys(QUEUE_NAMES, 0)
    before = len(app.sim.request_log)
    assert get().status_code == 200
    assert len(app.sim.request_log) == before  # cached: no second platform read


def test_health_is_503_when_the_platform_is_down(app: Slice) -> None:
    app.sim.fail_next(20, status=503, message="Service Unavailable")
    resp = get()
    assert resp.status_code == 503
    body = json.loads(resp.get_body())
    assert body["status"] == "failing" and body["checks"]["platform"]["status"] == "failing"
    assert "Service Unavailable" not in resp.get_body().decode()  # no platform text


def test_health_is_503_with_broken_settings() -> None:
    def broken() -> None:
        raise ConfigError("ENRICH_SERVICENOW__PASSWORD=hunter2 is invalid")

    old = function_app.services.set_factory(broken)  # type: ignore[arg-type]
    health.override(HealthChecker(probes_for(function_app.services.get, lambda s: None)))
    try:
        resp = get()
    finally:
        function_app.services.set_factory(old)
        health.override(None)
    assert resp.status_code == 503 and b"hunter2" not in resp.get_body()
    assert json.loads(resp.get_body())["checks"]["configuration"]["status"] == "failing"
