"""Training: TF-IDF features → linear SVM per field → calibrator and threshold on held-out folds.

The only module that imports scikit-learn (and scipy). Its output is a plain
``enrichers.learned.TextModel`` built from numpy arrays, so what we evaluate in memory is
exactly what serving loads from disk.

Per field: rows without a label are skipped, classes with fewer than ``min_class`` rows are
dropped (and counted). K-fold out-of-fold scores train the confidence calibrator and pick the
threshold that keeps held-out precision at the target; the final scorer is refit on all rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.svm import LinearSVC

from enrichers.features import FeatureConfig, Vectoriser
from enrichers.learned import FORMAT_NAME, FORMAT_VERSION, TextModel, confidence_inputs
from triage.errors import ConfigError
from triage.learn.evaluate import coverage_at_precision, drop_rare, macro_f1, pick_threshold

__all__ = ["TrainConfig", "split_rows", "train_model"]

log = logging.getLogger(__name__)
Matrix = Any  # scipy.sparse.csr_matrix (untyped)


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run; recorded in model.json."""

    target_precision: float = 0.95
    min_class: int = 5
    folds: int = 5
    c: float = 0.3
    balanced: bool = True
    seed: int = 0
    max_field_features: int = 40_000
    features: FeatureConfig = field(default_factory=FeatureConfig)


@dataclass
class _Fitted:
    labels: list[str]
    arrays: dict[str, npt.NDArray[Any]]
    info: dict[str, Any]


def train_model(
    texts: Sequence[str],
    labels: Mapping[str, Sequence[str | None]],
    *,
    config: TrainConfig | None = None,
    parents: Mapping[str, str] | None = None,
    source: str = "",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TextModel:
    """Train one model over several label fields; ``ConfigError`` if a field cannot be learned."""
    config = config or TrainConfig()
    parents = dict(parents or {})
    for child, mother in parents.items():
        if child not in labels or mother not in labels:
            raise ConfigError(f"conditioning {child} on {mother}: both must be trained fields")
    vectoriser = Vectoriser.fit(texts, config.features)
    rows = vectoriser.transform(texts)
    x = sparse.csr_matrix(
        (rows.data, rows.indices, rows.indptr), shape=(len(texts), rows.n_features)
    )
    chars = np.array([len(t) for t in texts], dtype=np.float64)
    log.info("training on %d texts, %d features", len(texts), rows.n_features)
    arrays: dict[str, npt.NDArray[Any]] = {
        "vocab": np.frombuffer("\n".join(vectoriser.vocabulary).encode("utf-8"), dtype=np.uint8),
        "idf": vectoriser.idf.astype(np.float32),
    }
    fields_meta: dict[str, Any] = {}
    fitted: dict[str, _Fitted] = {}
    for name, column in labels.items():
        parent: str | None = parents.get(name)
        parent_fit = fitted.get(parent) if parent else None
        parent_column = labels[parent] if parent else None
        result = _train_field(name, column, x, chars, config, parent_fit, parent_column)
        fitted[name] = result
        arrays.update(result.arrays)
        fields_meta[name] = {**result.info, "parent": parent}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_at": now().isoformat(timespec="seconds"),
        "n_train": len(texts),
        "source": source,
        "target_precision": config.target_precision,
        "classifier": {
            "kind": "linear_svm_ovr",
            "c": config.c,
            "class_weight": "balanced" if config.balanced else None,
            "folds": config.folds,
            "min_class": config.min_class,
            "seed": config.seed,
        },
        "featuriser": config.features.to_json(),
        "n_features": rows.n_features,
        "fields": fields_meta,
        "arrays": {},
    }
    return TextModel(metadata, arrays)


def _train_field(
    name: str,
    column: Sequence[str | None],
    x: Matrix,
    chars: npt.NDArray[np.float64],
    config: TrainConfig,
    parent: _Fitted | None,
    parent_column: Sequence[str | None] | None,
) -> _Fitted:
    kept, dropped_rows, dropped = drop_rare([v or None for v in column], config.min_class)
    y = np.array([str(column[i]) for i in kept])
    labels = sorted(set(y.tolist()))
    if len(labels) < 2:
        raise ConfigError(
            f"field {name}: needs at least 2 labels with {config.min_class}+ rows each "
            f"(found {len(labels)}; {dropped_rows} rows in rarer labels were dropped)"
        )
    xf = x[kept]
    allowed, row_mask = _parent_masks(labels, y, kept, parent, parent_column)
    oof = _out_of_fold(xf, y, labels, config)
    top, feats = confidence_inputs(oof, row_mask, chars[kept])
    predicted = np.array(labels)[top]
    correct = predicted == y
    calib = _fit_calibrator(feats, top, correct, len(labels))
    conf = 1.0 / (1.0 + np.exp(-(feats @ calib[:3] + calib[3] + calib[4:][top])))
    threshold = pick_threshold(conf, correct, config.target_precision)
    coef, intercept = _fit_scorer(xf, y, labels, config)
    keep_rows = _prune(coef, config.max_field_features)
    arrays: dict[str, npt.NDArray[Any]] = {
        f"{name}.rows": keep_rows.astype(np.int32),
        f"{name}.coef": coef[keep_rows].astype(np.float16),
        f"{name}.intercept": intercept.astype(np.float32),
        f"{name}.calib": calib.astype(np.float32),
    }
    if allowed is not None:
        arrays[f"{name}.allowed"] = allowed.astype(np.uint8)
    filled = conf >= (threshold if threshold is not None else np.inf)
    info = {
        "labels": labels,
        "class_counts": {label: int(n) for label, n in sorted(Counter(y.tolist()).items())},
        "n_train": len(kept),
        "dropped_rows": dropped_rows,
        "dropped_classes": dict(sorted(dropped.items())),
        "threshold": None if threshold is None else round(threshold, 6),
        "heldout": {
            "method": f"{_n_folds(y, config)}-fold out-of-fold",
            "accuracy": round(float(correct.mean()), 4),
            "macro_f1": round(macro_f1(y.tolist(), predicted.tolist()), 4),
            "coverage_at_precision_90": round(coverage_at_precision(conf, correct, 0.90), 4),
            "coverage_at_precision_95": round(coverage_at_precision(conf, correct, 0.95), 4),
            "coverage_at_threshold": round(float(filled.mean()), 4),
            "precision_at_threshold": (
                round(float(correct[filled].mean()), 4) if filled.any() else None
            ),
        },
    }
    log.info("field %s: %d rows, %d labels, threshold %s", name, len(kept), len(labels), threshold)
    return _Fitted(labels, arrays, info)


