"""Training: TF-IDF features → linear ensemble per field → calibrator and threshold on held-out folds.

The only module that imports scikit-learn (and scipy, joblib, threadpoolctl). Its output is a
plain ``enrichers.learned.TextModel`` built from numpy arrays, so what we evaluate in memory is
exactly what serving loads from disk.

Per field: rows without a label are skipped, classes with fewer than ``min_class`` rows are
dropped (and counted). K-fold out-of-fold scores train the confidence calibrator; the threshold
is picked on calibrated confidences that were held out from both the scorer and the calibrator,
as the lowest cut whose precision's Wilson lower bound still reaches the target. The served
scorer is the average of the fold models (see ``_out_of_fold``). The members of the ensemble
are in ``triage.learn.members``.
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
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from domain.errors import ConfigError
from enrichers.features import FeatureConfig
from enrichers.learned import FORMAT_NAME, FORMAT_VERSION, TextModel, confidence_inputs
from triage.learn.evaluate import (
    coverage_at_precision,
    drop_rare,
    macro_f1,
    pick_threshold,
    wilson_lower_bound,
)
from triage.learn.members import MEMBERS, LinearScorer, fit_features, fit_member

__all__ = ["ENSEMBLE", "TrainConfig", "split_rows", "train_model"]

log = logging.getLogger(__name__)
Matrix = Any  # scipy.sparse.csr_matrix (untyped)
#: The previous default: SVM + NB-SVM + LR, kept for comparison (docs/classification.md).
ENSEMBLE = MEMBERS
#: Subtracted from a demoted label's calibrator offset: its confidence becomes ~0 (see _demoted).
DEMOTION = 60.0


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run; recorded in model.json."""

    target_precision: float = 0.95
    min_class: int = 5
    # None: 5 folds below ``few_rows`` labelled rows (more rows per fold model where rows are
    # scarce), 3 from there (2 full-data fits' worth of work instead of 4; docs/classification.md).
    folds: int | None = None
    few_rows: int = 10_000
    c: float = 0.3  # SVM and NB-SVM regularisation
    # Coordinate-descent passes per SVM fit: a fixed cap keeps training linear in the row count.
    svm_passes: int = 10
    # One-vs-rest SVM: each label sees its own rows, a weighted random sample of at least this
    # many other rows and as many hard negatives (None: all rows). Keeps training from growing
    # with rows × labels as a desk grows (``members._svm_sampled``, docs/classification.md).
    svm_negatives: int | None = 2_000
    logreg_c: float = 10.0
    # One class-balanced linear SVM: the three-member ensemble did not win clearly on most
    # fields of the shared data sets and cost 3–4× the time (docs/classification.md).
    members: tuple[str, ...] = ("svm",)
    seed: int = 0
    jobs: int = 1  # processes fitting folds × members in parallel (-1: one per core)
    max_field_features: int = 40_000
    # One-sided z of the Wilson lower bound on held-out precision at the threshold (1.645:
    # 95 % confident the precision reaches the target), and the fewest held-out tickets that
    # must clear the threshold before it is believed at all.
    precision_z: float = 1.645
    min_covered: int = 20
    # Character 3–5-grams: as good as 2–5 on the shared data, a fifth fewer non-zeros per row.
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(char_min=3))


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
    vectoriser, x = fit_features(texts, config.features)
    n_features = len(vectoriser.vocabulary)
    chars = np.array([len(t) for t in texts], dtype=np.float64)
    log.info("training on %d texts, %d features", len(texts), n_features)
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
            "kind": "linear_ensemble" if len(config.members) > 1 else "linear",
            "members": list(config.members),
            "c": config.c,
            "svm_passes": config.svm_passes,
            "svm_negatives": config.svm_negatives,
            "logreg_c": config.logreg_c,
            "class_weight": "balanced",
            "folds": config.folds if config.folds is not None else "auto",
            "few_rows": config.few_rows,
            "min_class": config.min_class,
            "seed": config.seed,
            "scorer": "fold_average",
            "threshold_rule": {
                "wilson_z": config.precision_z,
                "min_covered": config.min_covered,
                "every_fold": True,
                "label_demotion": True,
            },
        },
        "featuriser": config.features.to_json(),
        "n_features": n_features,
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
    oof, coef, intercept, fold_of = _out_of_fold(xf, y, labels, config)
    top, feats = confidence_inputs(oof, row_mask, chars[kept])
    predicted = np.array(labels)[top]
    correct = predicted == y
    calib = _fit_calibrator(feats, top, correct, len(labels))
    conf = _cross_fitted_confidence(feats, top, correct, len(labels), config.seed)
    threshold = pick_threshold(
        conf,
        correct,
        config.target_precision,
        z=config.precision_z,
        min_covered=config.min_covered,
        groups=(fold_of,),
    )
    demoted = [] if threshold is None else _demoted(conf, correct, top, threshold, config)
    calib[4 + np.array(demoted, dtype=np.int64)] -= DEMOTION
    keep_rows = _prune(coef, config.max_field_features)
    arrays: dict[str, npt.NDArray[Any]] = {
        f"{name}.rows": keep_rows.astype(np.int32),
        f"{name}.coef": coef[keep_rows].astype(np.float16),
        f"{name}.intercept": intercept.astype(np.float32),
        f"{name}.calib": calib.astype(np.float32),
    }
    if allowed is not None:
        arrays[f"{name}.allowed"] = allowed.astype(np.uint8)
    filled = (conf >= (threshold if threshold is not None else np.inf)) & ~np.isin(top, demoted)
    info = {
        "labels": labels,
        "class_counts": {label: int(n) for label, n in sorted(Counter(y.tolist()).items())},
        "n_train": len(kept),
        "dropped_rows": dropped_rows,
        "dropped_classes": dict(sorted(dropped.items())),
        "threshold": None if threshold is None else round(threshold, 6),
        "demoted_labels": [labels[j] for j in demoted],
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
    folds = config.folds or (5 if len(y) < config.few_rows else 3)
    return max(2, min(folds, min(Counter(y.tolist()).values())))


def _demoted(
    conf: npt.NDArray[np.float64],
    correct: npt.NDArray[Any],
    top: npt.NDArray[np.int64],
    threshold: float,
    config: TrainConfig,
) -> list[int]:
    """Labels whose held-out rows above the threshold are clearly below the target.

    The field's precision is pooled over its labels; a label that is often confused with
    another (sub-categories of one category) can sit well below the target while the others
    carry the average, and new tickets of that label then break the promise. Such a label is
    never filled: its calibrator offset is lowered by ``DEMOTION`` (confidence ~0), which every
    format-1 reader applies as is.
    """
    out = []
    for j in np.unique(top):
        mine = (top == j) & (conf >= threshold)
        n = int(mine.sum())
        if n:
            miss = float(1.0 - correct[mine].mean())
            upper = 1.0 - float(wilson_lower_bound(miss, n, config.precision_z))
            if upper < config.target_precision:
                out.append(int(j))
    return out


def _member(
    kind: str, x: Matrix, y: npt.NDArray[np.str_], labels: list[str], config: TrainConfig
) -> LinearScorer:
    c = config.logreg_c if kind == "logreg" else config.c
    return fit_member(kind, x, y, labels, c, config.seed, config.svm_passes, config.svm_negatives)


def _fit_task(
    kind: str,
    x_train: Matrix,
    y_train: npt.NDArray[np.str_],
    x_test: Matrix,
    labels: list[str],
    config: TrainConfig,
) -> tuple[npt.NDArray[np.float64], LinearScorer]:
    """One member on one fold: its scores of the held-out rows, and the model.

    BLAS runs single-threaded here, in this process or a worker alike: a different thread count
    changes float summation order, which moves the optimisers' paths and the model with ``jobs``.
    """
    with threadpool_limits(limits=1):
        model = _member(kind, x_train, y_train, labels, config)
        return model.scores(x_test), model


def _out_of_fold(
    x: Matrix, y: npt.NDArray[np.str_], labels: list[str], config: TrainConfig
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]:
    """Ensemble scores of every row from models that never saw it, the served scorer, folds.

    A member's (mean, std) over its out-of-fold scores standardises it before averaging;
    labels missing from a fold (score −1e3) are left out of those statistics. The served
    scorer is the average of the fold models (one linear model, since every member is
    linear), not a refit on all rows: its scores on new tickets are distributed like the
    out-of-fold scores the calibrator and threshold were fitted on, where a refit on 25 % more
    rows scores new tickets more confidently than the threshold assumed.
    """
    n_members = len(config.members)
    per_member = [np.zeros((x.shape[0], len(labels))) for _ in config.members]
    coef_sum = [np.zeros((x.shape[1], len(labels))) for _ in config.members]
    intercept_sum = [np.zeros(len(labels)) for _ in config.members]
    folds = StratifiedKFold(_n_folds(y, config), shuffle=True, random_state=config.seed)
    splits = list(folds.split(np.zeros(len(y)), y))
    tasks = (
        delayed(_fit_task)(kind, x[train_idx], y[train_idx], x[test_idx], labels, config)
        for train_idx, test_idx in splits
        for kind in config.members
    )
    # Results come back in task order, so the sums (and the model) do not depend on ``jobs``.
    # No memmapping (max_nbytes=None): joblib shares arrays over 1 MB as read-only memmaps,
    # and scipy/liblinear write to their inputs in NB-SVM's feature scaling.
    results = Parallel(n_jobs=config.jobs, return_as="generator", max_nbytes=None)(tasks)
    for task, (scores, model) in enumerate(results):
        fold, m = divmod(task, n_members)
        per_member[m][splits[fold][1]] = scores
        coef_sum[m] += model.coef
        intercept_sum[m] += model.intercept
    n_folds = len(splits)
    fold_of = np.zeros(x.shape[0], dtype=np.int64)
    for fold, (_, test_idx) in enumerate(splits):
        fold_of[test_idx] = fold
    oof = np.zeros((x.shape[0], len(labels)))
    coef = np.zeros((x.shape[1], len(labels)))
    intercept = np.zeros(len(labels))
    for m in range(n_members):
        real = per_member[m][per_member[m] > -1e2]
        mu, sd = float(real.mean()), float(real.std()) or 1.0
        oof += (per_member[m] - mu) / sd
        coef += coef_sum[m] / n_folds / sd
        # Folds ≤ the rarest label's rows, so with min_class ≥ 2 every label is in every
        # training fold. A single-row label (min_class 1) misses one fold: its −1e3 "absent"
        # bias keeps the average far below the rest, and it is never predicted.
        intercept += (intercept_sum[m] / n_folds - mu) / sd
    return oof / n_members, coef / n_members, intercept / n_members, fold_of


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


def _cross_fitted_confidence(
    feats: npt.NDArray[np.float64],
    top: npt.NDArray[np.int64],
    correct: npt.NDArray[Any],
    k: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """Calibrated confidence of each out-of-fold row from a calibrator fitted without it.

    The calibrator has a parameter per label; scoring the rows it was fitted on would flatter
    rare labels, and the threshold would be picked on that flattery.
    """
    conf = np.zeros(len(top))
    for fit_idx, held_idx in KFold(5, shuffle=True, random_state=seed).split(top):
        calib = _fit_calibrator(feats[fit_idx], top[fit_idx], correct[fit_idx], k)
        z = feats[held_idx] @ calib[:3] + calib[3] + calib[4:][top[held_idx]]
        conf[held_idx] = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    return conf


def split_rows(labels: Sequence[str], test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """A stratified (train, test) split of row indices (scikit-learn's, so figures compare)."""
    rows = list(range(len(labels)))
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=labels)
    return sorted(train), sorted(test)
