"""The train/evaluate sub-commands and the HTML report, on synthetic CSVs and a fake connector."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import responses

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
    assert set(payload) == {"run", "fields"}
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
    assert '<section id="run">' in text


CODES = {"account_access": "1", "network": "2", "hardware": "10", "software": "Software"}
MAPPING_YAML = """\
version: 1
system: servicenow
fields: {title: short_description, description: description, category: category}
values:
  category: {"1": request, "2": network, "10": hardware}
"""


@pytest.fixture(scope="module")
def coded_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Categories as numeric codes (and one word), the way data sets and old desks have them."""
    rows = make_tickets(400, seed=12, label_noise=0.0, vague=0.0)
    path = tmp_path_factory.mktemp("coded") / "coded tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["title", "body", "category"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {"title": row["title"], "body": row["body"], "category": CODES[row["category"]]}
            )
    return path


def _evaluate(argv: list[str]) -> tuple[dict[str, Any], list[datetime]]:
    times = [
        datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 30, 12, 1, 7, tzinfo=UTC),
    ]
    calls: list[datetime] = []

    def clock() -> datetime:
        calls.append(times[len(calls)])
        return calls[-1]

    args = _parser().parse_args(["evaluate", *argv])
    out = io.StringIO()
    assert args.handler(args, out=out, now=clock) == 0
    return json.loads(out.getvalue()), calls


def test_evaluate_json_records_its_run_and_names_classes_naturally(
    coded_csv: Path, tmp_path: Path
) -> None:
    mapping = tmp_path / "desk.yaml"
    mapping.write_text(MAPPING_YAML, encoding="utf-8")
    payload, calls = _evaluate(
        ["--data", str(coded_csv), "--label", "category=category", "--mapping", str(mapping),
         "--seed", "3", "--folds", "3", "--jobs", "1", "--target-precision", "0.9", "--json"]
    )  # fmt: skip
    run = payload["run"]
    assert len(calls) == 2  # started and finished, from the injected clock
    assert run["started_at"] == "2026-11-30T12:00:05Z"
    assert run["finished_at"] == "2026-11-30T12:01:07Z"
    assert run["data"] == {
        "file": "coded tickets.csv",
        "sha256": hashlib.sha256(coded_csv.read_bytes()).hexdigest(),
        "rows": 400,
    }
    assert run["text_columns"] == ["title", "body"]
    assert run["label_columns"] == {"category": "category"}
    params = run["parameters"]
    assert (params["seed"], params["folds"], params["jobs"]) == (3, 3, 1)
    assert params["target_precision"] == 0.9 and params["test_size"] == 0.2
    assert run["mapping"] == {
        "file": "desk.yaml",
        "sha256": hashlib.sha256(mapping.read_bytes()).hexdigest(),
        "system": "servicenow",
        "table": "incident",
    }
    model = run["models"]["category"]
    assert model["kind"] == "trained" and re.fullmatch(r"[0-9a-f]{64}", model["sha256"])
    assert model["fields"] == ["category"]
    classes = payload["fields"]["category"]["classes"]
    assert [c["label"] for c in classes] == ["1", "2", "10", "Software"]  # not "1", "10", "2"
    assert [c["raw"] for c in classes] == ["request", "network", "hardware", None]
    assert sum(c["support"] for c in classes) == payload["fields"]["category"]["n_test"]


