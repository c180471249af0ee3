"""A model whose fields or labels the mapping cannot write is refused where it is loaded."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from domain.errors import ConfigError
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping
from enrichers.learned import LearnedEnricher, TextModel
from tests.learn import VOCAB, make_tickets, texts_of
from triage.cli import main
from triage.learn.train import train_model
from triage.model_fit import MAX_NAMED_LABELS, check_model_fits, misfits
from triage.runtime import build_service

SERVICENOW = load_mapping()
DYNAMICS = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
ROWS = make_tickets(240, seed=5, vague=0.0, label_noise=0.0)
SUBS = sorted(VOCAB)


def _train(labels: dict[str, list[str | None]]) -> TextModel:
    return train_model(texts_of(ROWS), labels)


@pytest.fixture(scope="module")
def canonical() -> TextModel:
    """Category and impact with the mappings' canonical labels."""
    impact = [("high", "medium", "low")[i % 3] for i in range(len(ROWS))]
    return _train({"category": [r["category"] for r in ROWS], "impact": list(impact)})


@pytest.fixture(scope="module")
def endava() -> TextModel:
    """Category as a data set's numeric codes: 16 of them, none in any mapping."""
    codes = [str(2 * SUBS.index(r["subcategory"]) + i % 2 + 1) for i, r in enumerate(ROWS)]
    return _train({"category": list(codes)})


@pytest.fixture(scope="module")
def subcategories() -> TextModel:
    """Our synthetic subcategories: wifi, printer, laptop and office are not in the default."""
    return _train({"subcategory": [r["subcategory"] for r in ROWS]})


def _with(mapping: FieldMapping, **changes: Any) -> FieldMapping:
    return FieldMapping.model_validate({**mapping.model_dump(), **changes})


def test_canonical_labels_fit_the_servicenow_mapping(canonical: TextModel) -> None:
    assert misfits(canonical, SERVICENOW) == {}
    check_model_fits(canonical, SERVICENOW)  # no error


def test_missing_labels_are_named_with_the_field(subcategories: TextModel) -> None:
    assert misfits(subcategories, SERVICENOW) == {
        "subcategory": ["laptop", "office", "printer", "wifi"]
    }
    with pytest.raises(ConfigError) as info:
        check_model_fits(subcategories, SERVICENOW)
    message = str(info.value)
    assert "servicenow mapping" in message
    assert "field subcategory: 4 of 8 labels not in values.subcategory" in message
    assert "'laptop', 'office', 'printer', 'wifi'" in message
    assert "'vpn'" not in message  # mapped labels are not listed
    assert "more" not in message


def test_numeric_codes_name_ten_labels_and_count_the_rest(endava: TextModel) -> None:
    with pytest.raises(ConfigError) as info:
        check_model_fits(endava, SERVICENOW)
    message = str(info.value)
    assert "field category: 16 of 16 labels not in values.category" in message
    named = message.split("values.category: ")[1].split(" and ")[0]
    assert named.count("'") == 2 * MAX_NAMED_LABELS
    assert "'1', '10', '11'" in named  # the model's own label order
    assert f"and {16 - MAX_NAMED_LABELS} more" in message


def test_a_field_the_mapping_does_not_know_is_refused(canonical: TextModel) -> None:
    # The default Dynamics mapping maps impact (priority is derived from it) but no category.
    assert misfits(canonical, DYNAMICS) == {"category": None}
    with pytest.raises(ConfigError, match=r"dataverse mapping.*field category: not mapped"):
        check_model_fits(canonical, DYNAMICS)
    mapped = _with(DYNAMICS, values={**DYNAMICS.values, "category": {"network": "g1"}})
    # Once mapped, the labels themselves are checked.
    assert misfits(canonical, mapped) == {"category": ["account_access", "hardware", "software"]}


