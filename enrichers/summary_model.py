"""The learned summary: pick the unit (sentence, clause or segment) a desk's people would title.

Trained from (description, human short description) pairs by ``triage.learn.summary_train``;
served with numpy and the standard library only. The body is cleaned as the extractive
summarizer cleans it (greetings, signatures, quoted replies, disclaimers, markup: see
``enrichers.text.parse_email``) and cut into candidate units: sentences, their clauses, the
segments between the desk's *filler words* (words frequent in bodies but almost never in titles,
e.g. "hi", "please", "thanks" — learned, so it works in any language and on keyword strings),
forwarded subject lines and the extractive summarizer's own pick. Each unit is trimmed of the
desk's leading/trailing filler n-grams, described by language-independent features (position,
length against the desk's title length, how often its words reach titles on this desk, filler
share, digits, capitals, "?") and scored by a linear model; the best one is cleaned and cut to
a complete phrase of at most 160 characters.

The model lives inside the model directory's ``model.json`` under the key ``summary`` (see
docs/model-format.md): its arrays are an embedded ``.npz`` (base64) whose SHA-256 is checked
before ``np.load`` reads it, so a model fetched from a URL carries its summary with it.

This module holds the scorer (``SummaryModel``) and the ``LearnedSummarizer``; the candidate
units and their features live in ``enrichers.summary_units``, saving and loading in
``enrichers.summary_store`` (``SummaryModel`` inherits it); their public names are re-exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from enrichers.summary import ExtractiveSummarizer, SummaryCandidate
from enrichers.summary_store import (
    SUMMARY_FORMAT,
    SUMMARY_FORMAT_VERSION,
    SUMMARY_KEY,
    StoredSummary,
    pack_strings,
    unpack_strings,
)
from enrichers.summary_units import (
    FEATURES,
    Unit,
    candidate_units,
    finish,
    token_hash,
    tokens,
    trim,
    unit_features,
)
from enrichers.text import is_greeting

__all__ = [
    "FEATURES",
    "SUMMARY_FORMAT",
    "SUMMARY_FORMAT_VERSION",
    "SUMMARY_KEY",
    "LearnedSummarizer",
    "SummaryModel",
    "Unit",
    "candidate_units",
    "finish",
    "token_hash",
    "tokens",
    "trim",
    "unit_features",
]


class SummaryModel(StoredSummary):
    """A learned summary: token title rates, filler lists and a linear unit scorer."""

    def __init__(self, metadata: dict[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        super().__init__(metadata, arrays)
        self.weights = self.arrays["weights"].astype(np.float64)
        self.mean = self.arrays["mean"].astype(np.float64)
        self.scale = self.arrays["scale"].astype(np.float64)
        if not (len(self.weights) == len(self.mean) == len(self.scale) == len(FEATURES) + 1):
            raise ValueError(f"{len(self.weights)} weights for {len(FEATURES)} features")
        hashes, rates = self.arrays["token_hash"], self.arrays["token_rate"]
        if hashes.shape != rates.shape:
            raise ValueError("token_hash and token_rate differ in length")
        self._rate = dict(zip(hashes.tolist(), rates.astype(np.float64).tolist(), strict=True))
        self.prior = float(metadata["prior_rate"])
        self.title_tokens = float(metadata["title_tokens"])
        groups: dict[str, set[str]] = {"lead": set(), "trail": set(), "word": set()}
        for entry in unpack_strings(self.arrays["fillers"]):
            kind, _, phrase = entry.partition(":")
            groups[kind].add(phrase)
        self.lead = frozenset(groups["lead"])
        self.trail = frozenset(groups["trail"])
        self.filler_words = frozenset(groups["word"])
        self._extractive = ExtractiveSummarizer()

    @classmethod
    def build(
        cls,
        metadata: dict[str, Any],
        *,
        token_rates: Mapping[str, float],
        fillers: Mapping[str, Sequence[str]],
        weights: npt.NDArray[Any],
        mean: npt.NDArray[Any],
        scale: npt.NDArray[Any],
    ) -> SummaryModel:
        """Assemble a model from training output (token → title rate, filler lists, scorer)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "token_hash": np.array([token_hash(t) for t in token_rates], dtype=np.uint32),
            "token_rate": np.array(list(token_rates.values()), dtype=np.float16),
            "weights": np.asarray(weights, dtype=np.float32),
            "mean": np.asarray(mean, dtype=np.float32),
            "scale": np.asarray(scale, dtype=np.float32),
            "fillers": pack_strings(
                [f"{k}:{p}" for k in ("lead", "trail", "word") for p in fillers[k]]
            ),
        }
        meta = {"format": SUMMARY_FORMAT, "format_version": SUMMARY_FORMAT_VERSION, **metadata}
        meta["features"] = list(FEATURES)
        return cls(meta, arrays)

    def rates(self, words: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Each token's stored title rate (the prior when unknown) and whether it was known."""
        found = [self._rate.get(token_hash(w)) for w in words]
        known = np.array([r is not None for r in found], dtype=bool)
        rate = np.array([self.prior if r is None else r for r in found], dtype=np.float64)
        return rate, known

    def units(self, body: str) -> list[Unit]:
        """The trimmed candidate units of ``body`` (the extractive pick among them)."""
        picked = self._extractive.summarize("", body)
        return candidate_units(
            body,
            lead=self.lead,
            trail=self.trail,
            filler_words=self.filler_words,
            extractive=picked.text if picked else None,
        )

    def score(self, units: Sequence[Unit]) -> npt.NDArray[np.float64]:
        """The linear score of each unit (higher: closer to what this desk's people write)."""
        if not units:
            return np.zeros(0)
        feats = unit_features(
            units, self.rates, title_tokens=self.title_tokens, filler_words=self.filler_words
        )
        z = (feats - self.mean[:-1]) / self.scale[:-1]
        return np.asarray(z @ self.weights[:-1] + self.weights[-1], dtype=np.float64)

    def pick(self, body: str) -> tuple[Unit, str] | None:
        """The best unit and its finished text, or None when the body has no usable unit."""
        units = self.units(body)
        if not units:
            return None
        best = units[int(np.argmax(self.score(units)))]
        text = finish(best.text)
        return (best, text) if len(tokens(text)) >= 2 and not is_greeting(text) else None


class LearnedSummarizer:
    """The ``Summarizer`` of a learned model; the extractive one when it finds no unit."""

    name = "learned"

    def __init__(self, model: SummaryModel) -> None:
        self.model = model
        self._fallback = ExtractiveSummarizer()

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """The desk-style summary of ``text`` (``title`` is only used by the fallback)."""
        picked = self.model.pick(text)
        if picked is None:
            return self._fallback.summarize(title, text)
        unit, summary = picked
        where = "subject line" if unit.index < 0 else f"sentence {unit.index + 1}"
        confidence = 0.7 if unit.kind in ("subject", "extractive") else 0.6
        if summary.endswith("…"):
            confidence -= 0.1
        n_train = int(self.model.metadata.get("n_train", 0))
        detail = f"{unit.kind} of {where}, chosen by a model trained on {n_train:,} titled tickets"
        return SummaryCandidate(summary, confidence, self.name, detail)