def test_evaluate_html_shows_the_run_and_the_mappings_names(
    coded_csv: Path, tmp_path: Path
) -> None:
    mapping = tmp_path / "desk.yaml"
    mapping.write_text(MAPPING_YAML, encoding="utf-8")
    report = tmp_path / "r.html"
    _evaluate(
        ["--data", str(coded_csv), "--label", "category=category", "--mapping", str(mapping),
         "--seed", "4", "--html", str(report), "--json"]
    )  # fmt: skip
    text = report.read_text(encoding="utf-8")
    cells = _cells(text)
    run = dict(zip(cells["run"][0::2], cells["run"][1::2], strict=True))
    assert run["date (UTC)"] == "2026-11-30T12:00:05Z – 2026-11-30T12:01:07Z"
    assert run["data file"] == "coded tickets.csv (400 rows)"
    assert run["data SHA-256"] == hashlib.sha256(coded_csv.read_bytes()).hexdigest()
    assert "seed = 4" in run["parameters"]
    assert run["mapping"].startswith("desk.yaml (servicenow incident), SHA-256 ")
    assert run["model of category"].startswith("trained on the training split")
    per_class = cells["per-class"]
    assert per_class[:3] == ["label", "name", "raw value"]
    labels = [per_class[i] for i in range(7, len(per_class), 7)]  # 7 columns a row
    assert labels == ["1", "2", "10", "Software"]
    raws = [per_class[i] for i in range(9, len(per_class), 7)]
    assert raws == ["request", "network", "hardware", "not in the mapping"]


def _cells(text: str) -> dict[str, list[str]]:
    """Text of every th/td, per table class (section id for the run table)."""

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.table = ""
            self.cell: list[str] | None = None
            self.out: dict[str, list[str]] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.table = dict(attrs).get("class") or ""
            elif tag in {"th", "td"}:
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag in {"th", "td"} and self.cell is not None:
                self.out.setdefault(self.table, []).append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    parser = Cells()
    parser.feed(text)
    return parser.out


def test_evaluate_a_stored_model_records_its_hash(coded_csv: Path, tmp_path: Path) -> None:
    train = _parser().parse_args(
        ["train", "--data", str(coded_csv), "--label", "category", "--out", str(tmp_path / "m"),
         "--jobs", "1"]
    )  # fmt: skip
    assert train.handler(train, out=io.StringIO()) == 0
    stored = TextModel.load(tmp_path / "m")
    payload, _ = _evaluate(
        ["--data", str(coded_csv), "--label", "category", "--model", str(tmp_path / "m"), "--json"]
    )
    model = payload["run"]["models"]["category"]
    assert model["kind"] == "stored" and model["location"] == "m"
    assert model["created_at"] == stored.metadata["created_at"]
    assert model["arrays_sha256"] == stored.metadata["arrays"]["sha256"]
    assert set(payload["run"]["parameters"]) == {"target_precision", "parents"}
    category = payload["fields"]["category"]
    assert category["n_test"] == 400  # every row scored, nothing trained
    assert category["n_train"] == stored.metadata["fields"]["category"]["n_train"]
    assert category["accuracy"] > 0.9  # it saw these rows: scored, not a fair test


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


# --- train --from dynamics: the real DataverseConnector against `responses` -----------------

ORG = "https://acme.crm.dynamics.com"
API = f"{ORG}/api/data/v9.2"
OWN = "0a0a0a0a-0000-4000-8000-0000000000aa"  # our application user (WhoAmI)
AGENT = "b1b1b1b1-0000-4000-8000-0000000000bb"
SUBJECTS = {  # canonical category -> subject GUID; account_access is left unmapped
    "network": "5e000000-0000-4000-8000-000000000001",
    "hardware": "5e000000-0000-4000-8000-000000000002",
    "software": "5e000000-0000-4000-8000-000000000003",
    "account_access": "5e000000-0000-4000-8000-000000000004",
}
EMAIL_HTML = "<html><body><p>VPN tunnel anslutning virker ikke</p></body></html>"


class StubTokens:
    def token(self) -> str:
        return "tok-1"

    def invalidate(self) -> None:
        pass


def dynamics_mapping_file(tmp_path: Path) -> Path:
    """The default Dynamics mapping with category on the Subject tree (three GUIDs mapped)."""
    import yaml

    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH

    data = yaml.safe_load(DYNAMICS_DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))
    data["fields"]["category"] = "_subjectid_value"
    data["values"]["category"] = {k: v for k, v in SUBJECTS.items() if k != "account_access"}
    path = tmp_path / "dynamics.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def dv_connector(page_size: int = 40) -> tuple[Any, Settings]:
    from connectors.dataverse import DataverseConnector
    from domain.settings import DataverseSettings, HttpSettings

    dv = DataverseSettings(
        org_url=ORG,
        tenant_id="tenant-1",
        client_id="client-1",
        client_secret="s3cret-value",
        page_size=page_size,
    )
    settings = Settings(dataverse=dv)
    connector = DataverseConnector(dv, HttpSettings(), field_types={}, token_provider=StubTokens())
    return connector, settings


