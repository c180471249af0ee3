"""bench.bench_capacity at a tiny size: the JSON's shape, and figures that must agree."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import bench_capacity

TICKETS = 8


@pytest.fixture(scope="module")
def report() -> tuple[dict[str, Any], str]:
    capture: dict[str, Any] = {}
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        capture = bench_capacity.main(
            ["--tickets", str(TICKETS), "--webhook-calls", "200", "--repeats", "1",
             "--latency-ms", "20", "--worker-tickets", "12", "--memory-tickets", "3",
             "--dataverse-cases", "2", "--backfill-tickets", "40",
             "--servicenow-rule-per-hour", "5000"]
        )  # fmt: skip
    return capture, out.getvalue()


def test_prints_one_json_object_equal_to_the_result(report: tuple[dict[str, Any], str]) -> None:
    result, printed = report
    assert json.loads(printed) == result
    for key in ("machine", "host_json", "webhook", "worker", "cpu_per_ticket", "memory",
                "requests", "quotas", "scenarios", "measured_at"):  # fmt: skip
        assert key in result


def test_cpu_per_ticket_matches_the_platform_requests(report: tuple[dict[str, Any], str]) -> None:
    cpu = report[0]["cpu_per_ticket"]
    assert set(cpu) == {"rules_only", "with_learned_model"}
    for figures in cpu.values():
        assert figures["tickets"] == TICKETS
        kinds = figures["requests_by_kind"]
        # Every ticket is re-read once; every enriched one gets exactly one PATCH (values and
        # note together), and nothing else is asked of the platform on the happy path.
        assert kinds["GET /api/now/table/incident/{id}"] == TICKETS
        assert kinds["PATCH /api/now/table/incident/{id}"] == figures["enriched"]
        assert set(kinds) == {
            "GET /api/now/table/incident/{id}",
            "PATCH /api/now/table/incident/{id}",
        }
        assert 0 < figures["enriched"] < TICKETS  # one text in eight gives nothing to fill
        assert figures["requests_per_ticket"] == round((TICKETS + figures["enriched"]) / TICKETS, 3)
        assert figures["app_thread_cpu_ms_mean"] > 0
        # process CPU holds this thread's CPU and the simulator's
        assert figures["process_cpu_ms_mean"] >= figures["app_thread_cpu_ms_mean"] * 0.99
        assert figures["replay_inserts_per_ticket"] == 1.0
        assert figures["claim_store_calls_per_ticket"]["claim"] == 1.0


def test_webhook_and_worker_rates_are_consistent(report: tuple[dict[str, Any], str]) -> None:
    result = report[0]
    hook = result["webhook"]
    assert 0 < hook["p50_ms"] <= hook["p99_ms"]
    assert hook["sustained_per_s_one_core"] > 0 and hook["cpu_ms_per_call"] > 0
    worker = result["worker"]
    assert worker["concurrency"] == result["host_json"]["per_instance"]
    assert worker["enriched"] > 0
    # The latency bound is physical: no run can beat concurrency / (requests × latency).
    assert 0 < worker["tickets_per_s"] <= worker["bound_concurrency_over_latency"] * 1.02
    assert worker["latency_ms_per_platform_call"] == 20.0


def test_memory_in_a_fresh_process(report: tuple[dict[str, Any], str]) -> None:
    memory = report[0]["memory"]
    for name in ("rules_only", "with_learned_model"):
        m = memory[name]
        assert 0 < m["rss_after_import_function_app_mb"] <= m["rss_after_build_mb"]
        assert m["rss_after_build_mb"] <= m["rss_peak_mb"]
        assert m["enriched"] > 0 and m["tickets"] == 3
        assert m["traced_peak_while_enriching_mb"] >= m["traced_after_tickets_mb"] > 0
    # The loaded model's arrays are among the service objects.
    assert (
        memory["with_learned_model"]["service_objects_mb"]
        > memory["rules_only"]["service_objects_mb"]
    )


def test_quotas_and_scenarios_follow_from_the_measured_requests(
    report: tuple[dict[str, Any], str],
) -> None:
    result = report[0]
    requests, quotas = result["requests"], result["quotas"]
    sn = requests["servicenow_live"]["requests_per_ticket"]
    assert quotas["servicenow"]["live_tickets_per_hour"] == round(5000 / sn)
    dv = requests["dataverse_live"]["requests_per_case"]
    assert dv > 0
    assert quotas["dataverse"]["live_cases_per_hour"] == round(72000 / dv)
    for name in ("servicenow_backfill", "dataverse_backfill"):
        assert requests[name]["written"] > 0
        assert requests[name]["platform_counted_per_enriched_ticket"] > 0
    counted = requests["servicenow_backfill"]["platform_counted_per_enriched_ticket"]
    assert quotas["servicenow"]["backfill_tickets_per_hour_at_share"] == round(5000 * 0.5 / counted)
    small, big = result["scenarios"]["desk_1100_a_day"], result["scenarios"]["desk_1m_a_day"]
    assert big["servicenow_requests_per_day"] == round(1_000_000 * sn)
    assert small["servicenow_requests_per_day"] == round(1100 * sn)
    peak = 1_000_000 / 86400 * result["scenarios"]["assumed_peak_to_average"]
    assert big["worker_instances_at_peak_servicenow"] == math.ceil(
        peak / result["worker"]["tickets_per_s"]
    )
    assert big["dataverse_users_needed_at_peak"] == math.ceil(peak * 300 * dv / 6000)
    backfill = result["scenarios"]["backfill_4m"]
    per_hour = quotas["servicenow"]["backfill_tickets_per_hour_at_share"]
    assert backfill["servicenow_hours_at_quota"] == round(4_000_000 / per_hour, 1)


def test_host_concurrency_reads_batch_size_and_threshold(tmp_path: Path) -> None:
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"extensions": {"queues": {"batchSize": 16}}}))
    # The documented default threshold is batchSize / 2: 16 + 8 = 24 per instance.
    assert bench_capacity.host_concurrency(host)["per_instance"] == 24
    host.write_text(
        json.dumps({"extensions": {"queues": {"batchSize": 4, "newBatchThreshold": 2}}})
    )
    assert bench_capacity.host_concurrency(host) == {
        "batchSize": 4, "newBatchThreshold": 2, "per_instance": 6,
    }  # fmt: skip


def test_max_instances_reads_the_template(tmp_path: Path) -> None:
    bicep = tmp_path / "function-app.bicep"
    bicep.write_text("param maximumInstanceCount int = 250\nparam instanceMemoryMB int = 2048\n")
    assert bench_capacity.max_instances(bicep) == 250
    assert bench_capacity.max_instances() >= 40  # the repository's template
