"""Capacity per instance (issue 11, "Capacity"), measured on the loopback simulators.

Drives the real function objects (``function_app.servicenow_webhook``, ``enrich_worker``) with
a real ``Service``, ``ServiceNowConnector`` and enrichers against the ServiceNow simulator, and
prints one JSON object:

* ``cpu_per_ticket``: CPU seconds of webhook + worker per ticket, rules only and with a small
  learned model. ``app_thread_cpu_ms`` is ``time.thread_time`` of the calling thread (the app's
  own code: the handlers run synchronously in it); ``process_cpu_ms`` is ``time.process_time``
  and also holds the in-process simulator's threads (an upper bound).
* ``memory``: ``ru_maxrss`` of this process (simulator included: an upper bound for one
  instance) and ``tracemalloc`` of building the service objects and of enriching tickets.
* ``webhook``: the in-process ServiceNow webhook handler on one thread: p50/p99, sustained rate.
* ``worker``: tickets/s with the simulator answering each request after ``--latency-ms``, run
  by as many concurrent invocations as host.json allows one instance (batchSize +
  newBatchThreshold).
* ``requests``: platform requests per live ticket (ServiceNow, counted from the simulator's log;
  Dataverse from ``bench_dataverse.requests_per_case``) and per backfilled ticket (from
  ``bench_backfill``), and the claim/replay-store calls per ticket.
* ``quotas``: tickets per hour each platform quota allows, from those figures; ``scenarios``:
  the desks of ``docs/capacity.md`` worked out from them.

Nothing leaves 127.0.0.1.

    python -m bench.bench_capacity [--tickets 300] [--webhook-calls 5000] [--latency-ms 80]
        [--worker-tickets 240] [--dataverse-cases 30] [--backfill-tickets 2000] [--no-model]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func

import function_app
from connectors.queue import InMemoryJobQueue
from connectors.servicenow import ServiceNowConnector
from connectors.state import Claim, MemoryClaimStore, MemoryReplayGuard
from domain.mapping import load_mapping
from domain.settings import HttpSettings, ServiceNowSettings, Settings, WebhookSettings
from enrichers import default_enrichers
from tests.simulators.servicenow import ServiceNowSimulator
from triage.inbound import sign
from triage.pipeline import Pipeline
from triage.service import Service

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-capacity-secret"  # noqa: S105 - a throwaway key for a loopback benchmark
CLIENT = ("bench-capacity", "bench-capacity-secret-0123456789")
INTEGRATION_USER = "svc_ticket_enricher"
TEXTS = [
    ("VPN down", "The VPN is down for all users in store {n}, nobody can work. Please help asap!"),
    ("Printer jam", "The printer on floor {n} keeps jamming, customers are waiting. Urgent."),
    ("Password reset", "My account is locked and I cannot work, please reset it asap ({n})."),
    (
        "",
        "Hi team,\n\nOutlook does not sync my mailbox since 08:00, ref {n}.\n\nBest regards\nAnna",
    ),
    ("Kassen", "Alle kasser i butik {n} er nede, ingen kan betale. Det haster!"),
    ("Konto låst", "Min konto er blevet låst efter ferien, jeg kan ikke arbejde. Bruger {n}."),
    ("DNS", "DNS does not resolve the intranet from branch {n}, all users are affected."),
    ("question", "Can you call me back about the thing we discussed? ({n})"),
]


class _Out:
    value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


class CountingClaims(MemoryClaimStore):
    """The memory claim store, counting calls: each is one Table Storage operation when the
    claim row is free (insert / replace / delete) and two or three when it is not."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Count, then claim."""
        self.calls["claim"] += 1
        return super().claim(key, lease_s=lease_s)

    def complete(self, claim: Claim, outcome: str) -> None:
        """Count, then complete."""
        self.calls["complete"] += 1
        super().complete(claim, outcome)

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Count, then hold."""
        self.calls["hold"] += 1
        super().hold(claim, settle_s)

    def release(self, claim: Claim) -> None:
        """Count, then release."""
        self.calls["release"] += 1
        super().release(claim)


class CountingReplay(MemoryReplayGuard):
    """The memory replay guard, counting ``first_use`` (one Table insert each)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """Count, then remember."""
        self.calls += 1
        return super().first_use(key, expires_at=expires_at)