def case_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i, row in enumerate(make_tickets(n, seed=5, vague=0.0, label_noise=0.0)):
        ours = i % 10 == 0  # last modified by our application user: machine-labelled
        rows.append(
            {
                "@odata.etag": f'W/"{i}"',
                "incidentid": f"ca5e0000-0000-4000-8000-{i:012d}",
                "title": row["title"],
                "description": "" if i == 1 else row["body"],
                "_subjectid_value": SUBJECTS["hardware" if ours else row["category"]],
                "prioritycode": (1, 3, 2)[i % 3],
                "prioritycode@OData.Community.Display.V1.FormattedValue": "High",
                "_modifiedby_value": OWN if ours else AGENT,
            }
        )
    return rows


def serve_cases(mock: Any, rows: list[dict[str, Any]], page_size: int) -> list[str]:
    """WhoAmI, the pages of ``rows`` chained by opaque next links, one first e-mail."""
    mock.get(f"{API}/WhoAmI", json={"UserId": OWN.upper(), "BusinessUnitId": AGENT})
    pages = [rows[i : i + page_size] for i in range(0, len(rows), page_size)]
    links = [f"{API}/incidents?$skiptoken=page{n}" for n in range(2, len(pages) + 1)]
    for n, page in enumerate(pages):
        body: dict[str, Any] = {"value": page}
        if n < len(links):
            body["@odata.nextLink"] = links[n]
        where = rf"{re.escape(API)}/incidents\?\$select=.*" if n == 0 else re.escape(links[n - 1])
        mock.get(re.compile(where + "$"), json=body)
    mock.get(
        re.compile(rf"{re.escape(API)}/emails\?.*"), json={"value": [{"description": EMAIL_HTML}]}
    )
    return links


def test_train_from_dynamics_pulls_resolved_human_labelled_cases(tmp_path: Path) -> None:
    connector, settings = dv_connector(page_size=40)
    rows = case_rows(100)
    args = _parser().parse_args(
        [
            "train", "--from", "dynamics", "--mapping", str(dynamics_mapping_file(tmp_path)),
            "--filter", "createdon ge 2026-01-01T00:00:00Z or prioritycode eq 1",
            "--label", "category=_subjectid_value", "--out", str(tmp_path / "m"),
        ]
    )  # fmt: skip
    out = io.StringIO()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        links = serve_cases(mock, rows, 40)
        assert run_train(args, connector_factory=lambda: (connector, settings), out=out) == 0
        calls = [c.request for c in mock.calls]
    pages = [r for r in calls if "/incidents?" in str(r.url)]
    first = unquote(str(pages[0].url))
    # resolved cases only, AND-ed with the admin's filter (parenthesised: its `or` stays inside)
    assert (
        "$filter=statecode eq 1 and (createdon ge 2026-01-01T00:00:00Z or prioritycode eq 1)&"
        in first
    )
    select = first.split("$select=")[1].split("&")[0].split(",")
    assert set(select) == {
        "incidentid", "title", "description", "_modifiedby_value", "_subjectid_value",
    }  # fmt: skip
    assert [str(r.url) for r in pages[1:]] == links  # next links followed unchanged
    assert {r.headers["Prefer"] for r in pages} == {"odata.maxpagesize=40"}
    assert sum("/WhoAmI" in str(r.url) for r in calls) == 1
    [email] = [unquote(str(r.url)) for r in calls if "/emails?" in str(r.url)]
    assert f"_regardingobjectid_value eq {rows[1]['incidentid']}" in email

    model = TextModel.load(tmp_path / "m")
    info = model.metadata["fields"]["category"]
    assert model.metadata["source"] == "dataverse:incident"
    assert info["n_train"] == 90  # the 10 cases we modified last are not training data
    # mapped subject GUIDs became canonical labels; the unmapped one is kept raw
    assert set(info["labels"]) == {"network", "hardware", "software", SUBJECTS["account_access"]}
    assert (
        "fetched 90 labelled records from dataverse:incident (10 skipped as machine-labelled, "
        "1 read from their first e-mail)" in out.getvalue()
    )


