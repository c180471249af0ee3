"""`evaluate --llm`: a labelled CSV scored through a fake endpoint (`responses`), same report."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import responses

from enrichers.llm_classifier import LlmClassifier
from tests.enrichers.test_llm_classifier import MAPPING_YAML, completion, mapping
from triage.learn.cli import add_evaluate_parser, run_evaluate
from triage.learn.evaluate import score_field
from triage.learn.evaluate_cmd import add_llm_arguments, score_llm, stratified_split

URL = "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
ROWS = 100
TOPICS = [("VPN tunnel drops", "network", "1"), ("Laptop dock dead", "hardware", "2"),
          ("Excel licence expired", "software", "3"), ("Wi-Fi slow on floor 3", "network", "2")]  # fmt: skip
IMPACT = {"1": "high", "2": "medium", "3": "low"}


def write_csv(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "body", "category", "impact"])
        for i in range(ROWS):
            title, category, impact = TOPICS[i % len(TOPICS)]
            writer.writerow([f"T{i} {title}", f"Hello,\n\nticket {i}: {title}.", category, impact])


def fake_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
    """Right with p=0.98 on nine tickets in ten; wrong with p=0.55 on every tenth."""
    body = json.loads(request.body)
    user = body["messages"][1]["content"]
    row = int(user.split("Title: T", 1)[1].split(" ", 1)[0])
    _title, category, impact = TOPICS[row % len(TOPICS)]
    wrong = row % 10 == 0
    if wrong:
        category = "software" if category != "software" else "hardware"
    p = 0.55 if wrong else 0.98
    labels = {"category": category, "impact": IMPACT[impact]}
    logprobs = {category: math.log(p), IMPACT[impact]: math.log(0.99)}
    return 200, {}, json.dumps(completion(labels, logprobs))


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_LLM__ENDPOINT", "https://contoso.openai.azure.com")
    monkeypatch.setenv("ENRICH_LLM__DEPLOYMENT", "gpt-4o")
    monkeypatch.setenv("ENRICH_LLM__API_KEY", "sk-evaluate-secret-1")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate = add_evaluate_parser(parser.add_subparsers())
    if "--llm" not in evaluate._option_string_actions:  # until triage/learn/cli.py adds it
        add_llm_arguments(evaluate)
    return parser.parse_args(["evaluate", *argv])


def test_evaluate_llm_reports_like_the_learned_model_and_recommends_a_threshold(
    tmp_path: Path, llm_env: None
) -> None:
    data, mapping_file, thresholds = tmp_path / "t.csv", tmp_path / "m.yaml", tmp_path / "mc.yaml"
    write_csv(data)
    mapping_file.write_text(MAPPING_YAML, encoding="utf-8")
    out = io.StringIO()
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, URL, callback=fake_endpoint)
        args = parse(["--data", str(data), "--text", "title,body", "--label", "category",
                      "--label", "impact", "--mapping", str(mapping_file), "--llm", "--json",
                      "--llm-thresholds", str(thresholds), "--jobs", "2"])  # fmt: skip
        assert run_evaluate(args, out=out) == 0
        assert len(rsps.calls) == ROWS  # one request per ticket, both fields in it
    report = json.loads(out.getvalue())
    category = report["fields"]["category"]
    # The learned model's report keys, all of them, plus the LLM's own.
    shape = score_field(["a"], [("a", 1.0)], n_train=1, dropped_rows=0, threshold=0.5).summary()
    assert set(shape) <= set(category)
    assert {c["label"] for c in category["classes"]} == {"network", "hardware", "software"}
    assert category["n_train"] + category["n_test"] == ROWS
    # The threshold was picked on the first part: above every wrong answer's 0.55.
    assert category["threshold_at_precision_95"] == pytest.approx(0.98, abs=1e-3)
    assert category["precision_at_threshold"] == 1.0
    # Every right answer (p 0.98) is filled, every wrong one (p 0.55) is not.
    assert category["coverage_at_threshold"] == category["accuracy"] > 0.8
    assert category["recommended_min_confidence"] == pytest.approx(0.98, abs=1e-3)
    # impact labels were raw values ("1") in the CSV: compared as canonical labels.
    assert report["fields"]["impact"]["accuracy"] == 1.0
    assert report["run"]["parameters"]["llm"] is True
    assert report["run"]["models"]["category"]["kind"] == "llm"
    assert len(report["run"]["models"]["category"]["sha256"]) == 64
    assert "sk-evaluate-secret-1" not in out.getvalue()
    text = thresholds.read_text(encoding="utf-8")
    assert "min_confidence:\n  category: 0.98" in text


def test_evaluate_llm_prints_the_threshold_and_needs_the_settings(
    tmp_path: Path, llm_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "t.csv"
    write_csv(data)
    (tmp_path / "m.yaml").write_text(MAPPING_YAML, encoding="utf-8")
    argv = ["--data", str(data), "--label", "category", "--mapping", str(tmp_path / "m.yaml"),
            "--llm"]  # fmt: skip
    out = io.StringIO()
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, URL, callback=fake_endpoint)
        run_evaluate(parse(argv), out=out)
    assert "threshold 0.98" in out.getvalue()
    assert "recommended min_confidence for the mapping" in out.getvalue()
    assert "  category: 0.98" in out.getvalue()
    monkeypatch.delenv("ENRICH_LLM__ENDPOINT")
    with pytest.raises(Exception, match="ENRICH_LLM__ENDPOINT"):
        run_evaluate(parse(argv), out=io.StringIO())


def test_abstentions_count_as_unfilled_and_wrong() -> None:
    def endpoint(request: Any) -> dict[str, Any]:
        return completion({"category": "printers"}, {"printers": -0.01})

    clf = LlmClassifier(mapping(), endpoint, fields=["category"])
    texts = [f"T{i} printer\nbody" for i in range(10)]
    results = score_llm(clf, texts, {"category": ["hardware"] * 10}, mapping=mapping())
    summary = results["category"].summary()
    assert summary["accuracy"] == 0.0 and summary["filled_at_threshold"] == 0
    assert summary["threshold_at_precision_95"] is None
    assert summary["abstained"] == summary["n_test"]


def test_stratified_split_keeps_every_label_in_the_first_part() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    first, held = stratified_split(labels, 0.2, seed=0)
    assert sorted(first + held) == list(range(len(labels)))
    assert [labels[i] for i in held].count("a") == 2 and [labels[i] for i in held].count("b") == 1
    assert 15 in first  # a label seen once is never held out
    assert stratified_split(labels, 0.2, seed=0) == (first, held)


def test_the_real_command_line_offers_llm_evaluation(capsys: pytest.CaptureFixture[str]) -> None:
    from triage.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "--llm" in capsys.readouterr().out
