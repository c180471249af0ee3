"""``python -m triage backfill``: arguments, local runs with a real WindowRunner over a tiny
in-memory BatchConnector, the summary, dry-run reports, ``status`` and the exit codes.

The factory is injected (no connector is built from settings). ``kit()`` is shared with the
API and trigger tests.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.backfill_state import MemoryCheckpointStore, RowCheckpointStore
from connectors.backfill_stores import FileCheckpointStore
from connectors.base import RecordPage, SourceRecord, Update, WriteOutcome
from connectors.queue import InMemoryJobQueue
from domain.errors import ConnectorError, RejectedError
from domain.mapping import load_mapping
from domain.settings import ServiceNowSettings, Settings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from tests.simulators.encoded_query import parse
from triage.backfill import cli
from triage.backfill.engine import WindowRunner
from triage.backfill.service import BackfillService
from triage.pipeline import Pipeline

DAY = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 1, 12, 0, 30, tzinfo=UTC)
FIELDS = ("sys_id", "sys_created_on", "sys_updated_on", "category", "subcategory", "impact",
          "urgency", "short_description", "description", "sys_updated_by", "priority")  # fmt: skip


class _Schema:
    def target(self, path: str) -> tuple[str, str] | None:
        return ("incident", path) if path in FIELDS else None

    def lookup(self, record: Any, path: str) -> str:
        return str(record.get(path, ""))


class BatchFake(FakeConnector):
    """FakeConnector plus read_page (the query evaluated by the simulator's engine) and
    update_many; ``refuse`` holds ids whose write is refused, ``fail_reads`` read errors."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        super().__init__(records)
        self.refuse: set[str] = set()
        self.fail_reads: list[ConnectorError] = []
        self.reads = 0

    def read_page(
        self,
        table: str,
        query: str,
        fields: Sequence[str],
        *,
        limit: int,
        cursor: str | None = None,
        order: str | None = None,
    ) -> RecordPage:
        self.reads += 1
        if self.fail_reads:
            raise self.fail_reads.pop(0)
        rows = [{"sys_id": rid, **rec} for rid, rec in self.records.items()]
        found = parse(query).select(rows, _Schema())
        page = [
            SourceRecord("servicenow", table, r["sys_id"], {f: r.get(f, "") for f in fields})
            for r in found[:limit]
        ]
        return RecordPage(page, more=len(found) > limit)

    def update_many(self, table: str, updates: Sequence[Update]) -> list[WriteOutcome]:
        out = []
        for rid, changes, etag in updates:
            if rid in self.refuse:
                error = RejectedError("400 refused", system="servicenow", status_code=400)
                out.append(WriteOutcome(rid, error=error, may_have_run=False))
            else:
                out.append(WriteOutcome(rid, record=self.update(table, rid, changes, etag=etag)))
        return out


def sys_id(i: int) -> str:
    return f"{i:032x}"


def record(i: int, at: datetime, **values: str) -> dict[str, str]:
    stamp = at.strftime("%Y-%m-%d %H:%M:%S")
    base = {"sys_created_on": stamp, "sys_updated_on": stamp, "category": "", "subcategory": "",
            "impact": "2", "urgency": "2", "short_description": f"ticket {i}",
            "description": "wifi is down", "sys_updated_by": "alice"}  # fmt: skip
    return {**base, **values}


def tickets() -> dict[str, dict[str, Any]]:
    """Day 1: 3 to fill, 1 with nothing to fill; day 2: 2 to fill (one refused); 1 complete."""
    return {
        sys_id(1): record(1, DAY + timedelta(hours=1)),
        sys_id(2): record(2, DAY + timedelta(hours=2)),
        sys_id(3): record(3, DAY + timedelta(hours=3)),
        # category set, subcategory empty: selected, but the enricher only knows categories
        sys_id(4): record(4, DAY + timedelta(hours=4), category="software"),
        sys_id(5): record(5, DAY + timedelta(days=1, hours=1)),
        sys_id(6): record(6, DAY + timedelta(days=1, hours=2)),
        sys_id(7): record(7, DAY + timedelta(hours=5), category="software", subcategory="email"),
    }


def settings() -> Settings:
    sn = ServiceNowSettings(
        instance_url="https://x.service-now.com", auth="basic", username="u", password="p"
    )
    return Settings(servicenow=sn)


def kit(
    store: RowCheckpointStore | None = None,
    *,
    connector: BatchFake | None = None,
    queues: bool = True,
    settings_: Settings | None = None,
) -> tuple[BackfillService, BatchFake]:
    """A BackfillService over a real WindowRunner, a BatchFake and in-memory queues."""
    connector = connector or BatchFake(tickets())
    pipeline = Pipeline(
        connector, load_mapping(), [FixedEnricher([suggestion("category", "network")])]
    )
    store = store or MemoryCheckpointStore()
    runner = WindowRunner(pipeline, store)
    service = BackfillService(
        settings_ or settings(),
        store,
        lambda system: runner if system == "servicenow" else None,
        InMemoryJobQueue() if queues else None,
        InMemoryJobQueue() if queues else None,
        now=lambda: NOW,
    )
    return service, connector


def run(argv: list[str], service: BackfillService) -> tuple[int, str]:
    out = io.StringIO()
    calls: list[tuple[str | None, bool]] = []

    def factory(state: str | None, require_storage: bool) -> BackfillService:
        calls.append((state, require_storage))
        return service

    code = cli.main(argv, factory=factory, out=out, sleep=lambda s: None)
    return code, out.getvalue()


SINCE = ["--since", "2024-01-01", "--until", "2024-01-03"]


def test_local_run_fills_and_prints_per_field_and_per_reason_counts():
    service, conn = kit()
    conn.refuse.add(sys_id(6))
    code, out = run(["--platform", "servicenow", *SINCE], service)
    assert code == 0, out
    assert "done (2 windows: 2 done)" in out
    assert "scanned 6, filled 4, skipped 1, failed 1" in out  # ticket 7 is not selected
    assert "filled per field:\n  category  4" in out
    assert "skipped, why:\n  nothing to fill  1" in out
    assert "failed, why:\n  RejectedError  1" in out
    assert {r for r, _ in conn.updates} == {sys_id(i) for i in (1, 2, 3, 5)}
    assert conn.records[sys_id(1)]["category"] == "network"


def test_a_second_run_over_the_same_range_finds_nothing_to_do():
    service, conn = kit()
    assert run(["--platform", "servicenow", *SINCE], service)[0] == 0
    code, out = run(["--platform", "servicenow", *SINCE], service)
    assert code == 0
    assert "scanned 1, filled 0, skipped 1, failed 0" in out  # only ticket 4 is still selected
    assert len(conn.updates) == 5


def test_dry_run_writes_the_csv_and_json_report_and_changes_nothing(tmp_path: Path):
    service, conn = kit()
    report = tmp_path / "rep"
    code, out = run(["--platform", "servicenow", *SINCE, "--dry-run", "--report", str(report)],
                    service)  # fmt: skip
    assert code == 0
    assert conn.updates == [] and conn.records[sys_id(1)]["category"] == ""
    text = (tmp_path / "rep.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    fills = {(r["record_id"], r["field"]) for r in rows if r["action"] == "fill"}
    assert fills == {(sys_id(i), "category") for i in (1, 2, 3, 5, 6)}
    first = {(r["record_id"], r["field"]): r for r in rows}[(sys_id(1), "category")]
    assert first["new_value"] == "network" and first["old_value"] == ""
    data = json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))
    assert len(data) == len(rows)
    assert f"report: {tmp_path / 'rep.csv'} and {tmp_path / 'rep.json'}" in out
    assert "filled per field:\n  category  5" in out  # what would be filled


