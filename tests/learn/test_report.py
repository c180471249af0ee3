"""The evaluation summary's uncertainty and the report's verdict on the stored threshold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain.mapping import load_mapping
from enrichers.learned import TextModel
from tests.learn import make_tickets, texts_of
from triage.learn.evaluate import (
    FieldEvaluation,
    class_report,
    confusion,
    natural_sorted,
    score_field,
    wilson_interval,
)
from triage.learn.report import render_html
from triage.learn.run_record import (
    LabelName,
    label_names,
    location_name,
    model_fingerprint,
    model_version,
    run_block,
    run_section,
)
from triage.learn.train import train_model


def _field(n_filled: int, n_right: int, n_unfilled: int = 50) -> FieldEvaluation:
    """``n_filled`` tickets above the 0.9 threshold (``n_right`` of them right), the rest below."""
    truth = ["a"] * (n_filled + n_unfilled)
    preds = [("a" if i < n_right else "b", 0.95) for i in range(n_filled)]
    preds += [("a", 0.5)] * n_unfilled
    return score_field(truth, preds, n_train=1000, dropped_rows=0, threshold=0.9)


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-4)
    assert high == pytest.approx(0.9785, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low < 1.0


def test_summary_reports_the_filled_count_and_precision_interval() -> None:
    summary = _field(100, 95).summary()
    assert summary["filled_at_threshold"] == 100
    assert summary["precision_at_threshold"] == pytest.approx(0.95)
    low, high = summary["precision_at_threshold_interval_95"]
    assert low == pytest.approx(0.8882, abs=1e-4)
    assert high == pytest.approx(0.9785, abs=1e-4)
    nothing = score_field(["a"], [("a", 0.1)], n_train=5, dropped_rows=0, threshold=None)
    assert nothing.summary()["precision_at_threshold_interval_95"] is None
    assert nothing.summary()["filled_at_threshold"] == 0


@pytest.mark.parametrize(
    ("filled", "right", "css", "phrase"),
    [
        (200, 196, "ok", "The target 0.95 is met"),
        (100, 93, "warn", "within what this many test tickets can tell apart"),
        (400, 340, "bad", "Clearly below 0.95"),
    ],
)
def test_report_verdict_weighs_the_test_set_size(
    filled: int, right: int, css: str, phrase: str
) -> None:
    text = render_html({"category": _field(filled, right)}, title="t", target=0.95)
    verdict = text.split('<section id="field-category">')[1].split("<h3>")[0]
    assert f'class="{css}"' in verdict
    assert phrase in verdict
    assert f"on {filled} filled test tickets" in verdict


def test_report_says_when_a_field_is_never_filled() -> None:
    never = score_field(
        ["a", "b"], [("a", 0.2), ("a", 0.3)], n_train=10, dropped_rows=0, threshold=None
    )
    text = render_html({"urgency": never}, title="t")
    assert "never filled" in text


# -- natural order, the mapping's names, the run record -------------------------------------


def test_classes_sort_naturally_and_case_insensitively() -> None:
    labels = ["10", "b", "2", "P10", "A", "1", "p2"]
    assert natural_sorted(labels) == ["1", "2", "10", "A", "b", "p2", "P10"]
    truth = ["10", "2", "1", "b", "A"]
    assert list(class_report(truth, truth)) == ["1", "2", "10", "A", "b"]
    order, matrix = confusion(truth, ["2", "2", "1", "b", "A"])
    assert order == ["1", "2", "10", "A", "b"]
    assert matrix[2] == [0, 1, 0, 0, 0]  # the true "10" row: predicted "2"


def test_report_tables_use_the_mappings_names_in_natural_order() -> None:
    ev = score_field(
        ["10", "2", "10", "9"],
        [("10", 0.99), ("2", 0.99), ("9", 0.4), ("9", 0.99)],
        n_train=40,
        dropped_rows=0,
        threshold=0.9,
    )
    names = {"category": {"2": LabelName("network"), "10": LabelName("hw", "Hardware & <kit>")}}
    text = render_html({"category": ev}, title="t", names=names)
    confusion_table = text.split('class="confusion"')[1].split("</table>")[0]
    heads = re.findall(r"<th(?: title=\"[^\"]*\")?>([^<]*)</th>", confusion_table.split("</tr>")[0])
    assert heads == ["2", "9", "Hardware &amp; &lt;kit&gt;"]  # display: human label, else own
    assert 'title="10 = raw hw"' in confusion_table
    per_class = text.split('class="per-class"')[1].split("</table>")[0]
    rows = re.findall(r'<tr><td class="l">([^<]*)</td><td class="l">([^<]*)</td>'
                      r'<td class="l">([^<]*)</td>', per_class)  # fmt: skip
    assert rows == [
        ("2", "–", "network"),
        ("9", "–", "not in the mapping"),
        ("10", "Hardware &amp; &lt;kit&gt;", "hw"),
    ]


def test_label_names_come_from_the_mappings_values() -> None:
    names = label_names(load_mapping())
    assert names["category"]["account_access"] == LabelName("request")
    assert names["subcategory"]["ip_address"].raw == "ip address"
    assert names["category"]["network"].display("network") == "network"


def test_model_hash_is_the_same_in_memory_and_stored(tmp_path: Path) -> None:
    rows = make_tickets(160, seed=9, vague=0.0)
    model = train_model(texts_of(rows), {"category": [r["category"] for r in rows]})
    before = model_version(model)
    stored = model_version(TextModel.load(model.save(tmp_path / "m")), location=str(tmp_path / "m"))
    assert before["kind"] == "trained" and stored["kind"] == "stored"
    assert before["sha256"] == stored["sha256"] == model_fingerprint(model)
    assert before["arrays_sha256"] is None and stored["arrays_sha256"]
    other = train_model(texts_of(rows[:150]), {"category": [r["category"] for r in rows[:150]]})
    assert model_fingerprint(other) != before["sha256"]


def test_a_model_url_is_recorded_without_its_query() -> None:
    url = "https://acct.blob.core.windows.net/models/desk-a/?sv=2025&sig=SECRETSIG"
    assert location_name(url) == "desk-a"
    assert location_name("/srv/models/desk-b") == "desk-b"


def test_run_section_escapes_what_it_shows(tmp_path: Path) -> None:
    data = tmp_path / "<b>x.csv"
    data.write_text("title\nhej\n", encoding="utf-8")
    run = run_block(
        data_path=data,
        rows=1,
        text_columns=["title"],
        label_columns={"category": "cat<egory>"},
        parameters={"seed": 0, "parents": {}},
        results={},
    )
    section = run_section(run)
    assert "<b>" not in section and "&lt;b&gt;x.csv (1 rows)" in section
    assert "category ← cat&lt;egory&gt;" in section
    assert "none: classes are shown by their canonical labels" in section
    assert run["started_at"].endswith("Z") and run["mapping"] is None


def test_label_names_come_from_the_taxonomy_a_mapping_binds():
    from domain.mapping import load_mapping
    from domain.taxonomy import TAXONOMY_DIR
    from triage.learn.run_record import label_names

    mapping = load_mapping(TAXONOMY_DIR / "examples" / "customer_service.servicenow.yaml")
    names = label_names(mapping)
    category = next(iter(mapping.values["category"]))
    assert names["category"][category].human  # a human label, as the admin knows the class
    assert names["category"][category].human == mapping.human_label("category", category)
