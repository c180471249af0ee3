"""Training's fast featuriser equals the serving Vectoriser; thresholds abstain when they must."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import sparse

from domain.models import Ticket
from enrichers.features import FeatureConfig, Vectoriser
from enrichers.learned import LearnedEnricher
from tests.learn import make_tickets, texts_of
from triage.learn.members import fit_features
from triage.learn.train import TrainConfig, train_model


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(min_df=1, char_min=3, char_max=4),
        FeatureConfig(max_features=300),  # cuts through a tie of equal document frequencies
        FeatureConfig(title_features=False, max_chars=40),
    ],
)
def test_fast_features_equal_the_serving_vectoriser(config: FeatureConfig) -> None:
    texts = [*texts_of(make_tickets(300, seed=31)), "", "Netværk nede\n", "ø\nß ß ß"]
    slow = Vectoriser.fit(texts, config)
    rows = slow.transform(texts)
    expected = sparse.csr_matrix(
        (rows.data, rows.indices, rows.indptr), shape=(len(texts), rows.n_features)
    )
    fast, x = fit_features(texts, config)
    assert fast.vocabulary == slow.vocabulary
    np.testing.assert_array_equal(fast.idf, slow.idf)
    assert x.shape == expected.shape
    assert abs(x - expected).max() <= 1e-7


def test_default_model_beats_chance_and_keeps_its_threshold_on_new_tickets() -> None:
    rows = make_tickets(900, seed=32)
    model = train_model(texts_of(rows), {"category": [r["category"] for r in rows]})
    fresh = make_tickets(1500, seed=33)
    preds = model.predict(texts_of(fresh))["category"]
    accuracy = np.mean([p.label == r["category"] for p, r in zip(preds, fresh, strict=True)])
    assert accuracy > 0.6  # four categories: chance is 0.25
    threshold = model.threshold("category")
    hits = [
        p.label == r["category"]
        for p, r in zip(preds, fresh, strict=True)
        if p.confidence >= threshold
    ]
    assert len(hits) > 0.3 * len(fresh)
    assert np.mean(hits) >= 0.95 - 2 * (0.05 * 0.95 / len(hits)) ** 0.5


def test_a_field_whose_labels_the_text_cannot_tell_never_fills() -> None:
    rows = make_tickets(600, seed=34)
    rng = random.Random(35)
    noise = [rng.choice(["a", "b", "c"]) for _ in rows]  # independent of the text
    model = train_model(
        texts_of(rows),
        {"category": [r["category"] for r in rows], "noise": noise},
        config=TrainConfig(folds=3),
    )
    assert model.metadata["fields"]["noise"]["threshold"] is None
    enricher = LearnedEnricher(model)
    tickets = [Ticket(title=r["title"], description=r["body"]) for r in make_tickets(200, seed=36)]
    filled = {s.field for out in enricher.enrich_many(tickets) for s in out}
    assert "noise" not in filled
    assert "category" in filled