def test_dry_run_report_defaults_to_the_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    service, _ = kit()
    code, _ = run(["--platform", "servicenow", *SINCE, "--dry-run", "--run-id", "dry1"], service)
    assert code == 0
    assert (tmp_path / "backfill-dry1.csv").exists() and (tmp_path / "backfill-dry1.json").exists()


def test_a_failed_window_exits_1_and_names_its_reason():
    service, conn = kit()
    conn.fail_reads.append(RejectedError("400 bad query", system="servicenow", status_code=400))
    code, out = run(["--platform", "servicenow", *SINCE], service)
    assert code == 1
    assert "failed (2 windows: 1 done, 1 failed)" in out
    assert "failed windows:\n  window 0: RejectedError" in out


def test_resume_by_run_id_keeps_the_stored_question_and_repeats_nothing(tmp_path: Path):
    state = FileCheckpointStore(tmp_path / "state.json")
    service, conn = kit(state)
    conn.fail_reads.append(RejectedError("400", system="servicenow", status_code=400))
    assert run(["--platform", "servicenow", *SINCE, "--run-id", "r1"], service)[0] == 1
    # Resumed with other dates: the stored spec wins; the failed window stays failed.
    code, out = run(["--platform", "servicenow", "--run-id", "r1"], service)
    assert code == 1
    assert "scanned 2, filled 2" in out  # the second window, counted once
    assert len(conn.updates) == 2


