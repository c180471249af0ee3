"""Backfills at scale (issue 10, "Measured"): both simulators, a configured quota, two kills.

For each platform the parent process runs the loopback simulator in-process (ServiceNow over
HTTP with OAuth; Dataverse over TLS with its msal-compatible token endpoint), generates
``--tickets`` tickets spread over 40 days (varied texts, about one in seven with nothing an
enricher can be sure of, about one in eight with a value a person set), and starts the backfill
in a child process (``bench.backfill_child``: checkpoints in a ``FileCheckpointStore`` file, a
``SharedBudget`` at the quota as the connector's pacer, a short lease). It SIGKILLs the child
when 30 % and again when 60 % of the tickets are scanned, restarts it with the same run id each
time, and lets the third finish.

Afterwards it checks the simulator's state: ``duplicated`` counts tickets with more than one of
our notes; ``failed`` is the run's failed count plus the tickets a clean dry run over the final
state would still fill (run in the parent, its requests not counted) plus a person's value
overwritten; ``requests_per_enriched_ticket`` is every request the platform served (token
requests, reads, batches and, for ServiceNow, each Batch API sub-request, which its rate-limit
rules count one by one) over the tickets written. ``quota_used_share`` is the requests the
children's budgets granted over what the quota allowed while a child was alive and not waiting
for a dead child's lease; ``wall_quota_share`` is the platform-counted requests over the quota
for the whole wall time, kills and restarts included.

Seeding and the child's runs with kills live in ``bench.backfill_runs``; this module checks
the simulators' state and works out the figures. Prints one JSON object. Nothing leaves
127.0.0.1.

    python -m bench.bench_backfill [--tickets 20000] [--servicenow-quota-per-s 150]
        [--dynamics-quota-per-s 2.0] [--platform servicenow|dynamics ...] [--lease-s 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.backfill_runs import (
    DAYS,
    DV_CLIENT,
    SN_CLIENT,
    SN_USER,
    START,
    Generated,
    run_with_kills,
    seed_dataverse,
    seed_servicenow,
)
from connectors.backfill_state import MemoryCheckpointStore


def _dry_run_fillable(runner_of: Callable[[], Any], spec_args: dict[str, Any]) -> int:
    """Tickets a clean dry run over the final state would still fill (0 expected)."""
    from triage.backfill.run import run_local
    from triage.backfill.spec import BackfillSpec

    runner, connector = runner_of()
    try:
        spec = BackfillSpec(run_id="bench-check", dry_run=True, **spec_args)
        status = run_local(spec, runner, runner.store)
    finally:
        connector.close()
    return status.counts.filled


def _quota(outcome: dict[str, Any], quota: float, counted: int) -> dict[str, Any]:
    granted = sum(i.get("granted", 0) for i in outcome["incarnations"])
    working = sum(
        max(0.0, i.get("alive_s", 0.0) - i.get("lease_wait_s", 0.0))
        for i in outcome["incarnations"]
    )
    lease_wait = sum(i.get("lease_wait_s", 0.0) for i in outcome["incarnations"])
    return {
        "quota_used_share": round(granted / (quota * working), 4) if working else 0.0,
        "wall_quota_share": round(counted / (quota * outcome["wall_s"]), 4),
        "granted": granted,
        "working_s": round(working, 2),
        "lease_wait_s": round(lease_wait, 2),
        "throttles": sum(i.get("throttles", 0) for i in outcome["incarnations"]),
    }


def bench_servicenow(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The ServiceNow run and its checks."""
    from tests.simulators.servicenow import ServiceNowSimulator

    sim = ServiceNowSimulator(
        users={"anna.b": "pw"}, oauth_clients={SN_CLIENT[0]: (SN_CLIENT[1], SN_USER)}
    )
    with sim:
        made = seed_servicenow(sim, args.tickets, args.seed)
        outcome = run_with_kills("servicenow", sim, args, work, SN_CLIENT[1])
        log, subs = sim.request_log, len(sim.batch.sub_requests)
        notes = Counter(
            r["element_id"]
            for r in sim.records("sys_journal_field")
            if r["element"] == "work_notes"
        )
        overwritten = sum(
            1
            for i, want in made.person.items()
            if any((sim.get_record("incident", i) or {}).get(k) != v for k, v in want.items())
        )

        def runner_of() -> Any:
            return _parent_runner("servicenow", sim, SN_CLIENT)

        fillable = _dry_run_fillable(runner_of, _spec_args("servicenow", args))
    kinds = Counter(_sn_kind(r.method, r.path) for r in log)
    kinds["batch sub-request"] = subs
    served = len(log) + subs
    # What ServiceNow's rate-limit rules count: Table API requests and each sub-request.
    counted = served - kinds["token"] - kinds["POST batch"]
    return _figures(args, outcome, notes, made, overwritten, fillable, kinds, served, counted,
                    args.servicenow_quota_per_s)  # fmt: skip


