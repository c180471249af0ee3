"""Telemetry: one trace per ticket from webhook to write, metrics, nothing without a setting.

The code emits through the OpenTelemetry API; these tests hand it SDK providers with
in-memory exporters (no patching), and drive the real slice against the ServiceNow simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from connectors.queue import InMemoryJobQueue
from domain.errors import InboundError, UnavailableError
from domain.mapping import load_mapping
from domain.settings import Settings, WebhookSettings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from tests.integration.conftest import Delivery, Slice, build_slice, clock, installed, sim  # noqa: F401  (fixtures)
from tests.simulators import FakeClock
from tests.simulators.servicenow import RateLimitRule, ServiceNowSimulator
from triage import telemetry as tm
from triage.jobs import EnrichJob
from triage.pipeline import Pipeline
from triage.service import Service

ROOT = Path(__file__).resolve().parents[2]
SYS_ID = "fedcba9876543210fedcba9876543210"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Otel:
    """SDK providers with in-memory readers, and the telemetry built on them."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.telemetry = tm.OtelTelemetry(tracer, MeterProvider(metric_readers=[self.reader]))

    def points(self) -> dict[str, list[Any]]:
        """Metric name -> its data points (attributes, value or count/sum)."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out

    def count(self, name: str, **attrs: str) -> float:
        want = {f"enrich.{k}": v for k, v in attrs.items()}
        total = 0.0
        for point in self.points().get(name, []):
            if all(point.attributes.get(k) == v for k, v in want.items()):
                total += getattr(point, "value", None) or getattr(point, "count", 0)
        return total

    def every_text(self) -> list[str]:
        """Every span name, attribute key/value, status text and metric attribute."""
        texts: list[str] = []
        for span in self.spans.get_finished_spans():
            texts.append(span.name)
            texts.append(span.status.description or "")
            for key, value in (span.attributes or {}).items():
                texts.extend([key, json.dumps(value)])
            for event in span.events:
                texts.append(event.name)
                texts.extend(json.dumps(v) for v in (event.attributes or {}).values())
        for points in self.points().values():
            for point in points:
                texts.extend(f"{k}={v}" for k, v in point.attributes.items())
        return texts


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    previous = tm.set_current(o.telemetry)  # what function_app's configure() does in Azure
    try:
        yield o
    finally:
        tm.set_current(previous)


@pytest.fixture
def traced_slice(otel: Otel, sim: ServiceNowSimulator, clock: FakeClock) -> Iterator[Slice]:  # noqa: F811
    with installed(build_slice(sim, clock)) as s:
        yield s


OUTAGE = (
    "Hi team, the VPN is down for all users in store 12, nobody can work. "
    "Zyxqwv-marker-7781 please help asap! Best regards Anna"
)


def test_one_trace_from_webhook_to_write(traced_slice: Slice, otel: Otel) -> None:
    sys_id = traced_slice.sim.add_record(
        "incident", {"short_description": "", "description": OUTAGE}, user="anna.b"
    )
    assert traced_slice.webhook(sys_id).status_code == 202
    assert "traceparent" in json.loads(traced_slice.pending[0])
    assert traced_slice.drain() == 1
    spans = otel.spans.get_finished_spans()
    [hook] = [s for s in spans if s.name == "webhook servicenow"]
    [work] = [s for s in spans if s.name == "enrich servicenow"]
    calls = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert {s.name for s in calls} >= {"servicenow get", "servicenow update"}
    assert len({s.context.trace_id for s in spans}) == 1  # ONE trace
    assert hook.kind is SpanKind.SERVER and work.kind is SpanKind.CONSUMER
    assert work.parent is not None and work.parent.span_id == hook.context.span_id
    assert all(c.parent is not None and c.parent.span_id == work.context.span_id for c in calls)
    attrs = dict(work.attributes or {})
    assert attrs["enrich.system"] == "servicenow" and attrs["enrich.table"] == "incident"
    assert attrs["enrich.record_id"] == sys_id and attrs["enrich.job_id"] == "0"
    assert attrs["enrich.status"] == "written"
    written = traced_slice.sim.get_record("incident", sys_id) or {}
    assert "impact" in attrs["enrich.fields_written"]
    assert written["impact"] and written["urgency"]
    assert dict(hook.attributes or {})["enrich.http_status"] == 202
    # Never the ticket's text, nor the note we wrote.
    note = traced_slice.sim.journal(sys_id, "work_notes")[0]["value"]
    texts = "\n".join(otel.every_text())
    assert "Zyxqwv" not in texts and "VPN" not in texts
    assert not any(line and line in texts for line in note.splitlines() if len(line) > 12)
    # Metrics: the ticket, its fields, its platform calls.
    assert otel.count("enrich.tickets", system="servicenow", status="written") == 1
    assert otel.count("enrich.fields.filled", system="servicenow", field="impact") == 1
    assert otel.count("enrich.platform.duration", system="servicenow", method="get") >= 1
    assert otel.count("enrich.platform.duration", method="update", outcome="ok") == 1
    assert otel.count("enrich.confidence", field="impact") == 1


def test_throttled_calls_are_counted_and_the_job_stays_in_its_trace(
    traced_slice: Slice, otel: Otel
) -> None:
    sys_id = traced_slice.sim.add_record(
        "incident", {"short_description": "", "description": OUTAGE}, user="anna.b"
    )
    traced_slice.clock.advance(3600 - (traced_slice.clock.now() % 3600) - 1800)
    traced_slice.sim.set_rate_limit(RateLimitRule(limit=2, mode="retry_after"))
    traced_slice.service.pipeline.connector.get("incident", sys_id, ["number"])  # 1 of 2
    traced_slice.webhook(sys_id)
    traced_slice.drain()  # GET passes, PATCH meets a 429 asking for 30 minutes: re-queued
    assert otel.count("enrich.platform.throttled", system="servicenow", method="update") == 1
    assert otel.count("enrich.platform.duration", method="update", outcome="throttled") == 1
    assert otel.count("enrich.tickets") == 0  # re-queued, not finished
    [requeued] = traced_slice.service.requeue.sent  # type: ignore[attr-defined]
    hook = next(s for s in otel.spans.get_finished_spans() if s.name == "webhook servicenow")
    # The re-queued job still carries the webhook's trace.
    assert f"{hook.context.trace_id:032x}" in json.loads(requeued[0])["traceparent"]


def fake_service(otel: Otel, text: str, title: str = "") -> Service:
    conn = FakeConnector(
        {
            SYS_ID: {
                "short_description": title,
                "description": text,
                "category": "",
                "sys_updated_by": "anna",
            }
        }
    )
    enricher = FixedEnricher([suggestion("category", "network", 0.97)])
    pipe = Pipeline(conn, load_mapping(), [enricher], telemetry=otel.telemetry)
    return Service(
        Settings(webhook=WebhookSettings(secret="s")),
        pipe,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
        telemetry=otel.telemetry,
    )


def job(**extra: Any) -> str:
    return EnrichJob(table="incident", record_id=SYS_ID, received_at=1.0, **extra).to_message()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.text(min_size=8, max_size=60).filter(lambda t: len(t.strip()) >= 8),
    text=st.text(min_size=8, max_size=400).filter(lambda t: len(t.strip()) >= 8),
)
def test_random_ticket_text_never_reaches_spans_or_metrics(title: str, text: str) -> None:
    otel = Otel()
    service = fake_service(otel, text, title)
    result = service.process_job(job(traceparent=TRACEPARENT), job_id="m-1")
    assert result is not None and result.status == "written"
    for value in otel.every_text():
        assert title.strip() not in value and text.strip() not in value


def test_abstentions_and_poison_are_counted(otel: Otel) -> None:
    service = fake_service(otel, "printer on fire")
    service.process_job(job())
    mapping = load_mapping()
    enabled = [f for f in mapping.fields if mapping.mode(f) != "off" and f != "category"]
    assert enabled  # the fixed enricher answers category only: every other field abstained
    for field in enabled:
        assert otel.count("enrich.fields.abstained", system="servicenow", field=field) == 1
    assert otel.count("enrich.fields.abstained", field="category") == 0
    service.process_job(b"\xff not a job")
    assert otel.count("enrich.poison", reason="malformed_job") == 1
    # The fifth failed delivery is the host's last: counted as poisoned by the host.
    service.pipeline.connector.fail_next.append(UnavailableError("x", system="servicenow"))
    with pytest.raises(UnavailableError):
        service.process_job(job(), dequeue_count=5)
    assert otel.count("enrich.poison", system="servicenow", reason="retries_exhausted") == 1
    [failed] = [s for s in otel.spans.get_finished_spans() if s.attributes.get("enrich.status") == "failed"]  # fmt: skip
    assert failed.status.description == "UnavailableError"


def test_a_job_continues_the_trace_it_names_and_a_bad_one_is_poisoned(otel: Otel) -> None:
    service = fake_service(otel, "printer on fire")
    service.process_job(job(traceparent=TRACEPARENT))
    [work] = [s for s in otel.spans.get_finished_spans() if s.name == "enrich servicenow"]
    assert f"{work.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert work.parent is not None and f"{work.parent.span_id:016x}" == "00f067aa0ba902b7"
    bad = job().replace('"source"', '"traceparent":"00-xyz","source"')
    assert service.process_job(bad) is None
    assert "traceparent" in json.loads(service.poison.sent[-1][0])["reason"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
    ],
)
def test_job_traceparent_is_validated_strictly(value: str) -> None:
    with pytest.raises(InboundError) as err:
        EnrichJob.from_message(
            job().replace('"source"', f'"traceparent":{json.dumps(value)},"source"')
        )
    assert value.strip() == "" or value not in str(err.value)  # never echoed


def test_job_traceparent_round_trips_and_stays_optional() -> None:
    with_trace = EnrichJob(
        table="incident", record_id=SYS_ID, received_at=1.0, traceparent=TRACEPARENT
    )
    assert EnrichJob.from_message(with_trace.to_message()) == with_trace
    plain = EnrichJob.from_message(job())
    assert plain.traceparent is None and "traceparent" not in plain.to_message()
    with pytest.raises(InboundError):
        EnrichJob.from_message(job().replace('"source"', '"traceparent":7,"source"'))


def test_configure_sets_up_azure_monitor_only_with_a_connection_string() -> None:
    calls: list[dict[str, Any]] = []
    previous = tm.current()
    assert tm.configure({}, setup=lambda **kw: calls.append(kw)) is previous
    assert calls == [] and not tm.current().enabled
    try:
        configured = tm.configure(
            {tm.CONNECTION_SETTING: "InstrumentationKey=00000000-0000-0000-0000-000000000000"},
            setup=lambda **kw: calls.append(kw),
        )
        assert configured.enabled and tm.current() is configured
        assert calls[0]["connection_string"].startswith("InstrumentationKey=")
        assert calls[0]["disable_logging"] is True  # the host sends logs, redacted
    finally:
        tm.set_current(previous)

    def broken(**kw: Any) -> None:
        raise RuntimeError("exporter down")

    assert tm.configure({tm.CONNECTION_SETTING: "x"}, setup=broken) is previous


def test_without_a_connection_string_nothing_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k != tm.CONNECTION_SETTING}
    code = (
        "import sys, function_app, triage.telemetry as t\n"
        "mods = [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))]\n"
        "print(len(mods), t.current().enabled)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["0", "False"]


def test_measured_connector_passes_everything_else_through(otel: Otel) -> None:
    conn = FakeConnector({SYS_ID: {"description": "x"}})
    measured = otel.telemetry.measured(conn)
    assert otel.telemetry.measured(measured) is measured  # never wrapped twice
    assert measured.records is conn.records and measured.wrapped is conn
    assert tm.Telemetry().measured(conn) is conn
    measured.get("incident", SYS_ID, ["description"])
    assert otel.count("enrich.platform.duration", method="get", outcome="ok") == 1


def test_delivery_ids_name_the_job(traced_slice: Slice, otel: Otel) -> None:
    """The queue message id becomes the span's job id (what the host hands the trigger)."""
    import function_app

    message = job()
    delivery = Delivery(id="3f2a-77", body=message.encode())
    function_app.enrich_worker(delivery)
    [work] = [s for s in otel.spans.get_finished_spans() if s.name == "enrich servicenow"]
    assert dict(work.attributes or {})["enrich.job_id"] == "3f2a-77"