def test_status_prints_the_summary_or_json_and_exit_codes():
    service, conn = kit()
    conn.fail_reads.append(RejectedError("400", system="servicenow", status_code=400))
    run(["--platform", "servicenow", *SINCE, "--run-id", "s1"], service)
    code, out = run(["status", "s1"], service)
    assert code == 1 and "run s1: failed" in out and "window 0: RejectedError" in out
    code, out = run(["status", "s1", "--json"], service)
    body = json.loads(out)
    assert body["state"] == "failed" and body["by_status"] == {"done": 1, "failed": 1}
    assert body["counts"]["filled"] == 2 and body["filled"] == {"category": 2}
    code, out = run(["status", "nope"], service)
    assert code == 2 and "no run nope" in out


def test_submit_queues_one_message_per_window_and_prints_how_to_watch():
    service, _ = kit()
    code, out = run(["--platform", "servicenow", *SINCE, "--submit", "--run-id", "sub1"], service)
    assert code == 0
    assert "submitted sub1: 2 windows queued" in out
    assert "python -m triage backfill status sub1" in out
    assert service.queue is not None and len(service.queue.messages) == 2  # type: ignore[attr-defined]


def test_submit_without_storage_is_a_clear_error():
    service, _ = kit(queues=False)
    code, out = run(["--platform", "servicenow", *SINCE, "--submit"], service)
    assert code == 2
    assert out.startswith(
        "error: submitting needs Storage: set the app setting AzureWebJobsStorage"
    )
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--platform", "servicenow", "--query", "a=1", "--filter", "b"], "not allowed with"),
        (["--platform", "servicenow", "--since", "2024-13-01"], "argument --since: not a date"),
        (["--platform", "servicenow", "--until", "yesterday"], "argument --until: not a date"),
        (["--platform", "dynamics", "--query", "active=true"], "error: --query is for servicenow"),
        (["--platform", "servicenow", "--filter", "statecode eq 0"], "error: --filter is for"),
        (
            ["--platform", "servicenow", "--since", "2024-02-01", "--until", "2024-01-01"],
            "error: --since must be before until",
        ),
        (["--platform", "servicenow", "--limit", "0"], "argument --limit: must be at least 1"),
        (["--platform", "servicenow", "--query", "active=true^NQactive=false"], "^NQ"),
        (["--platform", "dynamics"], "error: no dataverse platform is configured"),
        (["--since", "2024-01-01"], "error: --platform servicenow|dynamics is required"),
        (["--platform", "servicenow", "--run-id", "bad id!"], "error: a run id is 1-64 letters"),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(argv, expected, capsys):
    service, conn = kit()
    code, out = run(argv, service)
    assert code == 2
    assert expected in out + capsys.readouterr().err
    assert conn.reads == 0 and "Traceback" not in out


def test_defaults_cover_30_days_before_now():
    service, _ = kit()
    assert run(["--platform", "servicenow", "--submit", "--run-id", "d1"], service)[0] == 0
    status = service.status("d1")
    assert status.spec["until"].startswith("2024-03-01T12:00:30")
    assert status.spec["since"].startswith("2024-01-31T12:00:30")
    assert status.spec["origin"] == "cli" and status.spec["by"] == "created"


def test_progress_postfix_shows_counts_rate_and_quota():
    from connectors.backfill_models import Counts

    clock = iter([0.0, 10.0])
    progress = cli.Progress(3, initial=Counts(5, 5), quota_used=lambda: 0.42,
                            stream=io.StringIO(), clock=lambda: next(clock))  # fmt: skip
    progress.counts = progress.counts + Counts(20, 10, 6, 4)
    progress._fresh = 20
    shown = progress.postfix()
    progress.close()
    assert shown == {"scanned": "25", "filled": "15", "skipped": "6", "failed": "4",
                     "rate": "2.0/s", "quota": "42%"}  # fmt: skip


def test_the_top_level_cli_has_the_backfill_command():
    from triage.cli import build_parser

    args = build_parser().parse_args(["backfill", "status", "x1", "--json"])
    assert args.backfill_command == "status" and args.run == "x1" and args.json
