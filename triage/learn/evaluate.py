"""Scoring a text model: precision–coverage, macro-F1, per-class figures, stratified splits.

Numpy only (no scikit-learn), so the same helpers pick thresholds at training time and score
held-out data. "Coverage at precision P" is the largest share of tickets we can fill, taking
the most confident first, while the filled ones are at least P correct.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FieldEvaluation",
    "class_report",
    "confusion",
    "coverage_at_precision",
    "drop_rare",
    "macro_f1",
    "natural_key",
    "natural_sorted",
    "pick_threshold",
    "precision_coverage_curve",
    "score_field",
    "wilson_interval",
    "wilson_lower_bound",
]


_DIGITS = re.compile(r"([0-9]+)")


def natural_key(label: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key for labels as people read them: ``"2" < "10"``, ``"P2" < "p10"``, case-insensitive.

    Text and digit runs alternate (text first, possibly empty), so keys compare position by
    position without mixing types; the label itself breaks ties between case variants.
    """
    parts = _DIGITS.split(label)
    key: list[str | int] = [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)]
    return tuple(key), label


def natural_sorted(labels: Iterable[str]) -> list[str]:
    """``labels`` in natural order (see ``natural_key``)."""
    return sorted(labels, key=natural_key)


def precision_coverage_curve(
    confidence: Sequence[float] | npt.NDArray[Any], correct: Sequence[bool] | npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(thresholds, coverage, precision) at every distinct confidence, most confident first."""
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    order = np.argsort(-conf, kind="stable")
    conf, hits = conf[order], hits[order]
    cum = np.cumsum(hits)
    # Only cut between distinct confidences: a threshold fills every tie or none of them.
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    k = np.nonzero(last_of_tie)[0]
    return conf[k], (k + 1) / conf.size, cum[k] / (k + 1)


def wilson_lower_bound(
    precision: npt.NDArray[Any] | float, n: npt.NDArray[Any] | float, z: float
) -> npt.NDArray[np.float64]:
    """Wilson score lower bound of a proportion observed as ``precision`` over ``n`` trials."""
    p = np.asarray(precision, dtype=np.float64)
    count = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    centre = p + z * z / (2 * count)
    spread = z * np.sqrt(p * (1 - p) / count + z * z / (4 * count * count))
    return np.asarray((centre - spread) / (1 + z * z / count), dtype=np.float64)


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Two-sided Wilson score interval of ``hits`` successes in ``n`` trials (95 % at 1.96)."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    low = float(wilson_lower_bound(p, n, z))
    high = 1.0 - float(wilson_lower_bound(1.0 - p, n, z))
    return low, high


def pick_threshold(
    confidence: Sequence[float] | npt.NDArray[Any],
    correct: Sequence[bool] | npt.NDArray[Any],
    target: float,
    *,
    z: float = 0.0,
    min_covered: int = 1,
    groups: Sequence[Sequence[Any] | npt.NDArray[Any]] = (),
) -> float | None:
    """The lowest threshold whose filled set is at least ``target`` precise (None: never fill).

    With ``z > 0`` the filled set's precision must reach ``target`` at its Wilson lower bound,
    not just as observed: picking the largest cut where a noisy curve touches the target
    otherwise claims more precision than new tickets get. At least ``min_covered`` rows must
    clear the threshold.

    Each grouping in ``groups`` (e.g. each row's cross-validation fold, each row's predicted
    label) adds a condition: in every group the rows the cut fills must not be clearly below
    the target, i.e. their precision's Wilson *upper* bound at ``z`` reaches it. A pooled
    precision that only holds on average (one fold, or one often-confused label, far below and
    the rest above) is a promise new tickets can break; such a cut is refused, and a field
    where every cut is refused abstains.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(correct, dtype=bool)
    thresholds, coverage, precision = precision_coverage_curve(conf, hits)
    covered = np.rint(coverage * len(conf))
    bound = wilson_lower_bound(precision, covered, z) if z > 0 else precision
    ok = (bound >= target) & (covered >= min_covered)
    for grouping in groups:
        if ok.any():
            ok &= _every_group_reaches(conf, hits, np.asarray(grouping), thresholds, target, z)
    found = np.nonzero(ok)[0]
    return float(thresholds[found[-1]]) if found.size else None


def _every_group_reaches(
    conf: npt.NDArray[np.float64],
    hits: npt.NDArray[np.bool_],
    groups: npt.NDArray[Any],
    thresholds: npt.NDArray[np.float64],
    target: float,
    z: float,
) -> npt.NDArray[np.bool_]:
    """Per cut: no group's filled rows are below ``target`` beyond their Wilson upper bound."""
    ok = np.ones(len(thresholds), dtype=bool)
    ascending = thresholds[::-1]  # searchsorted needs ascending order
    for g in np.unique(groups):
        mine = groups == g
        c, h = np.sort(conf[mine]), hits[mine][np.argsort(conf[mine], kind="stable")]
        wrong_above = np.r_[np.cumsum((~h)[::-1])[::-1], 0]  # misses among rows ≥ each index
        start = np.searchsorted(c, ascending, side="left")
        filled = (len(c) - start)[::-1].astype(np.float64)
        misses = wrong_above[start][::-1].astype(np.float64)
        precision = np.where(filled > 0, 1.0 - misses / np.maximum(filled, 1.0), 1.0)
        upper = 1.0 - wilson_lower_bound(1.0 - precision, filled, z) if z > 0 else precision
        ok &= (filled == 0) | (upper >= target)
    return ok


def coverage_at_precision(
    confidence: Sequence[float] | npt.NDArray[Any],
    correct: Sequence[bool] | npt.NDArray[Any],
    target: float,
) -> float:
    """The largest coverage whose precision is at least ``target`` (0.0 when none is)."""
    _, coverage, precision = precision_coverage_curve(confidence, correct)
    ok = np.nonzero(precision >= target)[0]
    return float(coverage[ok[-1]]) if ok.size else 0.0


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Unweighted mean F1 over the labels in either sequence (as scikit-learn computes it)."""
    report = class_report(y_true, y_pred)
    return float(np.mean([r["f1"] for r in report.values()])) if report else 0.0


def class_report(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label, in natural order: precision, recall, F1 and support."""
    labels = natural_sorted(set(y_true) | set(y_pred))
    pairs = Counter(zip(y_true, y_pred, strict=True))
    true_n, pred_n = Counter(y_true), Counter(y_pred)
    out: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = pairs[(label, label)]
        precision = tp / pred_n[label] if pred_n[label] else 0.0
        recall = tp / true_n[label] if true_n[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": float(true_n[label]),
        }
    return out


def confusion(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """(labels in natural order, matrix) with rows = true label, columns = predicted label."""
    labels = natural_sorted(set(y_true) | set(y_pred))
    pos = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[pos[t]][pos[p]] += 1
    return labels, matrix


def drop_rare(
    labels: Sequence[str | None], min_class: int
) -> tuple[list[int], int, dict[str, int]]:
    """(rows kept, rows dropped, dropped class → count): unlabelled rows are neither."""
    counts = Counter(label for label in labels if label)
    rare = {label: n for label, n in counts.items() if n < min_class}
    kept = [i for i, label in enumerate(labels) if label and label not in rare]
    return kept, sum(rare.values()), rare


@dataclass
class FieldEvaluation:
    """Held-out results of one field (``summary()`` is the JSON shape of ``evaluate --json``)."""

    n_train: int
    n_test: int
    dropped_rows: int
    threshold: float | None
    y_true: list[str]
    y_pred: list[str]
    confidence: list[float]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which model produced the predictions (``run_record.model_version``); not in ``summary``.
    model: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The evaluation figures of this field."""
        correct = np.array(self.y_true) == np.array(self.y_pred)
        conf = np.array(self.confidence)
        filled = conf >= (self.threshold if self.threshold is not None else np.inf)
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "accuracy": round(float(correct.mean()) if correct.size else 0.0, 4),
            "macro_f1": round(macro_f1(self.y_true, self.y_pred), 4),
            "coverage_at_precision_90": round(coverage_at_precision(conf, correct, 0.90), 4),
            "coverage_at_precision_95": round(coverage_at_precision(conf, correct, 0.95), 4),
            "threshold_at_precision_95": (
                None if self.threshold is None else round(self.threshold, 4)
            ),
            "dropped_rows": self.dropped_rows,
            "coverage_at_threshold": round(float(filled.mean()) if filled.size else 0.0, 4),
            "precision_at_threshold": (
                round(float(correct[filled].mean()), 4) if filled.any() else None
            ),
            "filled_at_threshold": int(filled.sum()),
            # How sure that precision is: ~1,000 test tickets leave a few points either way.
            "precision_at_threshold_interval_95": (
                [
                    round(b, 4)
                    for b in wilson_interval(int(correct[filled].sum()), int(filled.sum()))
                ]
                if filled.any()
                else None
            ),
            **self.extra,
        }


def score_field(
    y_true: Sequence[str],
    predictions: Sequence[tuple[str, float]],
    *,
    n_train: int,
    dropped_rows: int,
    threshold: float | None,
) -> FieldEvaluation:
    """Bundle one field's held-out predictions for reporting."""
    return FieldEvaluation(
        n_train=n_train,
        n_test=len(y_true),
        dropped_rows=dropped_rows,
        threshold=threshold,
        y_true=list(y_true),
        y_pred=[label for label, _ in predictions],
        confidence=[float(conf) for _, conf in predictions],
    )
