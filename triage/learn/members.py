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

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from enrichers.features import BLOCKS, FeatureConfig, Vectoriser, _char_grams, _split

__all__ = ["MEMBERS", "LinearScorer", "fit_features", "fit_member"]

MEMBERS = ("svm", "nbsvm", "logreg")
Matrix = Any  # scipy.sparse.csr_matrix (untyped)
Floats = npt.NDArray[np.float64]
_WIDTH = 1 << 31  # bigram code = first word id · _WIDTH + second word id


class LinearScorer:
    """Weights (features × labels) and intercepts over a fixed, sorted label list."""

    def __init__(self, coef: Floats, intercept: Floats) -> None:
        self.coef = coef
        self.intercept = intercept

    def scores(self, x: Matrix) -> Floats:
        """Scores (rows × labels)."""
        return np.asarray(x @ self.coef, dtype=np.float64) + self.intercept


def fit_member(
    kind: str,
    x: Matrix,
    y: npt.NDArray[np.str_],
    labels: Sequence[str],
    c: float,
    seed: int,
    passes: int = 1000,
    negatives: int | None = None,
) -> LinearScorer:
    """Fit one member; labels absent from ``y`` (a small fold) get a score far below the rest.

    ``passes`` caps the SVM's coordinate-descent passes over the data (``svm`` only). A fixed
    small number keeps its cost linear in rows × labels × non-zeros; run to convergence, the
    dual solver needs more passes the more rows a hard problem has.

    ``negatives`` (``svm`` only; None: all rows): each label's one-vs-rest problem keeps all
    its rows and a random sample of at least ``negatives`` (and at least as many as its own
    rows) of the other rows, weighted up by the inverse sampling rate (see ``_svm_sampled``).
    """
    present = sorted(set(y.tolist()))
    if kind == "svm" and negatives is not None:
        coef, intercept = _svm_sampled(x, y, present, c, seed, passes, negatives)
    elif kind == "svm":
        coef, intercept = _svm(x, y, c, seed, passes)
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


def _svm(
    x: Matrix, y: npt.NDArray[np.str_], c: float, seed: int, passes: int = 1000
) -> tuple[Floats, Floats]:
    model = LinearSVC(C=c, class_weight="balanced", random_state=seed, max_iter=passes)
    with warnings.catch_warnings():
        # Stopping after ``passes`` is the point, not a failure (see ``fit_member``).
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef = np.asarray(model.coef_, dtype=np.float64).T
    return _two_columns(coef, np.asarray(model.intercept_, dtype=np.float64))


def _svm_sampled(
    x: Matrix,
    y: npt.NDArray[np.str_],
    present: list[str],
    c: float,
    seed: int,
    passes: int,
    negatives: int,
) -> tuple[Floats, Floats]:
    """One-vs-rest SVM, each label on its rows plus a weighted sample of the other rows.

    One-vs-rest over all rows costs rows × labels per pass, and a growing desk has both more
    rows and more labels that reach ``min_class``. Here label j sees its ``n_j`` rows and
    ``m_j = max(negatives, n_j)`` of the others (all of them if fewer than 2·m_j: then it is
    exactly the full problem, and when that holds for every label the
    multi-class ``LinearSVC`` is fitted as without sampling), each sampled row weighted up so the sample stands for the rows it was drawn
    from. A second fit adds the hard negatives: up to ``m_j`` unsampled rows that the first fit
    scores inside its margin (highest first), each at weight 1, the sample then standing for
    the rest. Without them quality fell clearly on a 20k-row desk (docs/classification.md).
    Per label: two fits of at most n_j + 2·m_j rows and one product over the unsampled rows.
    Weights as ``LinearSVC(class_weight="balanced")`` one-vs-rest: a label's own rows get
    rows / (labels · n_j), the others 1.
    """
    n, k = len(y), len(present)
    counts = np.array([int((y == label).sum()) for label in present])
    if (2 * np.maximum(negatives, counts) >= n - counts).all():
        # Nothing to sample: liblinear's own one-vs-rest converts the data once, not per label.
        return _svm(x, y, c, seed, passes)
    coef = np.zeros((x.shape[1], k))
    intercept = np.zeros(k)
    x = sparse.csr_matrix(x, dtype=np.float64)
    for j, label in enumerate(present):
        mine = np.nonzero(y == label)[0]
        others = np.nonzero(y != label)[0]
        take = max(negatives, len(mine))
        if 2 * take >= len(others):  # sample + hard negatives would cost the full problem
            coef[:, j], intercept[j] = _binary_svm(x, mine, others, [], n / k, c, seed, passes)
            continue
        rng = np.random.default_rng([seed, j])
        sample = np.sort(rng.choice(others, size=take, replace=False))
        w, b = _binary_svm(x, mine, sample, [], n / k, c, seed, passes)
        # Hard negatives: unsampled rows inside the margin of the sampled model (where the
        # full problem's hinge loss is not zero) join the fit at their own weight of 1.
        rest = np.setdiff1d(others, sample, assume_unique=True)
        score = np.asarray(x[rest] @ w).ravel() + b
        inside = np.nonzero(score > -1.0)[0]
        # At most ``take`` of them, the highest scored: the cost per label stays bounded.
        hard = np.sort(rest[inside[np.argsort(-score[inside], kind="stable")[:take]]])
        coef[:, j], intercept[j] = _binary_svm(
            x, mine, sample, hard, n / k, c, seed, passes, represents=len(rest) - len(hard)
        )
    return coef, intercept


