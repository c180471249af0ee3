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
  the desks of ``docs/capacity.md`` worked out from them (``bench.capacity_scenarios``).

The instance under test (``Bench``, the counting stores, the memory child) lives in
``bench.capacity_harness``.

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
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import function_app
from bench.capacity_harness import (
    CLIENT,
    INTEGRATION_USER,
    Bench,
    child_memory,
    deliver,
    rss_mb,
    signed_request,
    small_model,
)
from bench.capacity_scenarios import max_instances as max_instances
from bench.capacity_scenarios import quotas, scenarios
from tests.simulators.servicenow import ServiceNowSimulator

ROOT = Path(__file__).resolve().parent.parent


def host_concurrency(path: Path = ROOT / "host.json") -> dict[str, int]:
    """batchSize, newBatchThreshold and the concurrent queue invocations per instance."""
    queues = json.loads(path.read_text(encoding="utf-8"))["extensions"]["queues"]
    batch = int(queues.get("batchSize", 16))
    threshold = int(queues.get("newBatchThreshold", batch // 2))
    return {"batchSize": batch, "newBatchThreshold": threshold, "per_instance": batch + threshold}


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
    report["memory"]["bench_process_rss_peak_mb"] = rss_mb()  # simulator and training too
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
