"""The improvement report: shadow suggestions joined with the final values on closed tickets.

Hand-made tickets (default ServiceNow mapping: category threshold 0.85, ``inquiry`` unset):

=====  =========================  ==============  ===================================
t1     network 0.95 (write)       network         agrees, cleared
t2     network 0.90 (write)       hardware        disagrees, cleared
t3     hardware 0.70 (skip)       hardware        agrees, below the threshold
t4     account_access 0.99        request         agrees (raw value of account_access)
t5     network 0.60 (skip)        inquiry         default left in place: not scored
t6     (no category suggestion)   database        a coverage gap
t7     network 0.99               (open)          not closed: left out
=====  =========================  ==============  ===================================
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from connectors.base import SourceRecord
from connectors.shadow import MemoryShadowStore, ShadowRecord
from domain.errors import ConfigError
from domain.mapping import DEFAULT_MAPPING_PATH, load_mapping
from tests.fakes import FakeConnector
from triage.learn.improvement import (
    build_report,
    final_query,
    latest_suggestions,
    read_finals,
)
from triage.learn.improvement_cli import parse_when, read_shadow_file, run_report
from triage.learn.improvement_html import render_improvement_html

MAPPING = load_mapping()
T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


def sid(n: int) -> str:
    return f"{n:032x}"


def shadow(n: int, field: str, value: str, confidence: float, **kw: Any) -> ShadowRecord:
    values: dict[str, Any] = {
        "system": "servicenow",
        "table": "incident",
        "record_id": sid(n),
        "number": f"INC{n:07d}",
        "field": field,
        "value": value,
        "confidence": confidence,
        "reason": "test",
        "source": "keywords",
        "action": "write" if confidence >= 0.85 else "skip",
        "why": "",
        "input_hash": "h1",
        "mapping_version": "m1",
        "model_version": "",
        "at": T0 + n,
        **kw,
    }
    return ShadowRecord(**values)


def closed(category: str, impact: str = "3", state: str = "7") -> dict[str, Any]:
    return {"category": category, "impact": impact, "state": state, "urgency": "3"}


def scenario() -> tuple[list[ShadowRecord], FakeConnector]:
    records = [
        shadow(1, "category", "hardware", 0.97, at=T0 - 1000, input_hash="old"),  # re-run
        shadow(1, "category", "network", 0.95),
        shadow(2, "category", "network", 0.90),
        shadow(3, "category", "hardware", 0.70),
        shadow(4, "category", "account_access", 0.99),
        shadow(5, "category", "network", 0.60),
        shadow(6, "impact", "medium", 0.85),
        shadow(1, "impact", "high", 0.90),
        shadow(7, "category", "network", 0.99),
        shadow(1, "summary", "VPN down", 0.9),  # free text: not scored
    ]
    connector = FakeConnector(
        {
            sid(1): closed("network", impact="1"),
            sid(2): closed("hardware", state="6"),
            sid(3): closed("hardware"),
            sid(4): closed("request"),
            sid(5): closed("inquiry"),
            sid(6): closed("database"),
            sid(7): closed("network", state="2"),
            sid(8): closed("network"),  # closed, but never enriched
        }
    )
    return records, connector


class RecordingConnector(FakeConnector):
    """The fake table, noting each query (it answers every record, as if unfiltered)."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        super().__init__(records)
        self.queries: list[tuple[str, tuple[str, ...], int | None]] = []

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        self.queries.append((query, tuple(fields), page_size))
        return super().iter_records(table, query, fields, page_size=page_size)


def report() -> dict[str, Any]:
    records, connector = scenario()
    finals = read_finals(connector, MAPPING, latest_suggestions(records, MAPPING))
    return build_report(records, finals, MAPPING)


def test_ticket_counts_leave_out_open_tickets_and_say_how_many() -> None:
    assert report()["tickets"] == {
        "with_suggestions": 7,
        "closed": 6,
        "not_closed": 1,
        "invalid_ids": 0,
    }


def test_field_figures_agreement_coverage_and_precision_at_the_threshold() -> None:
    category = report()["fields"]["category"]
    assert category["threshold"] == 0.85
    assert category["tickets"] == 6
    assert category["suggestions"] == 5  # t1..t5 (t6 had none; t7 is open)
    assert category["final_known"] == 4  # t5's final is the unset default inquiry
    assert category["agreement"] == 0.75  # t1, t3, t4 of four
    assert category["cleared"] == 3  # t1, t2, t4
    assert category["coverage"] == 0.5  # 3 of 6 closed tickets
    assert category["precision"] == pytest.approx(0.6667)  # t1, t4 of three
    assert category["below_target"] is True
    assert category["classes_below_target"] == ["network"]
    assert category["by_action"] == {
        "skip": {"suggestions": 2, "final_known": 1, "agreement": 1.0},
        "write": {"suggestions": 3, "final_known": 3, "agreement": pytest.approx(0.6667)},
    }


