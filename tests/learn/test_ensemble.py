"""Ensemble members, the Wilson-bounded threshold rule, and that thresholds hold on new data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.svm import LinearSVC

from enrichers.features import FeatureConfig, Vectoriser
from tests.learn import make_tickets, texts_of
from triage.learn.evaluate import pick_threshold, wilson_lower_bound
from triage.learn.members import fit_member
from triage.learn.train import ENSEMBLE, TrainConfig, train_model


def _matrix(texts: list[str]) -> tuple[Vectoriser, sparse.csr_matrix]:
    vec = Vectoriser.fit(texts, FeatureConfig(min_df=1))
    rows = vec.transform(texts)
    shape = (len(texts), rows.n_features)
    return vec, sparse.csr_matrix((rows.data, rows.indices, rows.indptr), shape=shape)


def test_wilson_lower_bound_matches_the_textbook_value() -> None:
    # 95 of 100 at z = 1.96: the Wilson interval is (0.8882, 0.9785).
    assert float(wilson_lower_bound(0.95, 100, 1.96)) == pytest.approx(0.8882, abs=1e-4)
    assert float(wilson_lower_bound(0.95, 1e6, 1.96)) == pytest.approx(0.95, abs=1e-3)


def test_threshold_needs_evidence_not_just_an_observed_hit() -> None:
    # 19 right of the top 20, then a long tail at 90 %: observed precision touches 0.95 at 20.
    conf = np.linspace(1.0, 0.0, 220)
    correct = np.r_[np.ones(19), 0, np.tile([0] + [1] * 9, 20)].astype(bool)
    assert pick_threshold(conf, correct, 0.95) == pytest.approx(conf[19])
    assert pick_threshold(conf, correct, 0.95, min_covered=21) is None
    assert pick_threshold(conf, correct, 0.95, z=1.645) is None  # 19/20 proves nothing
    big = np.r_[np.ones(400), np.tile([1] * 9 + [0], 20)].astype(bool)
    conf = np.linspace(1.0, 0.0, big.size)
    # 400/400 right bounds ~0.99; the cut stops where the bound drops to 0.95, not earlier.
    picked = pick_threshold(conf, big, 0.95, z=1.645)
    assert picked is not None
    filled = conf >= picked
    assert filled.sum() > 400
    assert float(wilson_lower_bound(big[filled].mean(), filled.sum(), 1.645)) >= 0.95


def test_nbsvm_weights_fold_back_into_plain_feature_weights() -> None:
    rows = make_tickets(200, seed=21)
    _, x = _matrix(texts_of(rows))
    y = np.array([r["category"] for r in rows])
    labels = sorted(set(y.tolist()))
    member = fit_member("nbsvm", x, y, labels, 0.3, 0)
    # Rebuild one label's binary SVM on the explicitly scaled features.
    seen = (x > 0).astype(np.float64)
    mine = y == labels[0]
    pos = np.asarray(seen[mine].sum(axis=0)).ravel() + 1.0
    neg = np.asarray(seen[~mine].sum(axis=0)).ravel() + 1.0
    ratio = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
    svm = LinearSVC(C=0.3, class_weight="balanced", random_state=0)
    svm.fit(x @ sparse.diags(ratio), mine.astype(int))
    expected = svm.decision_function(x @ sparse.diags(ratio))
    assert member.scores(x)[:, 0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["svm", "nbsvm", "logreg"])
def test_a_label_missing_from_a_fold_scores_far_below_the_rest(kind: str) -> None:
    rows = make_tickets(120, seed=22)
    _, x = _matrix(texts_of(rows))
    y = np.array([r["category"] for r in rows])
    labels = [*sorted(set(y.tolist())), "zz_absent"]
    scores = fit_member(kind, x, y, labels, 1.0, 0).scores(x)
    assert scores.argmax(axis=1).max() < len(labels) - 1
    assert (scores[:, -1] < -100).all()
    assert (np.array(labels)[scores.argmax(axis=1)] == y).mean() > 0.8


def test_unknown_member_is_refused() -> None:
    rows = make_tickets(40, seed=23)
    _, x = _matrix(texts_of(rows))
    y = np.array([r["category"] for r in rows])
    with pytest.raises(ValueError, match="unknown ensemble member 'forest'"):
        fit_member("forest", x, y, sorted(set(y.tolist())), 1.0, 0)


@pytest.mark.parametrize("members", [("svm",), ENSEMBLE])
def test_model_records_its_members_and_holds_precision_on_new_tickets(
    members: tuple[str, ...],
) -> None:
    # The default is now one SVM (docs/classification.md); the old ensemble stays selectable.
    rows = make_tickets(800, seed=24)
    labels = [r["subcategory"] for r in rows]
    config = None if members == ("svm",) else TrainConfig(members=members)
    model = train_model(texts_of(rows), {"subcategory": labels}, config=config)
    classifier = model.metadata["classifier"]
    assert classifier["members"] == list(members)
    assert classifier["kind"] == ("linear" if len(members) == 1 else "linear_ensemble")
    assert classifier["threshold_rule"] == {
        "wilson_z": 1.645,
        "min_covered": 20,
        "every_fold": True,
        "label_demotion": True,
    }
    assert classifier["scorer"] == "fold_average"
    held = model.metadata["fields"]["subcategory"]["heldout"]
    assert held["precision_at_threshold"] >= 0.95
    fresh = make_tickets(2000, seed=25)
    preds = model.predict(texts_of(fresh))["subcategory"]
    threshold = model.threshold("subcategory")
    filled = [
        p.label == r["subcategory"]
        for p, r in zip(preds, fresh, strict=True)
        if p.confidence >= threshold
    ]
    assert len(filled) > 0.4 * len(fresh)
    # One-sided bound: new tickets should not fall more than ~2 standard errors below target.
    assert sum(filled) / len(filled) >= 0.95 - 2 * (0.05 * 0.95 / len(filled)) ** 0.5


def test_a_single_member_ensemble_still_trains() -> None:
    rows = make_tickets(200, seed=26)
    config = TrainConfig(members=("svm",))
    model = train_model(texts_of(rows), {"category": [r["category"] for r in rows]}, config=config)
    preds = model.predict(texts_of(rows[:50]))["category"]
    assert np.mean([p.label == r["category"] for p, r in zip(preds, rows[:50], strict=True)]) > 0.8


def test_parallel_folds_build_exactly_the_same_model(tmp_path: Path) -> None:
    rows = make_tickets(300, seed=27)
    labels = {"category": [r["category"] for r in rows]}

    def saved(jobs: int) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
        model = train_model(
            texts_of(rows),
            labels,
            config=TrainConfig(jobs=jobs, members=ENSEMBLE),
            now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        )
        out = model.save(tmp_path / f"jobs{jobs}")
        meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
        meta.pop("arrays")  # the npz's hash: zip entries carry the time they were written
        with np.load(out / "arrays.npz", allow_pickle=False) as npz:
            return meta, {name: npz[name] for name in npz.files}

    (serial_meta, serial), (parallel_meta, parallel) = saved(1), saved(2)
    assert serial_meta == parallel_meta
    assert serial.keys() == parallel.keys()
    for name, array in serial.items():
        np.testing.assert_array_equal(array, parallel[name], err_msg=name)


def test_parallel_folds_work_on_inputs_large_enough_to_be_shared() -> None:
    # joblib hands arrays over 1 MB to workers as read-only memmaps; NB-SVM's feature scaling
    # must still work on them (it once failed with "WRITEBACKIFCOPY base is read-only").
    rows = make_tickets(2500, seed=28)
    config = TrainConfig(jobs=2, members=("nbsvm",))
    model = train_model(texts_of(rows), {"category": [r["category"] for r in rows]}, config=config)
    preds = model.predict(texts_of(rows[:100]))["category"]
    assert np.mean([p.label == r["category"] for p, r in zip(preds, rows[:100], strict=True)]) > 0.8