def test_every_429_is_counted_even_when_retried_and_the_budget_still_hears(otel: Otel) -> None:
    import responses
    from pydantic import SecretStr

    from connectors.servicenow import ServiceNowConnector
    from domain.settings import HttpSettings, ServiceNowSettings

    heard: list[float] = []
    settings = ServiceNowSettings(
        instance_url="https://dev1.service-now.com",
        auth="basic",
        username="svc",
        password=SecretStr("pw"),
    )
    connector = ServiceNowConnector(
        settings,
        HttpSettings(backoff_initial_s=0.01, backoff_max_s=0.01),
        sleep=lambda s: None,
        on_throttle=tm.throttle_hook("servicenow", heard.append),
    )
    url = "https://dev1.service-now.com/api/now/table/incident/" + "a" * 32
    with responses.RequestsMock() as mock:
        mock.get(url, status=429, headers={"Retry-After": "2"})
        mock.get(url, status=429, headers={"Retry-After": "1"})
        mock.get(url, json={"result": {"sys_id": "a" * 32, "number": "INC1"}})
        record = connector.get("incident", "a" * 32, ["number"])
    assert record.fields["number"] == "INC1"  # retried and answered
    assert otel.count("enrich.platform.http_429", system="servicenow") == 2
    assert heard == [2.0, 1.0]
