"""Training the learned summary from (description, human short description) pairs.

1. Token statistics of the desk: for each word, how often it reaches the title when it is in
   the body (``title rate``, smoothed towards the desk's average), kept for words seen in at
   least ``min_df`` bodies and stored hashed.
2. Filler: words frequent in bodies whose title rate is a small fraction of the average
   ("hi", "please", "thanks", "hej", "bitte" — whatever this desk writes), and the n-grams of
   up to three such words that open or close sentences ("could you please", "thanks in
   advance"). They split keyword strings into segments and are trimmed off candidate units.
3. Every candidate unit of every training body (``enrichers.summary_model.candidate_units``)
   is labelled by the ROUGE-L F1 of its finished text against the human title and described
   by ``unit_features`` with *leave-one-out* token rates (the ticket's own title does not
   count towards its own features, so the weights are not fitted to a leak).
4. A ridge regression on ticket-centred features and labels (only the order of units within a
   ticket matters; every ticket weighs the same) gives the linear scorer.

numpy only; the result is an ``enrichers.summary_model.SummaryModel``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from domain.errors import ConfigError
from enrichers.summary import ExtractiveSummarizer
from enrichers.summary_model import (
    FEATURES,
    SummaryModel,
    candidate_units,
    finish,
    tokens,
    unit_features,
)
from enrichers.text import clean_title, parse_email, split_sentences

__all__ = ["SummaryTrainConfig", "rouge_l", "train_summary"]

log = logging.getLogger(__name__)
_MAX_BODY_CHARS = 20_000


@dataclass(frozen=True)
class SummaryTrainConfig:
    """Knobs of summary training; recorded in the summary part of model.json."""

    min_df: int = 2  # a word's rate is kept when it is in at least this many bodies
    smoothing: float = 2.0  # pseudo-count pulling a rate towards the desk's average
    filler_df: float = 0.01  # filler words: in at least this share of bodies (and ≥ 5)
    filler_ratio: float = 0.2  # ... with a title rate below this share of the average
    ridge: float = 1.0
    min_pairs: int = 20


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence)."""
    if not candidate or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for token in candidate:
        current = [0]
        for j, other in enumerate(reference, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[-1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


@dataclass
class _Stats:
    df: Counter[str]
    both: Counter[str]
    prior: float


def _word_sets(bodies: Sequence[str], titles: Sequence[str]) -> list[tuple[set[str], set[str]]]:
    out = []
    for body, title in zip(bodies, titles, strict=True):
        email = parse_email(body)
        words = set(tokens(email.body)) | {w for s in email.subjects for w in tokens(s)}
        out.append((words, set(tokens(title))))
    return out


def _stats(sets: Sequence[tuple[set[str], set[str]]]) -> _Stats:
    df: Counter[str] = Counter()
    both: Counter[str] = Counter()
    for body, title in sets:
        df.update(body)
        both.update(body & title)
    prior = sum(both.values()) / max(1, sum(df.values()))
    return _Stats(df, both, prior)


def _fillers(
    bodies: Sequence[str], stats: _Stats, config: SummaryTrainConfig
) -> dict[str, list[str]]:
    """Filler words, and the n-grams of filler words that open or close sentences."""
    n = len(bodies)
    floor = max(5.0, config.filler_df * n)

    def rate(word: str) -> float:
        return (stats.both[word] + config.smoothing * stats.prior) / (
            stats.df[word] + config.smoothing
        )

    words = sorted(
        w
        for w, df in stats.df.items()
        if df >= floor and rate(w) < config.filler_ratio * stats.prior
    )
    filler = set(words)
    lead: Counter[str] = Counter()
    trail: Counter[str] = Counter()
    for body in bodies:
        seen_lead: set[str] = set()
        seen_trail: set[str] = set()
        for sentence in split_sentences(parse_email(body).body)[:30]:
            toks = tokens(sentence)
            for k in (1, 2, 3):
                if len(toks) > k:
                    seen_lead.add(" ".join(toks[:k]))
                    seen_trail.add(" ".join(toks[-k:]))
        lead.update(seen_lead)
        trail.update(seen_trail)
    gram_floor = max(3.0, config.filler_df * n / 2)

    def is_filler(gram: str, count: int) -> bool:
        return count >= gram_floor and all(w in filler for w in gram.split())

    return {
        "word": words,
        "lead": sorted(g for g, c in lead.items() if is_filler(g, c)),
        "trail": sorted(g for g, c in trail.items() if is_filler(g, c)),
    }


def _fit(
    blocks: Sequence[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]], ridge: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Ridge regression of ticket-centred labels on ticket-centred standardised features."""
    x_all = np.vstack([x for x, _ in blocks])
    mean = x_all.mean(axis=0)
    scale = x_all.std(axis=0)
    scale[scale < 1e-9] = 1.0
    xs, ys, ws = [], [], []
    for x, y in blocks:
        z = (x - mean) / scale
        xs.append(z - z.mean(axis=0))
        ys.append(y - y.mean())
        ws.append(np.full(len(y), 1.0 / len(y)))
    x_c, y_c, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    gram = (x_c * w[:, None]).T @ x_c + ridge / len(blocks) * np.eye(x_c.shape[1])
    coef = np.linalg.solve(gram, (x_c * w[:, None]).T @ y_c)
    weights = np.append(coef, 0.0)  # ticket-centred: a bias would not change any choice
    return weights, np.append(mean, 0.0), np.append(scale, 1.0)


def train_summary(
    bodies: Sequence[str],
    titles: Sequence[str],
    *,
    source: str = "",
    config: SummaryTrainConfig | None = None,
) -> SummaryModel:
    """Learn this desk's summary from bodies and the titles its people wrote for them.

    Rows with an empty body or title are skipped; ``ConfigError`` when fewer than
    ``config.min_pairs`` pairs remain.
    """
    cfg = config or SummaryTrainConfig()
    pairs = [
        (b[:_MAX_BODY_CHARS], clean_title(t))
        for b, t in zip(bodies, titles, strict=True)
        if b and b.strip() and t and clean_title(t).strip()
    ]
    if len(pairs) < cfg.min_pairs:
        raise ConfigError(
            f"summary: {len(pairs)} (description, title) pairs; at least {cfg.min_pairs} needed"
        )
    texts = [b for b, _ in pairs]
    sets = _word_sets(texts, [t for _, t in pairs])
    stats = _stats(sets)
    fillers = _fillers(texts, stats, cfg)
    lead, trail = frozenset(fillers["lead"]), frozenset(fillers["trail"])
    words = frozenset(fillers["word"])
    title_tokens = float(np.median([len(tokens(t)) for _, t in pairs]))
    extractive = ExtractiveSummarizer()
    alpha, prior = cfg.smoothing, stats.prior
    blocks = []
    best_scores = []
    for (body, title), (own_body, own_title) in zip(pairs, sets, strict=True):
        picked = extractive.summarize("", body)
        units = candidate_units(
            body,
            lead=lead,
            trail=trail,
            filler_words=words,
            extractive=picked.text if picked else None,
        )
        if len(units) < 2:
            continue

        def loo(ws: Sequence[str], ob: set[str] = own_body, ot: set[str] = own_title) -> Any:
            df = np.array([stats.df[w] - (w in ob) for w in ws], dtype=np.float64)
            both = np.array([stats.both[w] - (w in ob and w in ot) for w in ws], dtype=np.float64)
            known = df >= cfg.min_df
            rate = np.where(known, (both + alpha * prior) / (df + alpha), prior)
            return rate, known

        ref = tokens(title)
        labels = np.array([rouge_l(tokens(finish(u.text)), ref) for u in units])
        best_scores.append(float(labels.max()))
        feats = unit_features(units, loo, title_tokens=title_tokens, filler_words=words)
        blocks.append((feats, labels))
    if not blocks:
        raise ConfigError("summary: no training body has two candidate sentences")
    weights, mean, scale = _fit(blocks, cfg.ridge)
    rates = {
        w: (stats.both[w] + alpha * prior) / (df + alpha)
        for w, df in sorted(stats.df.items())
        if df >= cfg.min_df
    }
    metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "n_train": len(pairs),
        "n_fitted": len(blocks),
        "prior_rate": prior,
        "title_tokens": title_tokens,
        "n_filler": {k: len(v) for k, v in fillers.items()},
        "config": asdict(cfg),
        "train_ceiling_rouge_l": round(float(np.mean(best_scores)), 4),
    }
    log.info(
        "summary model: %d pairs, %d rated words, %d features",
        len(pairs),
        len(rates),
        len(FEATURES),
    )
    return SummaryModel.build(
        metadata, token_rates=rates, fillers=fillers, weights=weights, mean=mean, scale=scale
    )