def test_the_latest_suggestion_per_ticket_counts_and_summary_is_not_scored() -> None:
    records, _ = scenario()
    latest = latest_suggestions(records, MAPPING)
    assert latest[sid(1)]["category"].value == "network"  # not the older "hardware"
    assert "summary" not in latest[sid(1)]
    assert set(report()["fields"]) == {"category", "impact"}


def test_threshold_sweep_numbers() -> None:
    sweep = {p["threshold"]: p for p in report()["fields"]["category"]["sweep"]}
    assert list(sweep) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]
    got = {t: (p["cleared"], p["coverage"], p["judged"], p["precision"]) for t, p in sweep.items()}
    assert got[0.5] == (5, pytest.approx(0.8333), 4, 0.75)
    assert got[0.6] == (5, pytest.approx(0.8333), 4, 0.75)  # 0.60 clears 0.60
    assert got[0.65] == (4, pytest.approx(0.6667), 4, 0.75)
    assert got[0.7] == (4, pytest.approx(0.6667), 4, 0.75)
    assert got[0.75] == (3, 0.5, 3, pytest.approx(0.6667))
    assert got[0.9] == (3, 0.5, 3, pytest.approx(0.6667))
    assert got[0.95] == (2, pytest.approx(0.3333), 2, 1.0)
    assert got[0.99] == (1, pytest.approx(0.1667), 1, 1.0)


def test_per_class_figures_named_by_the_mapping() -> None:
    classes = {c["label"]: c for c in report()["fields"]["category"]["classes"]}
    assert list(classes) == ["account_access", "database", "hardware", "network"]
    network = classes["network"]
    assert (network["suggestions"], network["final_known"], network["agreement"]) == (3, 2, 0.5)
    assert (network["cleared"], network["precision"], network["below_target"]) == (2, 0.5, True)
    assert (network["final"], network["recall_at_threshold"]) == (1, 1.0)
    hardware = classes["hardware"]
    assert (hardware["agreement"], hardware["cleared"], hardware["precision"]) == (1.0, 0, None)
    assert (hardware["final"], hardware["recall_at_threshold"], hardware["below_target"]) == (
        2,
        0.0,
        False,
    )
    access = classes["account_access"]
    assert (access["raw"], access["precision"]) == ("request", 1.0)
    assert (classes["database"]["suggestions"], classes["database"]["final"]) == (0, 1)


def test_a_default_left_in_place_is_not_scored_but_a_chosen_value_is() -> None:
    impact = report()["fields"]["impact"]
    assert (impact["suggestions"], impact["final_known"], impact["agreement"]) == (2, 1, 1.0)
    assert (impact["cleared"], impact["judged"], impact["precision"]) == (2, 1, 1.0)


def test_targets_per_field_change_the_flags() -> None:
    records, connector = scenario()
    finals = read_finals(connector, MAPPING, latest_suggestions(records, MAPPING))
    lenient = build_report(records, finals, MAPPING, targets={"category": 0.5})
    assert lenient["fields"]["category"]["below_target"] is False
    assert lenient["fields"]["category"]["classes_below_target"] == []
    assert lenient["fields"]["impact"]["target"] == 0.95


def test_finals_are_read_in_batches_of_closed_tickets_only() -> None:
    records, base = scenario()
    connector = RecordingConnector(base.records)
    ids = [*latest_suggestions(records, MAPPING), "not-a-sys-id'^ORDERBYx"]
    finals = read_finals(connector, MAPPING, ids, batch_size=3)
    assert finals.invalid_ids == 1
    assert sorted(finals.values) == [sid(n) for n in range(1, 7)]  # t7 open, t8 not asked
    assert finals.not_final == 1
    queries = [q for q, _, _ in connector.queries]
    assert queries == [
        f"sys_idIN{sid(1)},{sid(2)},{sid(3)}^stateIN6,7",
        f"sys_idIN{sid(4)},{sid(5)},{sid(6)}^stateIN6,7",
        f"sys_idIN{sid(7)}^stateIN6,7",
    ]
    assert all("state" in fields and "category" in fields for _, fields, _ in connector.queries)


def test_dataverse_query_is_an_or_chain_restricted_to_resolved_cases() -> None:
    ids = ["0b6a3d0e-1111-4c4c-9c9c-000000000001", "0b6a3d0e-1111-4c4c-9c9c-000000000002"]
    assert final_query("dataverse", "incident", ids) == (
        f"statecode eq 1 and (incidentid eq {ids[0]} or incidentid eq {ids[1]})"
    )


def test_subject_column_shared_by_category_and_subcategory_scores_the_parent() -> None:
    mapping = MAPPING.model_copy(
        update={"fields": {**MAPPING.fields, "category": "subject", "subcategory": "subject"}}
    )
    records = [
        shadow(1, "category", "network", 0.95),
        shadow(1, "subcategory", "vpn", 0.95),
        shadow(2, "category", "hardware", 0.95),
    ]
    connector = FakeConnector(
        {sid(1): {"subject": "vpn", "state": "7"}, sid(2): {"subject": "dns", "state": "7"}}
    )
    finals = read_finals(connector, mapping, latest_suggestions(records, mapping))
    fields = build_report(records, finals, mapping)["fields"]
    assert fields["category"]["agreement"] == 0.5  # vpn → network agrees; dns → network ≠ hw
    assert fields["subcategory"]["agreement"] == 1.0


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[str] = []
        self.sections: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "svg":
            self.svgs.append(found.get("aria-label") or "")
        if tag == "section":
            self.sections.append(found.get("id") or "")
        self._in_cell = tag in {"td", "th"}

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data.strip())


