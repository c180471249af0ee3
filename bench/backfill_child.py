"""The worker process of ``bench.bench_backfill``: one local backfill run, killable at any point.

The parent starts it with ``python -m bench.backfill_child ARGS`` (the client secret in the
environment variable ``BENCH_BACKFILL_SECRET``, never on the command line), kills it with
SIGKILL while it works, and starts it again with the same run id. It carries out the run like
``python -m triage backfill`` does (``run_local`` window after window) with checkpoints in a
``FileCheckpointStore`` file, a ``SharedBudget`` (memory rows) at the bench's quota as the
connector's pacer, a short lease so a restarted child takes a dead child's window over quickly,
and its own claim store (a dead child's claims die with it; the checkpoint's takeover looks for
our note first).

After every page it replaces ``--stats FILE`` (atomically) with what this incarnation did: the
requests the budget granted, how long it has been alive, how long it slept waiting for a
window's lease (a dead child's), the budget's own waits and throttles, and the counts of the
pages it finished. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.backfill_models import Counts
from connectors.backfill_pacing import MemoryBudgetRows, SharedBudget
from connectors.backfill_stores import FileCheckpointStore
from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping
from enrichers import default_enrichers
from triage.backfill.engine import WindowRunner
from triage.backfill.run import run_local
from triage.backfill.spec import BackfillSpec
from triage.pipeline import Pipeline

__all__ = [
    "ChildStats",
    "FileBudgetRows",
    "build_runner",
    "dynamics_mapping",
    "main",
]

SECRET_ENV = "BENCH_BACKFILL_SECRET"  # noqa: S105 - the variable's name, not a secret
#: Dataverse's service protection window and execution-time limit (dataverse.md §6).
DATAVERSE_PERIOD_S = 300.0
DATAVERSE_EXECUTION_S = 1200.0
#: ServiceNow's rule is per hour; the bench states its quota per minute so slots are 1 s.
SERVICENOW_PERIOD_S = 60.0


def dynamics_mapping() -> FieldMapping:
    """The default Dynamics mapping plus custom impact/urgency choice columns (as the
    Dataverse fault matrix uses), so a case can get impact, urgency and priority."""
    data = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH).model_dump()
    data["fields"] = {**data["fields"], "impact": "new_impact", "urgency": "new_urgency"}
    return FieldMapping.model_validate(data)


@dataclass
class ChildStats:
    """What one incarnation of the child did, written after every page."""

    path: Path
    budget: SharedBudget
    started: float
    lease_wait_s: float = 0.0
    counts: Counts = field(default_factory=Counts)

    def sleep(self, seconds: float) -> None:
        """``run_local``'s sleep: only waits for a window held by someone else (a lease)."""
        self.lease_wait_s += seconds
        time.sleep(seconds)

    def progress(self, delta: Counts) -> None:
        """The runner's progress hook: add the page's counts and write the stats file."""
        self.counts = self.counts + delta
        self.write(done=False)

    def write(self, *, done: bool) -> None:
        """Replace the stats file with this incarnation's figures (atomic rename)."""
        stats = self.budget.stats()
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "alive_s": round(time.monotonic() - self.started, 3),
            "lease_wait_s": round(self.lease_wait_s, 3),
            "granted": stats.granted,
            "budget_waited_s": round(stats.waited_s, 3),
            "budget_paused_s": round(stats.paused_s, 3),
            "throttles": stats.throttles,
            "scanned": self.counts.scanned,
            "filled": self.counts.filled,
            "skipped": self.counts.skipped,
            "failed": self.counts.failed,
            "done": done,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)


