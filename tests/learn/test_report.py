"""The evaluation summary's uncertainty and the report's verdict on the stored threshold."""

from __future__ import annotations

import pytest

from triage.learn.evaluate import FieldEvaluation, score_field, wilson_interval
from triage.learn.report import render_html


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
