"""Keep a learned summary only where it beats the extractive one on the desk's own tickets.

Before ``train --summary`` stores a summary part, a share of the desk's (body, title) pairs is
held out (by a hash of the body, so the split is the same on every run), a model is trained on
the rest, and both summaries are scored against the held-out titles (ROUGE-L F1). A learned
summary that does not beat the extractive one there is not stored: the desk keeps the
extractive summary, so a learned one is never worse than what it replaces on that desk's data.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from enrichers.summary import ExtractiveSummarizer
from enrichers.summary_model import LearnedSummarizer, tokens
from triage.learn.summary_train import SummaryTrainConfig, rouge_l, train_summary

__all__ = ["HoldoutCheck", "holdout_check"]


@dataclass(frozen=True)
class HoldoutCheck:
    """Mean ROUGE-L of each summary on the held-out pairs, and how many there were."""

    learned: float
    extractive: float
    held_out: int

    @property
    def keep(self) -> bool:
        """Whether the learned summary beats the extractive one on the held-out pairs."""
        return self.learned > self.extractive


def holdout_check(
    bodies: Sequence[str],
    titles: Sequence[str],
    *,
    share: float = 0.2,
    config: SummaryTrainConfig | None = None,
) -> HoldoutCheck:
    """Train on ``1 - share`` of the pairs, score both summaries on the rest (see module)."""
    train_b: list[str] = []
    train_t: list[str] = []
    test: list[tuple[str, str]] = []
    cut = int(share * 1000)
    for body, title in zip(bodies, titles, strict=True):
        bucket = int(hashlib.sha256(body.encode()).hexdigest()[:8], 16) % 1000
        if bucket < cut:
            test.append((body, title))
        else:
            train_b.append(body)
            train_t.append(title)
    model = train_summary(train_b, train_t, config=config)
    learned, extractive = LearnedSummarizer(model), ExtractiveSummarizer()
    ours: list[float] = []
    theirs: list[float] = []
    for body, title in test:
        if not body.strip() or not title.strip():
            continue
        reference = tokens(title)
        for summarizer, scores in ((learned, ours), (extractive, theirs)):
            picked = summarizer.summarize("", body)
            scores.append(rouge_l(tokens(picked.text), reference) if picked else 0.0)
    if not ours:
        return HoldoutCheck(0.0, 0.0, 0)
    return HoldoutCheck(statistics.fmean(ours), statistics.fmean(theirs), len(ours))