class FileBudgetRows:
    """The budget's rows in one JSON file, so a restarted child continues the dead one's slot
    (as every instance shares one Table Storage row in production; a fresh ``MemoryBudgetRows``
    per incarnation would hand each restart a new full slot). One child at a time writes it;
    each write replaces the file atomically and bumps the etag."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)

    def get(self, scope: str) -> tuple[dict[str, Any], str] | None:
        """The row and its etag, or None."""
        found = self._load().get(scope)
        return None if found is None else (dict(found["row"]), str(found["etag"]))

    def insert(self, scope: str, row: Mapping[str, Any]) -> str | None:
        """Create the row unless it exists."""
        data = self._load()
        if scope in data:
            return None
        data[scope] = {"row": dict(row), "etag": "1"}
        self._save(data)
        return "1"

    def replace(self, scope: str, row: Mapping[str, Any], etag: str) -> str | None:
        """Replace the row if ``etag`` is current."""
        data = self._load()
        found = data.get(scope)
        if found is None or str(found["etag"]) != etag:
            return None
        new = str(int(etag) + 1)
        data[scope] = {"row": dict(row), "etag": new}
        self._save(data)
        return new


def _budget(args: argparse.Namespace) -> SharedBudget:
    rows: Any = FileBudgetRows(Path(args.budget)) if args.budget else MemoryBudgetRows()
    if args.platform == "servicenow":
        return SharedBudget(
            rows,
            scope="servicenow:bench:svc",
            requests=max(1, math.floor(args.quota_per_s * SERVICENOW_PERIOD_S)),
            period_s=SERVICENOW_PERIOD_S,
            share=1.0,
        )
    return SharedBudget(
        rows,
        scope="dataverse:bench:app",
        requests=max(1, math.floor(args.quota_per_s * DATAVERSE_PERIOD_S)),
        period_s=DATAVERSE_PERIOD_S,
        share=1.0,
        max_execution_s=DATAVERSE_EXECUTION_S,
    )


def build_runner(
    args: argparse.Namespace, budget: SharedBudget, secret: str
) -> tuple[WindowRunner, Any]:
    """The window runner over a connector paced by ``budget``; (runner, connector)."""
    from domain.settings import HttpSettings

    http = HttpSettings(read_timeout_s=30.0)
    claims = MemoryClaimStore()
    connector: Any
    if args.platform == "servicenow":
        from connectors.servicenow import ServiceNowConnector
        from domain.settings import ServiceNowSettings

        settings = ServiceNowSettings(
            instance_url=args.url, auth="oauth", client_id=args.client_id, client_secret=secret
        )
        connector = ServiceNowConnector(
            settings, http, pacer=budget.slot, on_throttle=budget.throttled
        )
        mapping = load_mapping()
    else:
        import requests

        from connectors._msal import MsalTokenProvider
        from connectors.dataverse import DataverseConnector
        from domain.settings import DataverseSettings

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = args.ca
        settings_dv = DataverseSettings(
            org_url=args.url,
            tenant_id=args.tenant,
            client_id=args.client_id,
            client_secret=secret,
            authority_host=args.url,
        )
        mapping = dynamics_mapping()
        connector = DataverseConnector(
            settings_dv,
            http,
            field_types=mapping.column_types(),
            token_provider=MsalTokenProvider(
                settings_dv, http_client=session, validate_authority=False
            ),
            session=session,
            shared_pacer=budget.slot,
            on_throttle=budget.throttled,
        )
    # The ServiceNow connector charges the budget for each Batch API sub-request itself.
    pipeline = Pipeline(connector, mapping, default_enrichers(mapping), claims=claims)
    store = FileCheckpointStore(args.state)
    runner = WindowRunner(pipeline, store, lease_s=args.lease_s, time_budget_s=3600.0)
    return runner, connector


def spec_of(args: argparse.Namespace) -> BackfillSpec:
    """The run's spec (the same for every incarnation: planning it again adds nothing)."""
    return BackfillSpec(
        run_id=args.run_id,
        system="servicenow" if args.platform == "servicenow" else "dataverse",
        since=datetime.fromisoformat(args.since),
        until=datetime.fromisoformat(args.until),
        page_size=args.page_size,
        window_tickets=args.window_tickets,
        dry_run=args.dry_run,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The child's command line (see ``bench.bench_backfill``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--platform", choices=("servicenow", "dynamics"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--tenant", default="")
    parser.add_argument("--ca", default="")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--budget", default="", help="budget rows file (default: memory)")
    parser.add_argument("--since", required=True)
    parser.add_argument("--until", required=True)
    parser.add_argument("--quota-per-s", type=float, required=True)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--window-tickets", type=int, default=500)
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--dry-run", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Carry out the run; exit 0 when it is done, 1 otherwise."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    secret = os.environ.get(SECRET_ENV, "")
    budget = _budget(args)
    runner, connector = build_runner(args, budget, secret)
    stats = ChildStats(Path(args.stats), budget, time.monotonic())
    runner.progress = stats.progress
    try:
        status = run_local(spec_of(args), runner, runner.store, sleep=stats.sleep)
    finally:
        connector.close()
    stats.write(done=status.state == "done")
    return 0 if status.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