def bench_dynamics(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The Dataverse run and its checks."""
    from tests.simulators.dataverse import DataverseSimulator

    sim = DataverseSimulator({DV_CLIENT[0]: DV_CLIENT[1]})
    with sim:
        sim.tokens.resource = sim.url  # the environment lives at the loopback URL
        made = seed_dataverse(sim, args.tickets, args.seed)
        outcome = run_with_kills("dynamics", sim, args, work, DV_CLIENT[1])
        log = sim.request_log
        with sim.store.lock:
            notes = Counter(
                str(r.get("_objectid_value")) for r in sim.store.tables["annotations"].values()
            )
        overwritten = sum(
            1
            for i, want in made.person.items()
            if any((sim.get_case(i) or {}).get(k) != v for k, v in want.items())
        )

        def runner_of() -> Any:
            return _parent_runner("dynamics", sim, DV_CLIENT)

        fillable = _dry_run_fillable(runner_of, _spec_args("dataverse", args))
    kinds = Counter(_dv_kind(r.method, r.path, sim.tenant) for r in log)
    served = len(log)  # a $batch counts as one request against service protection
    return _figures(args, outcome, notes, made, overwritten, fillable, kinds, served, served,
                    args.dynamics_quota_per_s)  # fmt: skip


def _spec_args(system: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"system": system, "since": START, "until": START + timedelta(days=DAYS),
            "page_size": 100 if system == "servicenow" else 500,
            "window_tickets": max(1, args.tickets // DAYS)}  # fmt: skip


def _parent_runner(platform: str, sim: Any, client: tuple[str, str]) -> tuple[Any, Any]:
    """A runner in the parent (no budget, memory checkpoints) for the dry-run check."""
    from bench.backfill_child import build_runner, parse_args
    from connectors.backfill_pacing import MemoryBudgetRows, SharedBudget

    extra = ["--tenant", sim.tenant, "--ca", str(sim.ca_path)] if platform == "dynamics" else []
    ns = parse_args(["--platform", platform, "--url", sim.url, "--client-id", client[0],
                     "--run-id", "bench-check", "--state", "unused", "--stats", "unused",
                     "--since", START.isoformat(), "--until", START.isoformat(),
                     "--quota-per-s", "1000000", *extra])  # fmt: skip
    budget = SharedBudget(MemoryBudgetRows(), scope="check", requests=10**9, period_s=60.0)
    runner, connector = build_runner(ns, budget, client[1])
    runner.store = MemoryCheckpointStore()
    return runner, connector


def _sn_kind(method: str, path: str) -> str:
    if path == "/oauth_token.do":
        return "token"
    if path.rstrip("/") == "/api/now/v1/batch":
        return "POST batch"
    parts = path.strip("/").split("/")
    return f"{method} {parts[3] if len(parts) > 3 else path}"


def _dv_kind(method: str, path: str, tenant: str) -> str:
    if path.startswith(f"/{tenant}/"):
        return "token" if path.endswith("/token") else "discovery"
    return f"{method} {path.rsplit('/', 1)[-1].split('(')[0]}"


def _figures(
    args: argparse.Namespace,
    outcome: dict[str, Any],
    notes: Counter[str],
    made: Generated,
    overwritten: int,
    fillable: int,
    kinds: Counter[str],
    served: int,
    counted: int,
    quota: float,
) -> dict[str, Any]:
    status = outcome["status"]
    ids = set(made.ids)
    written = sum(1 for i in ids if notes.get(i, 0) >= 1)
    duplicated = sum(1 for i in ids if notes.get(i, 0) > 1)
    failed = status.counts.failed + fillable + overwritten
    finished = outcome["exit_code"] == 0 and status.state == "done"
    killed = sum(1 for k in outcome["kills"] if k["killed"])
    wall = outcome["wall_s"]
    quota_figures = _quota(outcome, quota, counted)
    return {
        "tickets": status.counts.scanned,
        "tickets_per_s": round(status.counts.scanned / wall, 1),
        "quota_used_share": quota_figures["quota_used_share"],
        "requests_per_enriched_ticket": round(served / written, 4) if written else None,
        "failed": failed,
        "duplicated": duplicated,
        "resumed_after_kill": bool(
            finished and killed == 2 and duplicated == 0 and failed == 0
        ),
        "detail": {
            "generated": len(ids),
            "written": written,
            "run_counts": {"scanned": status.counts.scanned, "filled": status.counts.filled,
                           "skipped": status.counts.skipped, "failed": status.counts.failed},
            "still_fillable_after_run": fillable,
            "person_values_overwritten": overwritten,
            "requests_served": served,
            "requests_counted_by_platform_limits": counted,
            "platform_counted_per_enriched_ticket": round(counted / written, 4) if written else None,
            "requests_by_kind": dict(sorted(kinds.items())),
            "quota_per_s": quota,
            **quota_figures,
            "kills": outcome["kills"],
            "wall_s": round(wall, 2),
            **outcome["cpu"],
            "exit_code": outcome["exit_code"],
        },
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen platforms and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--servicenow-quota-per-s", type=float, default=150.0)
    parser.add_argument("--dynamics-quota-per-s", type=float, default=2.0)
    parser.add_argument("--platform", action="append", choices=("servicenow", "dynamics"))
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--kills", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    platforms: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        for platform in args.platform or ("servicenow", "dynamics"):
            work = Path(tmp) / platform
            work.mkdir()
            run = bench_servicenow if platform == "servicenow" else bench_dynamics
            platforms[platform] = run(args, work)
    targets = {
        "quota_used_share_min": 0.95,
        "failed": 0,
        "duplicated": 0,
        "servicenow_requests_per_enriched_ticket_max": 1.05,
        "dynamics_requests_per_enriched_ticket_max": 0.05,
    }
    met: dict[str, bool] = {}
    for name, figures in platforms.items():
        limit = targets[f"{name}_requests_per_enriched_ticket_max"]
        per = figures["requests_per_enriched_ticket"]
        met[name] = bool(
            figures["quota_used_share"] >= targets["quota_used_share_min"]
            and figures["failed"] == 0
            and figures["duplicated"] == 0
            and per is not None
            and per <= limit
            and figures["resumed_after_kill"]
        )
    report = {
        "platforms": platforms,
        "tickets_requested": args.tickets,
        "quota": {
            "servicenow_requests_per_s": args.servicenow_quota_per_s,
            "dynamics_requests_per_s": args.dynamics_quota_per_s,
            "share": 1.0,
            "servicenow_budget_charges": "each Batch API sub-request (by the connector)",
            "lease_s": args.lease_s,
        },
        "targets": targets,
        "met": met,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