def test_dynamics_labels_are_raw_ints_mapped_to_canonical_and_unset_dropped(
    tmp_path: Path,
) -> None:
    from domain.mapping import load_mapping
    from triage.learn.sources import labelled_from_connector

    connector, _ = dv_connector(page_size=5000)
    rows = case_rows(12)
    mapping = load_mapping(dynamics_mapping_file(tmp_path))
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve_cases(mock, rows, 5000)
        data = labelled_from_connector(
            connector, mapping, "statecode eq 1", {"priority": "prioritycode"}
        )
    kept = [r for r in rows if r["_modifiedby_value"] == AGENT]
    # option-set ints read raw: 1 -> high, 3 -> planning (the mapping's reverse), 2 (Normal,
    # the form's default) counts as unset
    expected = {1: "high", 3: "planning", 2: None}
    assert data.labels["priority"] == [expected[r["prioritycode"]] for r in kept]
    assert data.texts[0] == f"{rows[1]['title']}\n{EMAIL_HTML}"  # what the pipeline would read
    assert (data.skipped, data.from_fallback) == (2, 1)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "statecode eq 1"),
        ("prioritycode eq 1", "statecode eq 1 and (prioritycode eq 1)"),
        ("  title eq 'it''s (odd'  ", "statecode eq 1 and (title eq 'it''s (odd')"),
    ],
)
def test_dataverse_filter_is_anded_with_resolved_cases(given: str | None, expected: str) -> None:
    from triage.learn.sources import dataverse_filter

    assert dataverse_filter(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("   ", "empty"),
        ("a eq 1) or (statecode eq 0", "unbalanced"),
        ("title eq 'open", "unbalanced"),
        ("title eq 1\nor x", "control"),
        ("x" * 2001, "longer than"),
    ],
)
def test_a_bad_filter_is_refused_without_echoing_it(given: str, message: str) -> None:
    from triage.learn.sources import dataverse_filter

    with pytest.raises(ConfigError, match=message) as info:
        dataverse_filter(given)
    assert not given.strip() or given.strip()[:12] not in str(info.value)


def _refusing_factory() -> tuple[Any, Settings]:
    raise AssertionError("no connector may be built for a refused command line")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "dynamics", "--query", "stateIN6,7"], "with --from dynamics use --filter"),
        (["--from", "servicenow", "--filter", "statecode eq 1"], "use --query"),
    ],
)
def test_platform_query_options_do_not_mix(argv: list[str], message: str, tmp_path: Path) -> None:
    args = _parser().parse_args(["train", *argv, "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match=message):
        run_train(args, connector_factory=_refusing_factory)


def test_dynamics_needs_a_dataverse_mapping_and_named_labels(tmp_path: Path) -> None:
    from domain.mapping import DEFAULT_MAPPING_PATH

    connector, settings = dv_connector()
    wrong = _parser().parse_args(
        ["train", "--from", "dynamics", "--mapping", str(DEFAULT_MAPPING_PATH), "--out", "x"]
    )
    with pytest.raises(ConfigError, match="needs a mapping with system: dataverse"):
        run_train(wrong, connector_factory=lambda: (connector, settings))
    # The default Dynamics mapping maps no category/impact/urgency column: say how to name one.
    bare = _parser().parse_args(["train", "--from", "dynamics", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--label FIELD=COLUMN"):
        run_train(bare, connector_factory=lambda: (connector, settings))
