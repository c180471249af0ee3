"""The capacity scenarios: platform quotas and the desks of docs/capacity.md, from measured figures.

Pure arithmetic over the report ``bench.bench_capacity`` measured (requests per ticket, CPU,
worker rate, host.json concurrency) and the platform ``LIMITS`` below, each with its source:
tickets per hour each quota allows (``quotas``) and the live desks and 4-million-ticket
backfill worked out (``scenarios``). ``bench.bench_capacity`` re-exports ``max_instances``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Platform limits the scenarios use, each with its source (docs/capacity.md cites them too).
LIMITS: dict[str, tuple[float, str]] = {
    "dataverse_requests_per_5_min_per_user": (6000, "/work/shared/docs/dataverse.md §6 [LIM]"),
    "dataverse_concurrent_requests_per_user": (52, "/work/shared/docs/dataverse.md §6 [LIM]"),
    "queue_messages_per_s_per_queue": (2000, "learn.microsoft.com/azure/storage/queues/scalability-targets"),
    "table_entities_per_s_per_partition": (2000, "learn.microsoft.com/azure/storage/tables/scalability-targets"),
    "storage_requests_per_s_per_account": (20000, "learn.microsoft.com/azure/storage/tables/scalability-targets"),
    "flex_max_instances": (1000, "learn.microsoft.com/azure/azure-functions/flex-consumption-plan"),
}  # fmt: skip
CLAIM_PARTITIONS = 256  # connectors/state.py row_key: the first two hex digits of a SHA-256
QUEUE_OPS_PER_TICKET = 3  # the output binding's put, the trigger's get and delete
SHARE = 0.5  # ENRICH_BACKFILL__SHARE default (domain/settings.py)
PEAK_TO_AVERAGE = 5.0  # an assumption, not a measurement: the busiest hour vs the day's mean
DESKS = {"desk_1100_a_day": 1100, "desk_1m_a_day": 1_000_000}
BACKFILL_TICKETS = 4_000_000


def max_instances(path: Path = ROOT / "infra" / "modules" / "function-app.bicep") -> int:
    """The template's default ``maximumInstanceCount``."""
    found = re.search(r"param maximumInstanceCount int = (\d+)", path.read_text(encoding="utf-8"))
    return int(found.group(1)) if found else 40


def _per_ticket(report: dict[str, Any], key: str, field: str) -> float | None:
    value = report["requests"].get(key, {}).get(field)
    return float(value) if value else None


def quotas(report: dict[str, Any], *, servicenow_rule_per_hour: int) -> dict[str, Any]:
    """Tickets per hour each platform's quota allows, live and backfill (at ``SHARE``)."""
    sn_live = _per_ticket(report, "servicenow_live", "requests_per_ticket")
    sn_back = _per_ticket(report, "servicenow_backfill", "platform_counted_per_enriched_ticket")
    dv_live = _per_ticket(report, "dataverse_live", "requests_per_case")
    dv_back = _per_ticket(report, "dataverse_backfill", "platform_counted_per_enriched_ticket")
    dv_hour = LIMITS["dataverse_requests_per_5_min_per_user"][0] * 12
    rule = float(servicenow_rule_per_hour)

    def per(quota: float, cost: float | None) -> int | None:
        return round(quota / cost) if cost else None

    return {
        "servicenow": {
            "rule_requests_per_hour": servicenow_rule_per_hour,
            "live_tickets_per_hour": per(rule, sn_live),
            "backfill_tickets_per_hour_at_share": per(rule * SHARE, sn_back),
        },
        "dataverse": {
            "requests_per_hour_per_user": dv_hour,
            "live_cases_per_hour": per(dv_hour, dv_live),
            "backfill_cases_per_hour_at_share": per(dv_hour * SHARE, dv_back),
        },
        "share": SHARE,
    }


