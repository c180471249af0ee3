"""One-vs-rest SVM on each label's rows plus a weighted sample of the others (``svm_negatives``)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from enrichers.features import FeatureConfig, Vectoriser
from tests.learn import make_tickets, texts_of
from triage.learn.members import fit_member


def _data(n: int, seed: int) -> tuple[sparse.csr_matrix, np.ndarray, list[str]]:
    rows = make_tickets(n, seed=seed)
    texts = texts_of(rows)
    vec = Vectoriser.fit(texts, FeatureConfig(min_df=1))
    m = vec.transform(texts)
    x = sparse.csr_matrix((m.data, m.indices, m.indptr), shape=(len(texts), m.n_features))
    y = np.array([r["category"] for r in rows])
    return x, y, sorted(set(y.tolist()))


def test_without_anything_to_sample_it_is_the_plain_one_vs_rest_svm() -> None:
    x, y, labels = _data(300, seed=31)
    sampled = fit_member("svm", x, y, labels, 0.3, 0, passes=10, negatives=10_000)
    plain = fit_member("svm", x, y, labels, 0.3, 0, passes=10)
    assert np.array_equal(sampled.coef, plain.coef)
    assert np.array_equal(sampled.intercept, plain.intercept)


def test_sampled_negatives_are_reproducible_and_still_classify() -> None:
    x, y, labels = _data(600, seed=32)
    full = fit_member("svm", x, y, labels, 0.3, 0, passes=10)
    a = fit_member("svm", x, y, labels, 0.3, 0, passes=10, negatives=60)
    b = fit_member("svm", x, y, labels, 0.3, 0, passes=10, negatives=60)
    c = fit_member("svm", x, y, labels, 0.3, 1, passes=10, negatives=60)
    assert np.array_equal(a.coef, b.coef)  # same seed, same sample
    assert not np.array_equal(a.coef, c.coef)  # the sample depends on the seed
    predicted = np.array(labels)[a.scores(x).argmax(axis=1)]
    reference = np.array(labels)[full.scores(x).argmax(axis=1)]
    assert (predicted == y).mean() > 0.8
    assert (predicted == reference).mean() > 0.8


def test_a_label_absent_from_the_sampled_fit_still_scores_far_below() -> None:
    x, y, labels = _data(200, seed=33)
    scores = fit_member("svm", x, y, [*labels, "zz"], 0.3, 0, passes=10, negatives=50).scores(x)
    assert (scores[:, -1] < -100).all()
