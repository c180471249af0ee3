"""The improvement report against the ServiceNow simulator, end to end.

Shadow mode enriches four tickets through the whole slice (webhook, queue, worker, pipeline
with a ``MemoryShadowStore``) and writes nothing; then people work the tickets: three are
closed with the values they chose, one stays open. ``python -m triage report`` (its handler,
with the simulator's connector passed in) reads the final values in one batched query and
scores the suggestions against them.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

from connectors.servicenow import ServiceNowConnector
from connectors.shadow import MemoryShadowStore
from domain.settings import HttpSettings, ServiceNowSettings, Settings
from tests.integration.conftest import CLIENT, build_slice, installed
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator
from triage.learn.improvement_cli import run_report

OUTAGE = {
    "short_description": "",
    "description": (
        "Hi team,\n\nThe VPN is down for all users in store 12 since 08:00, nobody can work. "
        "Please help asap!\n\nBest regards\nAnna Berg\nStore manager"
    ),
    "caller_id": "5137153cc611227c000bbd1bd8cd2005",
}


class _Svgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.labels.append(dict(attrs).get("aria-label") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data.strip())


def test_shadow_run_then_people_close_tickets_then_the_report(
    sim: ServiceNowSimulator, clock: FakeClock, tmp_path: Path
) -> None:
    store = MemoryShadowStore()
    with installed(build_slice(sim, clock, shadow=store)) as app:
        ids = [sim.add_record("incident", OUTAGE, user="anna.b") for _ in range(4)]
        for sys_id in ids:
            assert app.webhook(sys_id).status_code == 202
        assert app.drain() == 4
    assert not [r for r in sim.request_log if r.method != "GET" and r.path.startswith("/api/now")]
    suggested = {r.field: r for r in store.since(0) if r.record_id == ids[0]}
    assert suggested["category"].value == "network"
    assert suggested["impact"].value == "high"

    # People work the tickets: right, wrong category, default impact left, still open.
    sim.update_record("incident", ids[0], {"category": "network", "impact": "1", "state": "7"})
    sim.update_record("incident", ids[1], {"category": "hardware", "impact": "1", "state": "6"})
    sim.update_record("incident", ids[2], {"category": "network", "impact": "3", "state": "7"})
    sim.update_record("incident", ids[3], {"category": "hardware", "state": "2"})

    sn = ServiceNowSettings(
        instance_url=sim.url, auth="oauth", client_id=CLIENT[0], client_secret=CLIENT[1]
    )
    connector = ServiceNowConnector(sn, HttpSettings(read_timeout_s=5.0))
    settings = Settings(servicenow=sn)
    before = len(sim.request_log)
    out = io.StringIO()
    page = tmp_path / "report.html"
    args = argparse.Namespace(
        since="2027-01-01",
        until=None,
        platform="servicenow",
        mapping=None,
        shadow_file=None,
        target=[],
        json=True,
        html=str(page),
    )
    try:
        code = run_report(
            args,
            sources=lambda platform: (connector, settings),
            store=store,
            out=out,
            now=lambda: datetime.fromtimestamp(clock.now() + 60, UTC),
        )
    finally:
        connector.close()
    assert code == 0
    report = json.loads(out.getvalue())

    assert report["tickets"] == {
        "with_suggestions": 4,
        "closed": 3,
        "not_closed": 1,
        "invalid_ids": 0,
    }
    # One batched query for the four tickets' final values, not a GET per ticket.
    reads = [r for r in sim.request_log[before:] if r.path.startswith("/api/now/table/incident")]
    assert len(reads) == 1
    query = reads[0].query["sysparm_query"]
    assert query.startswith("sys_idIN") and "stateIN6,7" in query
    assert all(sys_id in query for sys_id in ids)

    category = report["fields"]["category"]
    cleared = suggested["category"].confidence >= 0.85
    assert (category["suggestions"], category["final_known"]) == (3, 3)
    assert category["agreement"] == round(2 / 3, 4)
    assert category["coverage"] == (1.0 if cleared else 0.0)
    assert category["precision"] == (round(2 / 3, 4) if cleared else None)
    classes = {c["label"]: c for c in category["classes"]}
    assert classes["network"]["suggestions"] == 3 and classes["hardware"]["final"] == 1
    assert classes["hardware"]["recall_at_threshold"] == 0.0

    impact = report["fields"]["impact"]
    assert (impact["suggestions"], impact["final_known"], impact["agreement"]) == (3, 2, 1.0)

    parsed = _Svgs()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert len(parsed.labels) == len(report["fields"])
    assert any("category" in label for label in parsed.labels)
    assert "network" in parsed.text