def _live_desk(report: dict[str, Any], per_day: int) -> dict[str, Any]:
    cpu = report["cpu_per_ticket"]
    rules = cpu["rules_only"]
    peak = per_day / 86400 * PEAK_TO_AVERAGE
    worker = report["worker"]
    claims = sum(rules["claim_store_calls_per_ticket"].values())
    replay = rules["replay_inserts_per_ticket"]
    sn_req = report["requests"]["servicenow_live"]["requests_per_ticket"]
    dv_req = _per_ticket(report, "dataverse_live", "requests_per_case")
    # The worker is latency-bound: Dataverse's rate scales with its requests per ticket.
    dv_rate = worker["tickets_per_s"] * sn_req / dv_req if dv_req else None
    out: dict[str, Any] = {
        "tickets_per_day": per_day,
        "average_per_s": round(per_day / 86400, 3),
        "peak_per_s": round(peak, 3),
        "app_cpu_s_per_day_rules_only": round(per_day * rules["app_thread_cpu_ms_mean"] / 1000),
        "worker_instances_at_peak_servicenow": math.ceil(peak / worker["tickets_per_s"]),
        "webhook_cpu_share_of_one_core_at_peak": round(
            peak * report["webhook"]["cpu_ms_per_call"] / 1000, 5
        ),
        "queue_messages_per_s_at_peak": round(peak, 2),
        "replay_partition_inserts_per_s_at_peak": round(peak * replay, 2),
        "claim_partition_ops_per_s_at_peak": round(peak * claims / CLAIM_PARTITIONS, 4),
        "storage_account_ops_per_s_at_peak": round(
            peak * (QUEUE_OPS_PER_TICKET + replay + claims), 1
        ),
        "servicenow_requests_per_hour_at_peak": round(peak * 3600 * sn_req),
        "servicenow_requests_per_day": round(per_day * sn_req),
    }
    if "with_learned_model" in cpu:
        out["app_cpu_s_per_day_with_model"] = round(
            per_day * cpu["with_learned_model"]["app_thread_cpu_ms_mean"] / 1000
        )
    if dv_req and dv_rate:
        dv_5min = peak * 300 * dv_req
        instances = math.ceil(peak / dv_rate)
        out.update(
            worker_instances_at_peak_dataverse=instances,
            dataverse_requests_per_5_min_at_peak=round(dv_5min),
            dataverse_users_needed_at_peak=math.ceil(
                dv_5min / LIMITS["dataverse_requests_per_5_min_per_user"][0]
            ),
            dataverse_in_flight_at_peak=instances * report["host_json"]["per_instance"],
        )
    return out


def _backfill(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"tickets": BACKFILL_TICKETS, "share": SHARE}
    q = report["quotas"]
    for name, key in (("servicenow", "backfill_tickets_per_hour_at_share"),
                      ("dataverse", "backfill_cases_per_hour_at_share")):  # fmt: skip
        per_hour = q[name][key]
        if per_hour:
            out[f"{name}_hours_at_quota"] = round(BACKFILL_TICKETS / per_hour, 1)
            out[f"{name}_days_at_quota"] = round(BACKFILL_TICKETS / per_hour / 24, 1)
        figures = report["requests"].get(f"{name}_backfill")
        if figures:
            rate = figures["tickets_per_s_one_process_unpaced"]
            out[f"{name}_cpu_hours_one_process"] = round(BACKFILL_TICKETS / rate / 3600, 1)
    counted = _per_ticket(report, "servicenow_backfill", "platform_counted_per_enriched_ticket")
    if counted:
        out["servicenow_rule_per_hour_to_finish_in_30_days"] = round(
            BACKFILL_TICKETS * counted / (30 * 24) / SHARE
        )
    return out


def scenarios(report: dict[str, Any]) -> dict[str, Any]:
    """The desks of docs/capacity.md worked out from the measured figures and LIMITS."""
    out: dict[str, Any] = {
        "assumed_peak_to_average": PEAK_TO_AVERAGE,
        "maximum_instance_count_template_default": max_instances(),
        "limits": {k: {"value": v, "source": src} for k, (v, src) in LIMITS.items()},
    }
    for name, per_day in DESKS.items():
        out[name] = _live_desk(report, per_day)
    out["backfill_4m"] = _backfill(report)
    return out