def test_a_field_without_a_values_table_passes_when_mapped() -> None:
    model = _train({"assignment_group": [r["category"].upper() for r in ROWS]})
    assert misfits(model, SERVICENOW) == {"assignment_group": None}
    free = _with(SERVICENOW, fields={**SERVICENOW.fields, "assignment_group": "assignment_group"})
    check_model_fits(model, free)  # written as they are: nothing to check


def test_long_labels_are_shortened_in_the_message() -> None:
    long_label = "x" * 500
    labels: list[str | None] = [long_label if r["category"] == "network" else "y" for r in ROWS]
    with pytest.raises(ConfigError) as info:
        check_model_fits(_train({"category": labels}), SERVICENOW)
    assert long_label not in str(info.value)
    assert "x" * 39 + "…" in str(info.value)


# -- where a model meets a mapping ----------------------------------------------------------

ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "ENRICH_SERVICENOW__INSTANCE_URL": "https://dev1.service-now.invalid",
    "ENRICH_SERVICENOW__AUTH": "basic",
    "ENRICH_SERVICENOW__USERNAME": "svc",
    "ENRICH_SERVICENOW__PASSWORD": "pw",
    "ENRICH_WEBHOOK__SECRET": "s",
}
DATAVERSE = {
    "ENRICH_DATAVERSE__ORG_URL": "https://contoso.crm4.dynamics.com",
    "ENRICH_DATAVERSE__TENANT_ID": "contoso.onmicrosoft.com",
    "ENRICH_DATAVERSE__CLIENT_ID": "11111111-2222-4333-8444-555555555555",
    "ENRICH_DATAVERSE__CLIENT_SECRET": "dv-secret-0123456789",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return dict(ENV)


def test_the_worker_refuses_a_misfitting_servicenow_model(
    env: dict[str, str], endava: TextModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENRICH_MODEL_PATH", str(endava.save(tmp_path / "endava")))
    with pytest.raises(ConfigError, match=r"^ENRICH_MODEL_PATH: .*'1', '10'.* and 6 more"):
        build_service(env)


def test_the_worker_loads_a_fitting_model_into_the_chain(
    env: dict[str, str], canonical: TextModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENRICH_MODEL_PATH", str(canonical.save(tmp_path / "ok")))
    service = build_service(env)
    learned = [e for e in service.pipeline.enrichers if isinstance(e, LearnedEnricher)]
    assert len(learned) == 1 and learned[0].model.fields == ["category", "impact"]


def test_the_worker_checks_the_dynamics_model_against_the_dynamics_mapping(
    env: dict[str, str], canonical: TextModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in DATAVERSE.items():
        monkeypatch.setenv(key, value)
    path = str(canonical.save(tmp_path / "ok"))
    monkeypatch.setenv("ENRICH_MODEL_PATH", path)  # fits ServiceNow's mapping
    monkeypatch.setenv("ENRICH_DATAVERSE_MODEL_PATH", path)  # Dynamics maps no category
    with pytest.raises(ConfigError, match=r"^ENRICH_DATAVERSE_MODEL_PATH: .*field category"):
        build_service(env)


def _tickets(tmp_path: Path) -> Path:
    path = tmp_path / "t.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["short_description", "description"])
        writer.writerow(["", "hej vpn tunnel forbindelse remote tak"])
    return path


def test_enrich_model_refuses_a_misfit_with_one_line(
    endava: TextModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = endava.save(tmp_path / "endava")
    assert main(["enrich", str(_tickets(tmp_path)), "--model", str(model_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table with "4? 0.93" rows
    assert captured.err.startswith("error: the model does not fit the servicenow mapping")
    assert "field category: 16 of 16 labels" in captured.err


def test_enrich_model_runs_with_a_fitting_model(
    canonical: TextModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = canonical.save(tmp_path / "ok")
    argv = ["enrich", str(_tickets(tmp_path)), "--model", str(model_dir), "--format", "jsonl"]
    assert main(argv) == 0
    assert '"row": 1' in capsys.readouterr().out
