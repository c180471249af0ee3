"""Learned model: training, the saved format, refusal of bad files, thresholds, the enricher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from domain.errors import ConfigError
from domain.models import Suggestion, Ticket
from enrichers.base import Enricher
from enrichers.features import FeatureConfig, Vectoriser, analyse
from enrichers.learned import ABSTAIN, LearnedEnricher, TextModel
from tests.learn import VOCAB, make_tickets, texts_of
from triage.learn.evaluate import pick_threshold, precision_coverage_curve
from triage.learn.train import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained() -> TextModel:
    rows = make_tickets(700, seed=1)
    return train_model(
        texts_of(rows),
        {
            "category": [r["category"] for r in rows],
            "subcategory": [r["subcategory"] for r in rows],
        },
        parents={"subcategory": "category"},
        config=TrainConfig(features=FeatureConfig(max_features=20_000)),
        source="synthetic",
    )


@pytest.fixture(scope="module")
def saved(trained: TextModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.save(tmp_path_factory.mktemp("model"))


def test_round_trip_gives_identical_predictions(trained: TextModel, saved: Path) -> None:
    loaded = TextModel.load(saved)
    texts = texts_of(make_tickets(50, seed=9))
    assert loaded.fields == ["category", "subcategory"]
    assert loaded.predict(texts) == trained.predict(texts)
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format"] == "ticket-enrichment/text-model"
    assert meta["format_version"] == 1
    assert meta["fields"]["category"]["labels"] == sorted({c for c, _ in VOCAB.values()})
    assert meta["fields"]["category"]["threshold"] == loaded.threshold("category")
    assert len(meta["arrays"]["sha256"]) == 64


def test_accent_folding_meets_spelling_variants() -> None:
    config = FeatureConfig(title_features=False)
    assert analyse("Netværk NETVÆRK", config) == analyse("netvaerk netvaerk", config)
    assert analyse("Lösenord", config) == analyse("losenord", config)


def test_vectoriser_is_normalised_per_block() -> None:
    vec = Vectoriser.fit(["vpn virker ikke", "printer virker ikke"], FeatureConfig(min_df=1))
    rows = vec.transform(["vpn virker ikke\nvpn"])
    blocks = vec.blocks[rows.indices]
    for block in (0, 1, 2):
        norm = float(np.sqrt((rows.data[blocks == block] ** 2).sum()))
        assert norm == pytest.approx(1.0, abs=1e-5)


def test_flipped_byte_in_arrays_is_refused(saved: Path, tmp_path: Path) -> None:
    copy = _copy(saved, tmp_path)
    data = bytearray((copy / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match the SHA-256"):
        TextModel.load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="someone-elses-model"), "not a ticket-enrichment text model"),
        (lambda m: m.update(format_version=2), "format version 2 is not supported"),
        (lambda m: m.pop("fields"), "missing key 'fields'"),
        (lambda m: m["fields"]["category"]["labels"].pop(), "inconsistent model"),
        (lambda m: m["featuriser"].update(surprise=1), "inconsistent model"),
    ],
)
def test_foreign_or_inconsistent_metadata_is_refused(saved, tmp_path, change, message) -> None:
    copy = _copy(saved, tmp_path)
    meta = json.loads((copy / "model.json").read_text())
    change(meta)
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=message):
        TextModel.load(copy)


def test_missing_and_unparsable_files_are_refused(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.json is missing"):
        TextModel.load(tmp_path / "nowhere")
    copy = _copy(saved, tmp_path)
    (copy / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"unreadable model\.json"):
        TextModel.load(copy)
    copy = _copy(saved, tmp_path / "b")
    (copy / "arrays.npz").unlink()
    with pytest.raises(ConfigError, match=r"arrays\.npz is missing"):
        TextModel.load(copy)


def test_threshold_holds_its_precision_on_held_out_tickets(trained: TextModel) -> None:
    rows = make_tickets(1500, seed=2)
    preds = trained.predict(texts_of(rows))["category"]
    threshold = trained.threshold("category")
    filled = [
        (p.label == r["category"])
        for p, r in zip(preds, rows, strict=True)
        if p.confidence >= threshold
    ]
    assert len(filled) > 0.5 * len(rows)  # it does fill most tickets...
    precision = sum(filled) / len(filled)
    # ...at the target precision, within ~2.5 binomial standard errors (about 0.015 here).
    assert precision >= 0.95 - 0.035, precision
    # and the vague tickets (no class words) are the ones it leaves alone
    vague = [p for p, r in zip(preds, rows, strict=True) if r["title"] == "Hjælp"]
    assert sum(p.confidence >= threshold for p in vague) < 0.2 * len(vague)


def test_pick_threshold_cuts_between_ties_and_can_refuse() -> None:
    conf = [0.9, 0.9, 0.8, 0.7, 0.6]
    correct = [True, True, False, True, True]
    thresholds, coverage, _precision = precision_coverage_curve(conf, correct)
    assert thresholds.tolist() == [0.9, 0.8, 0.7, 0.6]
    assert coverage.tolist() == [0.4, 0.6, 0.8, 1.0]
    assert pick_threshold(conf, correct, 0.75) == 0.6
    assert pick_threshold(conf, correct, 0.95) == 0.9
    assert pick_threshold([0.9], [False], 0.5) is None


def test_enricher_suggests_clear_ticket_and_abstains_on_vague(trained: TextModel) -> None:
    enricher = LearnedEnricher(trained)
    assert isinstance(enricher, Enricher)
    clear = Ticket(title="VPN forbindelse", description="hej vpn tunnel virker ikke remote tak")
    suggestions = {s.field: s for s in enricher.enrich(clear, {})}
    assert suggestions["category"].value == "network"
    assert suggestions["category"].confidence >= trained.threshold("category")
    assert suggestions["category"].reason.startswith("model: ")
    assert "≥ threshold" in suggestions["category"].reason
    assert "on 700 tickets" in suggestions["category"].reason
    assert suggestions["subcategory"].value == "vpn"
    vague = Ticket(title="Hjælp", description="hej please tak kollega")
    assert enricher.enrich(vague, {}) == []


def test_subcategory_is_conditioned_on_the_chosen_category(trained: TextModel) -> None:
    text = "VPN forbindelse\nvpn tunnel remote anslutning"
    free = trained.predict([text])["subcategory"][0]
    forced = trained.predict([text], [{"category": "hardware"}])["subcategory"][0]
    assert free.label == "vpn"
    assert forced.label in {"printer", "laptop"}
    enricher = LearnedEnricher(trained)
    ticket = Ticket(title="VPN forbindelse", description="vpn tunnel remote anslutning")
    chosen = {
        "category": Suggestion(
            field="category",
            value="hardware",
            confidence=1.0,
            reason="keyword rule",
            source="keywords",
        )
    }
    sub = [s for s in enricher.enrich(ticket, chosen) if s.field == "subcategory"]
    assert all(s.value in {"printer", "laptop"} for s in sub)
    human = ticket.model_copy(update={"current": {"category": "software"}})
    sub = [s for s in enricher.enrich(human, {}) if s.field == "subcategory"]
    assert all(s.value in {"email", "office"} for s in sub)


def test_enrich_many_matches_enrich(trained: TextModel) -> None:
    enricher = LearnedEnricher(trained)
    rows = make_tickets(40, seed=5)
    tickets = [Ticket(title=r["title"], description=r["body"]) for r in rows]
    batch = enricher.enrich_many(tickets)
    single = [list(enricher.enrich(t, {})) for t in tickets]
    # Same decisions; confidences equal up to float32 summation order within a batch.
    assert [[(s.field, s.value) for s in b] for b in batch] == [
        [(s.field, s.value) for s in one] for one in single
    ]
    for b, one in zip(batch, single, strict=True):
        assert [s.confidence for s in b] == pytest.approx([s.confidence for s in one], abs=1e-5)


def test_rare_classes_are_dropped_and_counted() -> None:
    rows = make_tickets(300, seed=3)
    labels = [r["category"] for r in rows]
    labels[:3] = ["rare_thing"] * 3
    labels[3] = ""
    model = train_model(texts_of(rows), {"category": labels}, config=TrainConfig(min_class=5))
    info = model.metadata["fields"]["category"]
    assert "rare_thing" not in info["labels"]
    assert info["dropped_rows"] == 3
    assert info["dropped_classes"] == {"rare_thing": 3}
    assert info["n_train"] == 300 - 4


def test_a_field_without_two_labels_is_refused() -> None:
    rows = make_tickets(50, seed=4)
    with pytest.raises(ConfigError, match="field impact: needs at least 2 labels"):
        train_model(texts_of(rows), {"impact": ["high"] * 50})


def test_serving_does_not_import_sklearn_scipy_or_pandas(saved: Path) -> None:
    code = (
        "import sys\n"
        "from enrichers.learned import TextModel, LearnedEnricher\n"
        "from domain.models import Ticket\n"
        f"model = TextModel.load({str(saved)!r})\n"
        "LearnedEnricher(model).enrich(Ticket(title='vpn', description='vpn tunnel'), {})\n"
        "print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def software_without_subcategory() -> TextModel:
    """A model whose category "software" had no subcategory at all in its training data."""
    rows = make_tickets(200, seed=11, label_noise=0.0)
    subs = [None if r["category"] == "software" else r["subcategory"] for r in rows]
    return train_model(
        texts_of(rows),
        {"category": [r["category"] for r in rows], "subcategory": subs},
        parents={"subcategory": "category"},
        config=TrainConfig(features=FeatureConfig(min_df=1)),
    )


SOFTWARE = Ticket(title="Outlook mail", description="outlook postkasse kalender brevlåda")


def test_a_category_with_no_subcategory_abstains_instead_of_raising(
    software_without_subcategory: TextModel,
) -> None:
    model = software_without_subcategory
    allowed = model.heads["subcategory"].allowed
    assert allowed is not None
    assert not allowed[model.heads["category"].labels.index("software")].any()
    # Given by a person, chosen by a higher enricher, or predicted by the model itself:
    preds = model.predict([SOFTWARE.text] * 2, [{"category": "software"}, {}])
    assert preds["category"][1].label == "software"
    assert preds["subcategory"] == [ABSTAIN, ABSTAIN]
    enricher = LearnedEnricher(model)
    human = SOFTWARE.model_copy(update={"current": {"category": "software"}})
    for ticket in (human, SOFTWARE):
        fields = {s.field: s for s in enricher.enrich(ticket, {})}
        assert "subcategory" not in fields
    assert {s.field for s in enricher.enrich(SOFTWARE, {})} == {"category"}
    # Other categories still get their subcategory.
    vpn = Ticket(title="VPN tunnel", description="vpn forbindelse remote anslutning")
    assert {s.field for s in enricher.enrich(vpn, {})} == {"category", "subcategory"}


def test_non_finite_confidences_and_thresholds_abstain(
    software_without_subcategory: TextModel, tmp_path: Path
) -> None:
    vpn = Ticket(title="VPN tunnel", description="vpn forbindelse remote anslutning")
    directory = software_without_subcategory.save(tmp_path / "m")
    broken = TextModel.load(directory)
    broken.heads["category"].calib[:] = np.nan  # a calibrator that says nothing usable
    assert broken.predict([vpn.text])["category"] == [ABSTAIN]
    assert LearnedEnricher(broken).enrich(vpn, {}) == []
    no_threshold = TextModel.load(directory)
    no_threshold.metadata["fields"]["category"]["threshold"] = float("nan")
    fields = {s.field for s in LearnedEnricher(no_threshold).enrich(vpn, {})}
    assert fields == set()  # a NaN threshold fills nothing (and no parent for subcategory)


def _copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "arrays.npz"):
        (target / name).write_bytes((source / name).read_bytes())
    return target