def _binary_svm(
    x: Matrix,
    mine: npt.NDArray[np.int64],
    sample: npt.NDArray[np.int64],
    hard: Any,
    balance: float,
    c: float,
    seed: int,
    passes: int,
    represents: int = 0,
) -> tuple[Floats, float]:
    """A label's SVM on its rows (weight ``balance / n_j``), ``hard`` others (weight 1) and
    ``sample`` others, weighted so that they stand for ``represents`` + their own count rows."""
    hard = np.asarray(hard, dtype=np.int64)
    rows = np.concatenate([mine, sample, hard])
    target = np.r_[np.ones(len(mine)), np.zeros(len(sample) + len(hard))].astype(np.int64)
    weight = np.r_[
        np.full(len(mine), balance / len(mine)),
        np.full(len(sample), (represents + len(sample)) / len(sample)),
        np.ones(len(hard)),
    ]
    order = np.argsort(rows, kind="stable")
    model = LinearSVC(C=c, random_state=seed, max_iter=passes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[rows[order]], target[order], sample_weight=weight[order])
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


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


# -- features at training time ---------------------------------------------------------------


def fit_features(texts: Sequence[str], config: FeatureConfig) -> tuple[Vectoriser, Matrix]:
    """``Vectoriser.fit(texts, config)`` and its ``transform(texts)`` (as CSR), computed faster.

    The same vocabulary, IDF and values as the serving ``Vectoriser`` (``tests/learn`` holds
    them equal), but only words are looked up in Python: bigrams are pairs of word ids found
    with numpy, and each distinct word's character n-grams are built once and summed into the
    documents by one sparse product. Rebuilding every key of every text in Python twice (fit,
    then transform) was over half of training time at 20k tickets.
    """
    n = len(texts)
    words: dict[str, int] = {}
    titles: dict[str, int] = {}
    ids: list[list[int]] = [[], []]
    lengths: list[list[int]] = [[], []]
    for text in texts:
        whole, title = _split(text, config)
        for b, (vocab, tokens) in enumerate(((words, whole), (titles, title))):
            ids[b].extend([vocab.setdefault(w, len(vocab)) for w in tokens])
            lengths[b].append(len(tokens))
    word_list, title_list = list(words), list(titles)
    blocks: list[Matrix] = []
    namers: list[Callable[[npt.NDArray[np.int64]], list[str]]] = []
    for b, (prefix, pair_prefix, names) in enumerate(
        (("w:", "b:", word_list), ("t:", "u:", title_list))
    ):
        token = np.array(ids[b], dtype=np.int64)
        doc = np.repeat(np.arange(n), lengths[b])
        blocks.append(_counts(doc, token, (n, len(names))))
        same = doc[1:] == doc[:-1]  # a bigram never spans two texts
        codes = token[:-1][same] * _WIDTH + token[1:][same]
        uniq, inverse = np.unique(codes, return_inverse=True)
        blocks.append(_counts(doc[1:][same], inverse, (n, len(uniq))))
        namers.append(functools.partial(_unigram_keys, prefix, names))
        namers.append(functools.partial(_bigram_keys, pair_prefix, names, uniq))
    grams: dict[str, int] = {}
    g_cols: list[int] = []
    g_len: list[int] = []
    for word in word_list:
        found = _char_grams(word, config.char_min, config.char_max)
        g_cols.extend([grams.setdefault(g, len(grams)) for g in found])
        g_len.append(len(found))
    gram_rows = np.repeat(np.arange(len(word_list)), g_len)
    of_word = _counts(gram_rows, np.array(g_cols, dtype=np.int64), (len(word_list), len(grams)))
    gram_list = list(grams)  # already "c:…"
    # Block order as the vocabulary's key prefixes: w, b, c, t, u (only grouping matters).
    blocks.insert(2, blocks[0] @ of_word)
    namers.insert(2, functools.partial(_unigram_keys, "", gram_list))
    full = sparse.hstack(blocks, format="csr")
    offsets = np.cumsum([0] + [m.shape[1] for m in blocks])

    def keys(cols: npt.NDArray[np.int64]) -> list[str]:
        out: list[str] = [""] * len(cols)
        block_of = np.searchsorted(offsets, cols, side="right") - 1
        for k, namer in enumerate(namers):
            where = np.nonzero(block_of == k)[0]
            for pos, name in zip(where, namer(cols[where] - offsets[k]), strict=True):
                out[pos] = name
        return out

    df = np.diff(full.tocsc().indptr)
    chosen = _top_columns(df, config.min_df, config.max_features, keys)
    named = sorted(zip(keys(chosen), chosen.tolist(), strict=True))
    vocabulary = [k for k, _ in named]
    columns = np.array([c for _, c in named], dtype=np.int64)
    idf = (np.log((1.0 + n) / (1.0 + df[columns].astype(np.float64))) + 1.0).astype(np.float32)
    x = full[:, columns].tocsr()
    vectoriser = Vectoriser(config, vocabulary, idf)
    values = (1.0 + np.log(x.data.astype(np.float64))) * idf[x.indices]
    doc = np.repeat(np.arange(n), np.diff(x.indptr))
    segment = doc * len(BLOCKS) + vectoriser.blocks[x.indices]
    norms = np.sqrt(np.bincount(segment, weights=values**2, minlength=n * len(BLOCKS)))
    x.data = (values / np.maximum(norms[segment], 1e-12)).astype(np.float32)
    return vectoriser, x