def host_concurrency(path: Path = ROOT / "host.json") -> dict[str, int]:
    """batchSize, newBatchThreshold and the concurrent queue invocations per instance."""
    queues = json.loads(path.read_text(encoding="utf-8"))["extensions"]["queues"]
    batch = int(queues.get("batchSize", 16))
    threshold = int(queues.get("newBatchThreshold", batch // 2))
    return {"batchSize": batch, "newBatchThreshold": threshold, "per_instance": batch + threshold}


def small_model() -> Any:
    """A category model trained on 400 synthetic tickets (about a second)."""
    from tests.learn import make_tickets
    from triage.learn.train import train_model

    rows = make_tickets(400, seed=1)
    texts = [f"{r['title']}\n{r['body']}" for r in rows]
    return train_model(texts, {"category": [r["category"] for r in rows]})


def signed_request(event: dict[str, Any]) -> func.HttpRequest:
    """``event`` signed as the business rule signs it."""
    body = json.dumps(event).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Triage-Timestamp": str(stamp),
        "X-Triage-Signature": sign(body, SECRET.encode(), stamp),
    }
    return func.HttpRequest(
        method="POST", url="/api/servicenow/webhook", headers=headers, body=body
    )


def deliver(req: func.HttpRequest) -> str:
    """One call of the webhook function; returns the job it queued."""
    out = _Out()
    resp = function_app.servicenow_webhook(req, out)
    if resp.status_code != 202 or out.value is None:
        raise RuntimeError(f"webhook refused: {resp.status_code}")
    return out.value


class Bench:
    """One simulator and one wired service, as on one instance."""

    def __init__(self, sim: ServiceNowSimulator | None, model: Any = None, url: str = "") -> None:
        self.sim: ServiceNowSimulator = sim  # type: ignore[assignment]  # None: a child's
        self.claims, self.replay = CountingClaims(), CountingReplay()
        sn = ServiceNowSettings(
            instance_url=url or self.sim.url, auth="oauth", client_id=CLIENT[0],
            client_secret=CLIENT[1],
        )  # fmt: skip
        http = HttpSettings()
        self.connector = ServiceNowConnector(sn, http)
        mapping = load_mapping()
        enrichers = default_enrichers(mapping, model=model)
        pipeline = Pipeline(self.connector, mapping, enrichers, claims=self.claims)
        settings = Settings(servicenow=sn, http=http, webhook=WebhookSettings(secret=SECRET))
        queue = InMemoryJobQueue()
        self.service = Service(settings, pipeline, queue, queue, replay=self.replay)
        self.made = 0

    def new_tickets(self, count: int) -> list[str]:
        """``count`` new incidents, created by a person, with varied texts."""
        out = []
        for _ in range(count):
            title, body = TEXTS[self.made % len(TEXTS)]
            fields = {"short_description": title, "description": body.format(n=self.made)}
            out.append(self.sim.add_record("incident", fields, user="anna.b"))
            self.made += 1
        return out

    def webhook(self, sys_id: str) -> str:
        """What the business rule sends, through the function; returns the queued job."""
        rec = self.sim.get_record("incident", sys_id) or {}
        return deliver(signed_request(
            {"sys_id": sys_id, "table": "incident", "number": rec.get("number"),
             "sys_updated_by": rec.get("sys_updated_by"),
             "sys_mod_count": int(rec.get("sys_mod_count") or 0)}
        ))  # fmt: skip

    @staticmethod
    def work(message: str) -> None:
        """One queue-triggered invocation of the worker."""
        function_app.enrich_worker(func.QueueMessage(id="bench", body=message.encode()))

    def noted(self, sys_ids: Sequence[str]) -> int:
        """How many of ``sys_ids`` carry a work note (were enriched)."""
        return sum(1 for s in sys_ids if self.sim.journal(s, "work_notes"))


def cpu_per_ticket(bench: Bench, tickets: int) -> dict[str, Any]:
    """Webhook + worker per ticket, one at a time on this thread, after a warm-up ticket."""
    bench.work(bench.webhook(bench.new_tickets(1)[0]))  # token, first compile of the rules
    ids = bench.new_tickets(tickets)
    calls_before = (bench.replay.calls, Counter(bench.claims.calls))
    log_before = len(bench.sim.request_log)
    thread_ms, process_ms, wall_ms = [], [], []
    for sys_id in ids:
        t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        bench.work(bench.webhook(sys_id))
        thread_ms.append((time.thread_time() - t0) * 1000)
        process_ms.append((time.process_time() - p0) * 1000)
        wall_ms.append((time.perf_counter() - w0) * 1000)
    log = bench.sim.request_log[log_before:]
    kinds = Counter(f"{r.method} {re.sub('[0-9a-f]{32}', '{id}', r.path)}" for r in log)
    claims = bench.claims.calls - calls_before[1]
    enriched = bench.noted(ids)
    return {
        "tickets": tickets,
        "enriched": enriched,
        "app_thread_cpu_ms_mean": round(statistics.fmean(thread_ms), 3),
        "app_thread_cpu_ms_p50": round(statistics.median(thread_ms), 3),
        "process_cpu_ms_mean": round(statistics.fmean(process_ms), 3),
        "wall_ms_mean_no_latency": round(statistics.fmean(wall_ms), 3),
        "requests_per_ticket": round(len(log) / tickets, 3),
        "requests_per_enriched_ticket": round(len(log) / enriched, 3) if enriched else None,
        "requests_by_kind": dict(sorted(kinds.items())),
        "replay_inserts_per_ticket": round((bench.replay.calls - calls_before[0]) / tickets, 3),
        "claim_store_calls_per_ticket": {k: round(v / tickets, 3) for k, v in claims.items()},
    }


def webhook_rate(calls: int, repeats: int) -> dict[str, Any]:
    """The webhook handler alone, back to back on one thread: latency and sustained rate."""
    p50s, p99s, rates, cpu = [], [], [], []
    for _ in range(repeats):
        timings = []
        requests_ = [
            signed_request({"sys_id": uuid.uuid4().hex, "table": "incident",
                            "number": "INC0010001", "sys_updated_by": "anna.b",
                            "sys_mod_count": 0})
            for _ in range(calls)
        ]  # fmt: skip
        started, p0 = time.perf_counter(), time.process_time()
        for req in requests_:
            t0 = time.perf_counter()
            deliver(req)
            timings.append((time.perf_counter() - t0) * 1000)
        rates.append(calls / (time.perf_counter() - started))
        cpu.append((time.process_time() - p0) * 1000 / calls)
        timings.sort()
        p50s.append(statistics.median(timings))
        p99s.append(timings[int(len(timings) * 0.99) - 1])
    return {
        "calls_per_run": calls,
        "runs": repeats,
        "p50_ms": round(statistics.median(p50s), 4),
        "p99_ms": round(statistics.median(p99s), 4),
        "sustained_per_s_one_core": round(statistics.median(rates)),
        "cpu_ms_per_call": round(statistics.median(cpu), 4),
    }


def worker_rate(bench: Bench, tickets: int, latency_s: float, concurrency: int) -> dict[str, Any]:
    """Tickets/s of ``concurrency`` concurrent worker invocations, each platform call slowed."""
    ids = bench.new_tickets(tickets)
    messages = [bench.webhook(s) for s in ids]
    log_before = len(bench.sim.request_log)
    bench.sim.latency_s = latency_s
    try:
        started, p0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(bench.work, messages))
        wall = time.perf_counter() - started
        cpu = time.process_time() - p0
    finally:
        bench.sim.latency_s = 0.0
    requests = len(bench.sim.request_log) - log_before
    return {
        "tickets": tickets,
        "enriched": bench.noted(ids),
        "concurrency": concurrency,
        "latency_ms_per_platform_call": round(latency_s * 1000, 1),
        "tickets_per_s": round(tickets / wall, 2),
        "requests_per_ticket": round(requests / tickets, 3),
        "bound_concurrency_over_latency": round(concurrency / (requests / tickets * latency_s), 2),
        "process_cpu_ms_per_ticket": round(cpu * 1000 / tickets, 3),
        "wall_s": round(wall, 2),
    }


