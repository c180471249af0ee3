"""Dynamics 365 figures: webhook latency in-process, and HTTP requests per enriched case.

1. ``function_app.dynamics_webhook`` p50/p99 for a realistic Create-incident
   ``RemoteExecutionContext`` (built by the Dataverse simulator from a stored case, with the
   documented headers and the key header), and ``function_app.servicenow_webhook`` for a signed
   ServiceNow body measured in the same run, interleaved, as the baseline (``ratio``).
2. Requests per enriched case against the loopback Dataverse simulator (HTTPS, msal, the real
   connector and pipeline behind the host model of the fault matrix), counted from the
   simulator's request log, per kind: a plain new case, an e-mail case with an empty
   description, a case a person edits between our read and our write (412, re-read, re-decide);
   plus the token requests for 100 cases (msal's cache) and the first, cold case.
3. With ``--matrix-cases N``: the Dataverse fault matrix (every scenario of
   ``tests/integration/fault_matrix_dataverse.py``) at N cases per scenario.

Prints one JSON object. Nothing leaves 127.0.0.1.

    python -m bench.bench_dataverse [--calls 5000] [--repeats 5] [--cases 100] [--matrix-cases 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import azure.functions as func

import function_app
from connectors.queue import InMemoryJobQueue
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
from domain.settings import Settings, WebhookSettings
from enrichers import default_enrichers
from tests.integration.fault_matrix_dataverse import (
    CLIENT,
    KEY,
    SCENARIOS,
    DataverseMatrix,
    FaultyDataverse,
    case_text,
    run_scenario,
)
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from triage.dataverse_inbound import WebhookKeys
from triage.inbound import sign
from triage.pipeline import Pipeline
from triage.service import Service

SECRET = "bench-secret"  # noqa: S105 - a throwaway key for an in-process benchmark
OWN_USER = "0d0d0d0d-1111-4222-8333-444444444444"


class _Out:
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


class _NoConnector:
    """The webhook never calls the platform, but for WhoAmI (cached in production)."""

    def __init__(self, system: str) -> None:
        self.system = system

    def own_user(self) -> str:
        return OWN_USER


def _service() -> Service:
    sn_mapping = load_mapping()
    dv_mapping = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
    servicenow = Pipeline(_NoConnector("servicenow"), sn_mapping, default_enrichers(sn_mapping))  # type: ignore[arg-type]
    dataverse = Pipeline(_NoConnector("dataverse"), dv_mapping, default_enrichers(dv_mapping))  # type: ignore[arg-type]
    return Service(
        Settings(webhook=WebhookSettings(secret=SECRET)),
        servicenow,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
        others={"dataverse": dataverse},
        dataverse_keys=WebhookKeys(keys=(KEY,)),
    )


def _dataverse_bodies(count: int) -> list[tuple[dict[str, str], bytes]]:
    """Create events of ``count`` realistic cases, as the simulator would post them."""
    sim = DataverseSimulator(clients={CLIENT[0]: CLIENT[1]}, clock=FakeClock(), tls=False)
    out = []
    for i in range(count):
        fields: dict[str, Any] = {**case_text(i), "prioritycode": 2, "caseorigincode": 2}
        headers, body = sim.webhook_body(sim.add_case(fields))
        out.append(({**headers, "x-triage-key": KEY}, body))
    return out


def _dataverse_requests(count: int) -> list[func.HttpRequest]:
    return [
        func.HttpRequest(method="POST", url="/api/dynamics/webhook", headers=h, body=b)
        for h, b in _dataverse_bodies(count)
    ]


def _servicenow_requests(count: int) -> list[func.HttpRequest]:
    out = []
    for _ in range(count):
        body = json.dumps(
            {"sys_id": uuid.uuid4().hex, "table": "incident", "number": "INC0010001"}
        ).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Triage-Timestamp": str(stamp),
            "X-Triage-Signature": sign(body, SECRET.encode(), stamp),
        }
        out.append(
            func.HttpRequest(
                method="POST", url="/api/servicenow/webhook", headers=headers, body=body
            )
        )
    return out


def _timed(
    handler: Callable[[func.HttpRequest, _Out], func.HttpResponse],
    requests_: list[func.HttpRequest],
) -> list[float]:
    timings = []
    for req in requests_:
        out = _Out()
        start = time.perf_counter()
        resp = handler(req, out)
        timings.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 202, resp.get_body()
    return sorted(timings)


def webhook_latency(calls: int, repeats: int) -> dict[str, Any]:
    """p50/p99 (median over runs) of both webhooks, interleaved run by run."""
    function_app.services.override(_service())
    try:
        handlers = {
            "dataverse": (function_app.dynamics_webhook, _dataverse_requests),
            "servicenow": (function_app.servicenow_webhook, _servicenow_requests),
        }
        for handler, build in handlers.values():
            _timed(handler, build(200))  # warm-up
        runs: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": []} for k in handlers}
        for _ in range(repeats):
            for name, (handler, build) in handlers.items():
                timings = _timed(handler, build(calls))
                runs[name]["p50"].append(statistics.median(timings))
                runs[name]["p99"].append(timings[int(len(timings) * 0.99) - 1])
    finally:
        function_app.services.override(None)
    body_bytes = statistics.median(len(b) for _, b in _dataverse_bodies(20))
    report: dict[str, Any] = {"calls_per_run": calls, "runs": repeats}
    for name, figures in runs.items():
        report[name] = {
            "p50_ms_median": round(statistics.median(figures["p50"]), 4),
            "p99_ms_median": round(statistics.median(figures["p99"]), 4),
        }
    report["dataverse"]["body_bytes"] = int(body_bytes)
    report["ratio_p50"] = round(
        report["dataverse"]["p50_ms_median"] / report["servicenow"]["p50_ms_median"], 2
    )
    report["ratio_p99"] = round(
        report["dataverse"]["p99_ms_median"] / report["servicenow"]["p99_ms_median"], 2
    )
    return report


def _kinds(log: list[Any], tenant: str) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for r in log:
        if r.path.startswith(f"/{tenant}/"):
            kinds["token" if r.path.endswith("/token") else "discovery"] += 1
        else:
            kinds[f"{r.method} {r.path.rsplit('/', 1)[-1].split('(')[0]}"] += 1
    return dict(sorted(kinds.items()))


def requests_per_case(cases: int) -> dict[str, Any]:
    """HTTP requests the simulator saw per enriched case, by kind of case."""
    clock = FakeClock(start=1_800_000_000.0)
    sim = FaultyDataverse(clients={CLIENT[0]: CLIENT[1]}, clock=clock)
    report: dict[str, Any] = {}
    with sim:
        sim.tokens.resource = sim.url
        for column in ("new_impact", "new_urgency"):
            sim.set_choices(column, {1: "High", 2: "Medium", 3: "Low"})
        matrix = DataverseMatrix(sim, clock, instances=1)
        try:

            def one(i: int, *, email: bool = False, race: bool = False) -> dict[str, Any]:
                before = len(sim.request_log)
                case_id = matrix.new_case(i, person_priority=False, from_email=email)
                if race:
                    matrix.edit_between_read_and_write({case_id})
                matrix.webhook(case_id)
                matrix.run()
                sim.before_write(None)
                assert len(sim.annotations(case_id)) == 1, "the case was not enriched"
                log = sim.request_log[before:]
                return {"requests": len(log), "by_kind": _kinds(log, sim.tenant)}

            report["first_case_cold"] = one(0)
            report["plain_case"] = one(1)
            report["email_case_empty_description"] = one(2, email=True)
            report["race_412_re_decided"] = one(3, race=True)
            before = len(sim.request_log)
            for i in range(cases):
                matrix.new_case(100 + i, person_priority=False, from_email=False)
            for case_id in list(matrix.markers)[-cases:]:
                matrix.webhook(case_id)
            matrix.run()
            log = sim.request_log[before:]
            kinds = _kinds(log, sim.tenant)
            report[f"batch_of_{cases}_plain_cases"] = {
                "requests_per_case": round(len(log) / cases, 2),
                "token_requests": kinds.get("token", 0),
                "by_kind": kinds,
            }
        finally:
            matrix.close()
    return report


def fault_matrix(cases: int, seed: int = 1) -> dict[str, Any]:
    """Every Dataverse fault scenario at ``cases`` cases: the matrix's figures per scenario."""
    results: dict[str, Any] = {}
    for scenario in SCENARIOS:
        clock = FakeClock(start=1_800_000_000.0)
        sim = FaultyDataverse(clients={CLIENT[0]: CLIENT[1]}, clock=clock)
        started = time.perf_counter()
        with sim:
            sim.tokens.resource = sim.url
            outcome = run_scenario(scenario, sim, clock, tickets=cases, seed=seed)
        results[scenario] = {
            **outcome.as_dict(),
            "seconds": round(time.perf_counter() - started, 2),
            "simulator_errors": len(sim.errors),
        }
    keys = ("tickets", "lost", "duplicate_notes", "overwritten_human_values", "poisoned")
    return {
        "cases_per_scenario": cases,
        "seed": seed,
        "totals": {k: sum(r[k] for r in results.values()) for k in keys},
        "scenarios": results,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--matrix-cases", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    report: dict[str, Any] = {
        "bench": "dataverse",
        "webhook_in_process": webhook_latency(args.calls, args.repeats),
        "http_requests_per_enriched_case": requests_per_case(args.cases),
    }
    if args.matrix_cases:
        report["fault_matrix"] = fault_matrix(args.matrix_cases)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
