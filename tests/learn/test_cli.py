"""The train/evaluate sub-commands and the HTML report, on synthetic CSVs and a fake connector."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connectors.base import SourceRecord
from domain.errors import ConfigError
from domain.settings import Settings
from enrichers.learned import TextModel
from tests.learn import make_tickets
from triage.learn.cli import add_evaluate_parser, add_train_parser, run_train

REQUIRED_KEYS = {
    "n_train",
    "n_test",
    "accuracy",
    "macro_f1",
    "coverage_at_precision_90",
    "coverage_at_precision_95",
    "threshold_at_precision_95",
    "dropped_rows",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    return parser


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Little label noise: with ~400 training rows the Wilson bound needs ~97 % observed precision.
    rows = make_tickets(500, seed=11, label_noise=0.02)
    rows[0]["category"] = rows[1]["category"] = "one_off"  # 2 rows: below --min-class
    path = tmp_path_factory.mktemp("csv") / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_evaluate_json_prints_exactly_one_object(data_csv: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    args = _parser().parse_args(
        [
            "evaluate",
            "--data",
            str(data_csv),
            "--text",
            "title,body",
            "--label",
            "category=category",
            "--label",
            "subcategory=subcategory",
            "--json",
            "--html",
            str(report),
        ]
    )
    out = io.StringIO()
    assert args.handler(args, out=out) == 0
    payload = json.loads(out.getvalue())  # exactly one JSON document, nothing else
    assert set(payload) == {"fields"}
    assert set(payload["fields"]) == {"category", "subcategory"}
    category = payload["fields"]["category"]
    assert set(category) >= REQUIRED_KEYS
    assert category["dropped_rows"] == 2
    assert category["n_train"] + category["n_test"] == 498
    assert category["n_test"] == pytest.approx(0.2 * 498, abs=1)
    assert 0.8 <= category["accuracy"] <= 1.0
    assert category["threshold_at_precision_95"] is not None
    assert 0.0 < category["coverage_at_precision_95"] <= 1.0
    text = report.read_text(encoding="utf-8")
    _check_report(text)
    assert "precision 0.95</text>" in text  # the target line on the precision–coverage plot


def _check_report(text: str) -> None:
    class Collector(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.seen: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.seen.add(tag)
            if tag not in {"meta", "line", "circle", "br", "polyline"}:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if tag in {"line", "circle", "polyline"}:
                return
            assert self.stack.pop() == tag, f"unbalanced </{tag}>"

    collector = Collector()
    collector.feed(text)
    assert collector.stack == []
    assert {"svg", "polyline", "table"} <= collector.seen
    for section in (
        "Precision–coverage curve",
        "Per-class precision and recall",
        "Confusion matrix",
        'id="field-category"',
        'id="field-subcategory"',
    ):
        assert section in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_train_from_csv_writes_a_loadable_model(data_csv: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "model"
    args = _parser().parse_args(
        [
            "train",
            "--data",
            str(data_csv),
            "--label",
            "category=category",
            "--label",
            "subcategory",
            "--out",
            str(out_dir),
            "--target-precision",
            "0.9",
        ]
    )
    out = io.StringIO()
    assert args.handler(args, out=out) == 0
    model = TextModel.load(out_dir)
    assert model.fields == ["category", "subcategory"]
    assert model.parent("subcategory") == "category"
    assert model.metadata["target_precision"] == 0.9
    assert model.metadata["source"] == "tickets.csv"
    assert "model written to" in out.getvalue()


def test_missing_column_is_a_clear_error(data_csv: Path, tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["train", "--data", str(data_csv), "--label", "impact=impact", "--out", str(tmp_path)]
    )
    with pytest.raises(ConfigError, match="no column"):
        args.handler(args)


class FakeConnector:
    """Yields canned ServiceNow incidents; records the query it was asked for."""

    system = "servicenow"

    def __init__(self, records: list[SourceRecord]) -> None:
        self.records = records
        self.calls: list[tuple[str, str, list[str]]] = []

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        self.calls.append((table, query, list(fields)))
        yield from self.records

    def own_user(self) -> str | None:
        return None  # ServiceNow: the mapping names the integration user

    def fallback_text(self, table: str, record_id: str) -> str | None:
        return None


def _incidents() -> list[SourceRecord]:
    raw_category = {
        "network": "network",
        "hardware": "hardware",
        "account_access": "request",
        "software": "software",
    }
    records = []
    for i, row in enumerate(make_tickets(300, seed=21)):
        records.append(
            SourceRecord(
                system="servicenow",
                table="incident",
                record_id=f"id{i}",
                fields={
                    "short_description": row["title"],
                    "description": row["body"],
                    "category": raw_category[row["category"]],
                    "impact": "3",
                    "sys_updated_by": "svc_ticket_enricher" if i % 10 == 0 else "agent.smith",
                },
            )
        )
    return records


def test_train_from_servicenow_uses_the_connector_and_canonical_labels(tmp_path: Path) -> None:
    connector = FakeConnector(_incidents())
    args = _parser().parse_args(
        [
            "train",
            "--from",
            "servicenow",
            "--label",
            "category",
            "--out",
            str(tmp_path / "m"),
            "--query",
            "stateIN6,7^closed_at>javascript:gs.daysAgoStart(90)",
        ]
    )
    assert (
        run_train(args, connector_factory=lambda: (connector, Settings()), out=io.StringIO()) == 0
    )
    table, query, fields = connector.calls[0]
    assert (table, query) == ("incident", "stateIN6,7^closed_at>javascript:gs.daysAgoStart(90)")
    assert {"short_description", "description", "category"} <= set(fields)
    model = TextModel.load(tmp_path / "m")
    # raw "request" became canonical "account_access"; machine-labelled records were skipped
    assert "account_access" in model.metadata["fields"]["category"]["labels"]
    assert "request" not in model.metadata["fields"]["category"]["labels"]
    assert model.metadata["n_train"] == 270
    assert model.metadata["source"] == "servicenow:incident"


def test_servicenow_labels_that_are_unset_everywhere_are_refused(tmp_path: Path) -> None:
    connector = FakeConnector(_incidents())  # impact is "3" (unset) on every record
    args = _parser().parse_args(
        ["train", "--from", "servicenow", "--label", "impact", "--out", str(tmp_path)]
    )
    with pytest.raises(ConfigError, match="field impact: needs at least 2 labels"):
        run_train(args, connector_factory=lambda: (connector, Settings()))
    assert connector.calls[0][1] == "stateIN6,7^ORDERBYsys_id"