def _parent_masks(
    labels: list[str],
    y: npt.NDArray[np.str_],
    kept: list[int],
    parent: _Fitted | None,
    parent_column: Sequence[str | None] | None,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.bool_] | None]:
    """Co-occurrence (parent label × label) and each row's mask under its true parent label."""
    if parent is None or parent_column is None:
        return None, None
    pos = {label: i for i, label in enumerate(labels)}
    ppos = {label: i for i, label in enumerate(parent.labels)}
    allowed = np.zeros((len(parent.labels), len(labels)), dtype=bool)
    row_mask = np.ones((len(kept), len(labels)), dtype=bool)
    for j, row in enumerate(kept):
        p = parent_column[row]
        if p in ppos:
            allowed[ppos[p], pos[str(y[j])]] = True
    for j, row in enumerate(kept):
        p = parent_column[row]
        if p in ppos:
            row_mask[j] = allowed[ppos[p]]
    return allowed, row_mask


def _n_folds(y: npt.NDArray[np.str_], config: TrainConfig) -> int:
    return max(2, min(config.folds, min(Counter(y.tolist()).values())))


def _classifier(config: TrainConfig) -> LinearSVC:
    return LinearSVC(
        C=config.c,
        class_weight="balanced" if config.balanced else None,
        random_state=config.seed,
    )


def _scores(model: LinearSVC, x: Matrix) -> npt.NDArray[np.float64]:
    scores = np.asarray(model.decision_function(x), dtype=np.float64)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


def _out_of_fold(
    x: Matrix, y: npt.NDArray[np.str_], labels: list[str], config: TrainConfig
) -> npt.NDArray[np.float64]:
    oof = np.zeros((x.shape[0], len(labels)))
    folds = StratifiedKFold(_n_folds(y, config), shuffle=True, random_state=config.seed)
    for train_idx, test_idx in folds.split(np.zeros(len(y)), y):
        model = _classifier(config).fit(x[train_idx], y[train_idx])
        cols = [labels.index(str(c)) for c in model.classes_]
        block = np.full((len(test_idx), len(labels)), -1e3)  # a label absent from this fold
        block[:, cols] = _scores(model, x[test_idx])
        oof[test_idx] = block
    return oof


def _fit_scorer(
    x: Matrix, y: npt.NDArray[np.str_], labels: list[str], config: TrainConfig
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    model = _classifier(config).fit(x, y)
    assert [str(c) for c in model.classes_] == labels  # sorted, as the metadata lists them
    coef = np.asarray(model.coef_, dtype=np.float64).T
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if len(labels) == 2:
        coef = np.column_stack([-coef[:, 0], coef[:, 0]])
        intercept = np.array([-intercept[0], intercept[0]])
    return coef, intercept


def _prune(coef: npt.NDArray[np.float64], limit: int) -> npt.NDArray[np.int64]:
    """Feature rows worth storing: non-zero, and the ``limit`` strongest by max |weight|."""
    strength = np.abs(coef).max(axis=1)
    rows = np.nonzero(strength > 0)[0]
    if len(rows) > limit:
        rows = rows[np.argsort(-strength[rows], kind="stable")[:limit]]
    return np.sort(rows)


def _fit_calibrator(
    feats: npt.NDArray[np.float64], top: npt.NDArray[np.int64], correct: npt.NDArray[Any], k: int
) -> npt.NDArray[np.float64]:
    """Logistic P(correct | top score, margin, length, predicted label) on held-out scores."""
    calib = np.zeros(4 + k)
    rate = float(np.clip(correct.mean(), 1e-3, 1 - 1e-3))
    if correct.all() or not correct.any():
        calib[3] = np.log(rate / (1 - rate))  # nothing to learn: a constant
        return calib
    design = np.column_stack([feats, np.eye(k)[top]])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(design, correct.astype(int))
    coef = model.coef_[0]
    calib[:3] = coef[:3]
    calib[3] = model.intercept_[0]
    calib[4:] = coef[3:]
    return calib


def split_rows(labels: Sequence[str], test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """A stratified (train, test) split of row indices (scikit-learn's, so figures compare)."""
    rows = list(range(len(labels)))
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=labels)
    return sorted(train), sorted(test)