def _unigram_keys(prefix: str, names: list[str], cols: npt.NDArray[np.int64]) -> list[str]:
    return [prefix + names[i] for i in cols]


def _bigram_keys(
    prefix: str, names: list[str], codes: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]
) -> list[str]:
    first, second = np.divmod(codes[cols], _WIDTH)
    return [f"{prefix}{names[i]} {names[j]}" for i, j in zip(first, second, strict=True)]


def _counts(rows: npt.NDArray[np.int64], cols: Any, shape: tuple[int, int]) -> Matrix:
    """Occurrence counts as CSR (the COO → CSR conversion adds up repeated (row, col) pairs)."""
    ones = np.ones(len(rows), dtype=np.float64)
    return sparse.coo_matrix((ones, (rows, cols)), shape=shape).tocsr()


def _top_columns(
    df: npt.NDArray[np.int64],
    min_df: int,
    limit: int,
    keys: Callable[[npt.NDArray[np.int64]], list[str]],
) -> npt.NDArray[np.int64]:
    """Columns with df ≥ min_df, the ``limit`` most frequent; ties broken by key as in fit."""
    candidates = np.nonzero(df >= min_df)[0]
    if len(candidates) <= limit:
        return candidates
    cut = np.sort(df[candidates])[::-1][limit - 1]
    above = candidates[df[candidates] > cut]
    ties = candidates[df[candidates] == cut]
    ranked = sorted(zip(keys(ties), ties.tolist(), strict=True))[: limit - len(above)]
    return np.concatenate([above, np.array([c for _, c in ranked], dtype=np.int64)])