def test_html_has_a_curve_per_field_and_classes_as_the_admin_knows_them() -> None:
    page = _Page()
    page.feed(render_improvement_html(report(), title="Improvement <report>"))
    assert page.sections == ["field-category", "field-impact"]
    assert len(page.svgs) == 2 and "category" in page.svgs[0] and "impact" in page.svgs[1]
    assert {"account_access", "request", "network", "hardware"} <= set(page.cells)
    assert "50.0% (below target)" in page.cells  # network's precision, flagged
    assert "0.85 ← now" in page.cells


def test_html_curve_plots_the_sweep_points() -> None:
    text = render_improvement_html(report(), title="r")
    precision_line = text.split('class="precision"')[1].split('points="')[1].split('"')[0]
    assert len(precision_line.split()) == 11  # one point per sweep threshold


def _args(**kw: Any) -> argparse.Namespace:
    values = {
        "since": "2026-11-01",
        "until": None,
        "platform": "servicenow",
        "mapping": None,
        "shadow_file": None,
        "target": [],
        "json": True,
        "html": None,
        **kw,
    }
    return argparse.Namespace(**values)


def _sources(connector: FakeConnector) -> Any:
    from domain.settings import Settings

    return lambda platform: (connector, Settings())


def test_cli_json_window_and_html(tmp_path: Path) -> None:
    records, connector = scenario()
    store = MemoryShadowStore()
    store.record(records)
    out = io.StringIO()
    page = tmp_path / "r.html"
    code = run_report(
        _args(html=str(page), until="2026-11-02T00:00:05"),
        sources=_sources(connector),
        store=store,
        out=out,
    )
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["window"] == {"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:05Z"}
    # t5 (at T0+5) and later are outside the window; the re-run of t1 (T0-1000) is in it
    assert data["tickets"]["with_suggestions"] == 4
    assert data["fields"]["category"]["suggestions"] == 4
    assert page.read_text(encoding="utf-8").count("<svg") == 2


def test_cli_since_excludes_older_records_and_text_summary() -> None:
    records, connector = scenario()
    store = MemoryShadowStore()
    store.record(records)
    out = io.StringIO()
    fixed = datetime(2026, 12, 1, tzinfo=UTC)
    run_report(
        _args(json=False, target=["category=0.6"]),
        sources=_sources(connector),
        store=store,
        out=out,
        now=lambda: fixed,
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "7 tickets with suggestions, 6 closed and scored, 1 not closed yet (skipped)"
    assert lines[1].startswith("category: agreement 75.0%, coverage 50.0% and precision 66.7%")
    assert "BELOW TARGET" not in lines[1] and "classes below target: network" in lines[1]


def test_shadow_file_round_trip_and_bad_lines(tmp_path: Path) -> None:
    from dataclasses import asdict

    records, _ = scenario()
    good = tmp_path / "s.jsonl"
    good.write_text("\n".join(json.dumps(asdict(r)) for r in records) + "\n\n", encoding="utf-8")
    assert sorted(r.at for r in read_shadow_file(good).since(0)) == sorted(r.at for r in records)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"system": "servicenow", "secret": "do-not-echo"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"b\.jsonl:1: not a shadow record") as info:
        read_shadow_file(bad)
    assert "do-not-echo" not in str(info.value)


def test_dates_and_targets_are_checked() -> None:
    assert parse_when("2026-11-01", "--since") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--since: expected a date"):
        parse_when("last tuesday", "--since")
    _records, connector = scenario()
    store = MemoryShadowStore()
    with pytest.raises(ConfigError, match="--until must be after --since"):
        run_report(_args(until="2026-10-01"), sources=_sources(connector), store=store)
    with pytest.raises(ConfigError, match="--target"):
        run_report(_args(target=["category=high"]), sources=_sources(connector), store=store)
    with pytest.raises(ConfigError, match="needs a mapping with system: dataverse"):
        run_report(
            _args(platform="dynamics", mapping=str(DEFAULT_MAPPING_PATH)),
            sources=_sources(connector),
            store=store,
        )


def test_report_is_a_subcommand_of_python_m_triage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from triage.cli import build_parser, main

    args = build_parser().parse_args(["report", "--since", "2026-11-01", "--html", "r.html"])
    assert args.handler is run_report and args.platform == "servicenow" and args.json is False
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    # A bad shadow file fails with one clear line (exit 2) before any platform is contacted.
    assert main(["report", "--since", "2026-11-01", "--shadow-file", str(bad)]) == 2
    assert capsys.readouterr().err == "error: bad.jsonl:1: not a shadow record (JSONDecodeError)\n"
