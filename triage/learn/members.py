"""The linear scorers whose average is a field's model (training only; imports scikit-learn).

Each member maps sparse TF-IDF rows to one score per label. Members are averaged after each
is standardised by the mean and spread of its own out-of-fold scores, so no member dominates
by scale alone. Every member is linear, so the average is one weight matrix and serving stays a
single gather, whatever the number of members:

* ``svm``: one-vs-rest linear SVM (hinge loss), class-balanced;
* ``nbsvm``: the same SVM on naive-Bayes log-count-ratio scaled features per label
  (Wang & Manning 2012), strong on short keyword-like texts; its weights fold back into
  plain feature weights because ``w·(x ⊙ r) = (w ⊙ r)·x``;
* ``logreg``: multinomial logistic regression (weakly regularised, class-balanced), whose
  logits are the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

__all__ = ["MEMBERS", "LinearScorer", "fit_member"]

MEMBERS = ("svm", "nbsvm", "logreg")
Matrix = Any  # scipy.sparse.csr_matrix (untyped)
Floats = npt.NDArray[np.float64]


class LinearScorer:
    """Weights (features × labels) and intercepts over a fixed, sorted label list."""

    def __init__(self, coef: Floats, intercept: Floats) -> None:
        self.coef = coef
        self.intercept = intercept

    def scores(self, x: Matrix) -> Floats:
        """Scores (rows × labels)."""
        return np.asarray(x @ self.coef, dtype=np.float64) + self.intercept


def fit_member(
    kind: str, x: Matrix, y: npt.NDArray[np.str_], labels: Sequence[str], c: float, seed: int
) -> LinearScorer:
    """Fit one member; labels absent from ``y`` (a small fold) get a score far below the rest."""
    present = sorted(set(y.tolist()))
    if kind == "svm":
        coef, intercept = _svm(x, y, c, seed)
    elif kind == "nbsvm":
        coef, intercept = _nbsvm(x, y, present, c, seed)
    elif kind == "logreg":
        coef, intercept = _logreg(x, y, c)
    else:
        raise ValueError(f"unknown ensemble member {kind!r} (known: {', '.join(MEMBERS)})")
    full = np.zeros((x.shape[1], len(labels)))
    bias = np.full(len(labels), -1e3)
    cols = [list(labels).index(label) for label in present]
    full[:, cols] = coef
    bias[cols] = intercept
    return LinearScorer(full, bias)


def _two_columns(coef: Floats, intercept: Floats) -> tuple[Floats, Floats]:
    """scikit-learn keeps one column for two labels: spell out both (score of 0 = −score of 1)."""
    if coef.shape[1] == 1:
        return np.column_stack([-coef[:, 0], coef[:, 0]]), np.array([-intercept[0], intercept[0]])
    return coef, intercept


def _svm(x: Matrix, y: npt.NDArray[np.str_], c: float, seed: int) -> tuple[Floats, Floats]:
    model = LinearSVC(C=c, class_weight="balanced", random_state=seed).fit(x, y)
    coef = np.asarray(model.coef_, dtype=np.float64).T
    return _two_columns(coef, np.asarray(model.intercept_, dtype=np.float64))


def _logreg(x: Matrix, y: npt.NDArray[np.str_], c: float) -> tuple[Floats, Floats]:
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(x, y)
    coef = np.asarray(model.coef_, dtype=np.float64).T
    return _two_columns(coef, np.asarray(model.intercept_, dtype=np.float64))


def _nbsvm(
    x: Matrix, y: npt.NDArray[np.str_], present: list[str], c: float, seed: int
) -> tuple[Floats, Floats]:
    """One binary SVM per label on ``x ⊙ r`` (r = smoothed log ratio of feature presence)."""
    seen = (x > 0).astype(np.float64)
    total = np.asarray(seen.sum(axis=0)).ravel()
    coef = np.zeros((x.shape[1], len(present)))
    intercept = np.zeros(len(present))
    for j, label in enumerate(present):
        mine = y == label
        pos = np.asarray(seen[mine].sum(axis=0)).ravel() + 1.0
        neg = total - pos + 2.0
        ratio = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
        model = LinearSVC(C=c, class_weight="balanced", random_state=seed)
        model.fit(x @ sparse.diags(ratio), mine.astype(np.int64))
        coef[:, j] = model.coef_[0] * ratio
        intercept[j] = model.intercept_[0]
    return coef, intercept