def _rss_mb() -> float:
    """Peak resident set of this process, MB. Linux keeps ``ru_maxrss`` across exec (a child
    would report its parent's peak), so the process's own high-water mark, VmHWM, comes first."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def child_memory(url: str, ids: list[str], model_dir: str | None) -> dict[str, Any]:
    """In a fresh process (one cold instance): peak RSS after import, build and ``ids``
    enriched, and what tracemalloc sees of building the service (+ loading the model)."""
    out: dict[str, Any] = {"rss_after_import_function_app_mb": _rss_mb()}
    tracemalloc.start()
    model = None
    if model_dir:
        from triage.model_store import load_model

        model = load_model(model_dir)
    bench = Bench(None, model, url=url)
    function_app.services.override(bench.service)
    out["service_objects_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 3)
    out["rss_after_build_mb"] = _rss_mb()
    tracemalloc.reset_peak()
    for sys_id in ids:
        bench.work(deliver(signed_request({"sys_id": sys_id, "table": "incident"})))
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.update(
        tickets=len(ids),
        traced_after_tickets_mb=round(current / 1e6, 3),
        traced_peak_while_enriching_mb=round(peak / 1e6, 3),
        rss_peak_mb=_rss_mb(),
    )
    return out


def memory(sim: ServiceNowSimulator, model: Any, tickets: int) -> dict[str, Any]:
    """``child_memory`` in a fresh Python process against ``sim`` (tickets made here)."""
    maker = Bench(sim)
    maker.made = 10_000  # texts distinct from the other phases'
    ids = maker.new_tickets(tickets)
    maker.connector.close()
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        argv = ["--child-memory", sim.url, "--child-ids", ",".join(ids)]
        if model is not None:
            model.save(tmp)
            argv += ["--model-dir", tmp]
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_capacity", *argv],
            cwd=ROOT, capture_output=True, check=False, timeout=300,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["enriched"] = sum(1 for s in ids if sim.journal(s, "work_notes"))
    return result


def _run_quiet(main: Any, argv: list[str]) -> dict[str, Any]:
    # bench_backfill leaves each child's stderr file to the garbage collector: collect it here,
    # where its ResourceWarning is expected, rather than wherever the next collection runs.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        result: dict[str, Any] = main(argv)
        gc.collect()
    return result


def other_requests(dataverse_cases: int, backfill_tickets: int) -> dict[str, Any]:
    """Dataverse requests per live case and backfill requests per enriched ticket."""
    out: dict[str, Any] = {}
    if dataverse_cases:
        from bench.bench_dataverse import requests_per_case

        figures = requests_per_case(dataverse_cases)
        out["dataverse_live"] = {
            "requests_per_case": figures[f"batch_of_{dataverse_cases}_plain_cases"][
                "requests_per_case"
            ],
            "plain_case": figures["plain_case"]["requests"],
            "email_case": figures["email_case_empty_description"]["requests"],
            "race_412": figures["race_412_re_decided"]["requests"],
        }
    if backfill_tickets:
        from bench.bench_backfill import main as backfill_main

        report = _run_quiet(
            backfill_main,
            ["--tickets", str(backfill_tickets), "--kills", "0",
             "--servicenow-quota-per-s", "100000", "--dynamics-quota-per-s", "100000"],
        )  # fmt: skip
        for name, figures in report["platforms"].items():
            detail = figures["detail"]
            out[f"{'dataverse' if name == 'dynamics' else name}_backfill"] = {
                "tickets": figures["tickets"],
                "written": detail["written"],
                "requests_per_enriched_ticket": figures["requests_per_enriched_ticket"],
                "platform_counted_per_enriched_ticket": detail[
                    "platform_counted_per_enriched_ticket"
                ],
                "tickets_per_s_one_process_unpaced": figures["tickets_per_s"],
            }
    return out


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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, work out the quotas and scenarios, and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=300)
    parser.add_argument("--webhook-calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=80.0)
    parser.add_argument("--worker-tickets", type=int, default=240)
    parser.add_argument("--memory-tickets", type=int, default=50)
    parser.add_argument("--dataverse-cases", type=int, default=30)
    parser.add_argument("--backfill-tickets", type=int, default=2000)
    parser.add_argument("--servicenow-rule-per-hour", type=int, default=5000)
    parser.add_argument("--no-model", action="store_true")
    parser.add_argument("--child-memory", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--child-ids", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.child_memory:
        ids = [i for i in args.child_ids.split(",") if i]
        child = child_memory(args.child_memory, ids, args.model_dir)
        print(json.dumps(child))
        return child
    started = time.perf_counter()
    concurrency = host_concurrency()
    report: dict[str, Any] = {
        "bench": "capacity",
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "host_json": concurrency,
    }  # fmt: skip
    sim = ServiceNowSimulator(
        users={"anna.b": "pw"}, oauth_clients={CLIENT[0]: (CLIENT[1], INTEGRATION_USER)}
    )
    model = None if args.no_model else small_model()
    with sim:
        rules = Bench(sim)
        function_app.services.override(rules.service)
        try:
            cpu = {"rules_only": cpu_per_ticket(rules, args.tickets)}
            report["webhook"] = webhook_rate(args.webhook_calls, args.repeats)
            report["worker"] = worker_rate(
                rules, args.worker_tickets, args.latency_ms / 1000, concurrency["per_instance"]
            )
            if model is not None:
                learned = Bench(sim, model)
                function_app.services.override(learned.service)
                cpu["with_learned_model"] = cpu_per_ticket(learned, args.tickets)
                learned.connector.close()
        finally:
            function_app.services.override(None)
            rules.connector.close()
        report["cpu_per_ticket"] = cpu
        report["memory"] = {"rules_only": memory(sim, None, args.memory_tickets)}
        if model is not None:
            report["memory"]["with_learned_model"] = memory(sim, model, args.memory_tickets)
    report["memory"]["bench_process_rss_peak_mb"] = _rss_mb()  # simulator and training too
    report["requests"] = {
        "servicenow_live": {
            k: cpu["rules_only"][k]
            for k in ("requests_per_ticket", "requests_per_enriched_ticket", "requests_by_kind")
        },
        **other_requests(args.dataverse_cases, args.backfill_tickets),
    }
    report["quotas"] = quotas(report, servicenow_rule_per_hour=args.servicenow_rule_per_hour)
    report["scenarios"] = scenarios(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
