"""The summary enricher: a short description (≤160 chars) for tickets that arrive without one.

The enricher prefers a good human title (cleaned of "RE:"/"FW:" noise). Otherwise it asks an
injected ``Summarizer``; the default ``ExtractiveSummarizer`` is pure and fast: it strips e-mail
boilerplate, scores the remaining sentences (position, problem/request words in English, Danish,
Swedish and German, length, noise) and compresses the best one to a compact phrase.
An abstractive summarizer (``enrichers.azure_openai``) fits behind the same protocol, usually
wrapped in ``FallbackSummarizer(primary, ExtractiveSummarizer())``.

The extractive rules (compression, clipping, sentence scoring and the cue vocabularies) live in
``enrichers.summary_rules``; ``clip``, ``compress`` and ``sentence_score`` are re-exported here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from domain.errors import AuthError, EnrichmentError, ThrottledError
from domain.models import SUMMARY_MAX_CHARS, Suggestion, Ticket
from domain.sanitize import sanitize_value
from enrichers.summary_rules import (
    ELLIPSIS,
    SUBJECT_BONUS,
    WORDS,
    ScoredSentence,
    clip,
    compress,
    focus,
    score_sentence,
    sentence_score,
)
from enrichers.text import clean_title, is_informative_title, parse_email, split_sentences

if TYPE_CHECKING:
    from enrichers.summary_model import SummaryModel

__all__ = [
    "ExtractiveSummarizer",
    "FallbackSummarizer",
    "Summarizer",
    "SummaryCandidate",
    "SummaryEnricher",
    "clip",
    "compress",
    "sentence_score",
]

log = logging.getLogger(__name__)

TITLE_CONFIDENCE = 0.95
SUBJECT_CONFIDENCE = 0.8


@dataclass(frozen=True)
class SummaryCandidate:
    """A proposed short description, how sure we are of it, and how it was made (no ticket text)."""

    text: str
    confidence: float
    method: str
    detail: str = ""


@runtime_checkable
class Summarizer(Protocol):
    """Turns a (possibly empty) title and a raw description into a short description, or None."""

    name: str

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """Return a candidate of at most SUMMARY_MAX_CHARS characters, or None to abstain."""
        ...


class ExtractiveSummarizer:
    """Picks and compresses the most ticket-like sentence of the cleaned e-mail. Pure and fast."""

    name = "extractive"

    def __init__(self, *, target_chars: int = 100, max_sentences: int = 30) -> None:
        self.target_chars = min(target_chars, SUMMARY_MAX_CHARS)
        self.max_sentences = max_sentences

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """Return the best sentence of ``text`` as a short description, or None if too little."""
        email = parse_email(text)
        sentences = split_sentences(email.body)[: self.max_sentences]
        content_words = sum(len(WORDS.findall(s)) for s in sentences)
        hint = frozenset(w.lower() for w in WORDS.findall(clean_title(title)) if len(w) > 2)
        scored = [score_sentence(s, i, hint) for i, s in enumerate(sentences)]
        subjects = [clean_title(s) for s in email.subjects]
        scored += [
            ScoredSentence(score_sentence(s, 0, hint).score + SUBJECT_BONUS, -1, s, None)
            for s in subjects
            if is_informative_title(s)
        ]
        if not scored or (content_words < 3 and not subjects):
            return None
        best = max(scored, key=lambda c: c.score)
        summary = clip(compress(focus(best, self.target_chars)))
        if len(WORDS.findall(summary)) < 2 or best.score < -1.0:
            return None
        return SummaryCandidate(
            text=summary,
            confidence=_confidence(best, content_words, summary),
            method=self.name,
            detail=_detail(best, len(sentences)),
        )


def _confidence(best: ScoredSentence, content_words: int, summary: str) -> float:
    """More usable text and a clear problem/request sentence → higher; truncation → lower."""
    if best.index < 0:  # a forwarded e-mail's subject: a person's own title
        return SUBJECT_CONFIDENCE
    strong = best.cue is not None and best.cue.kind != "weak"
    confidence = 0.45 + min(0.15, content_words / 100) + (0.15 if strong else 0.0)
    if summary.endswith(ELLIPSIS):
        confidence -= 0.1
    if best.score < 0.5:
        confidence -= 0.15
    return round(max(0.1, min(0.85, confidence)), 2)


def _detail(best: ScoredSentence, total: int) -> str:
    """A reason that names the sentence position and cue word (a fixed vocabulary, not text)."""
    if best.index < 0:
        return "subject line of a forwarded e-mail in the description"
    cue = f", cue '{best.cue.word}'" if best.cue else ""
    return f"sentence {best.index + 1} of {total} of the cleaned e-mail{cue}"


# --- composition -------------------------------------------------------------------------------
class FallbackSummarizer:
    """Tries ``primary`` (e.g. a remote LLM); on an error or abstention uses ``fallback``.

    After a 429 (or an auth failure, which will not fix itself quickly) the primary is skipped
    for a cool-down, so a backfill does not hammer a throttled endpoint ticket after ticket.
    """

    def __init__(
        self,
        primary: Summarizer,
        fallback: Summarizer,
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle_cooldown_s: float = 30.0,
        auth_cooldown_s: float = 300.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}+{fallback.name}"
        self._clock = clock
        self._throttle_cooldown_s = throttle_cooldown_s
        self._auth_cooldown_s = auth_cooldown_s
        self._skip_until = -math.inf

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """The primary's candidate, else the fallback's."""
        if self._clock() >= self._skip_until:
            try:
                candidate = self.primary.summarize(title, text)
            except EnrichmentError as exc:
                self._note_failure(exc)
            else:
                if candidate is not None:
                    return candidate
        return self.fallback.summarize(title, text)

    def _note_failure(self, exc: EnrichmentError) -> None:
        """Log the failure (type and status only) and start a cool-down where one helps."""
        cooldown = 0.0
        if isinstance(exc, ThrottledError):
            cooldown = exc.retry_after_s or self._throttle_cooldown_s
        elif isinstance(exc, AuthError):
            cooldown = self._auth_cooldown_s
        if cooldown:
            self._skip_until = self._clock() + cooldown
        log.warning(
            "summarizer %s failed (%s: %s); using %s, primary paused %.0f s",
            self.primary.name,
            type(exc).__name__,
            getattr(exc, "status_code", None),
            self.fallback.name,
            cooldown,
        )


class SummaryEnricher:
    """Suggests ``summary``: the cleaned human title if it is informative, else a summary.

    Without a ``summarizer`` it uses the learned summary of ``model`` (an
    ``enrichers.summary_model.SummaryModel`` trained on the desk's own titles) when given,
    else the extractive one.
    """

    def __init__(
        self,
        summarizer: Summarizer | None = None,
        *,
        model: SummaryModel | None = None,
        name: str = "summary",
    ) -> None:
        if summarizer is None and model is not None:
            from enrichers.summary_model import LearnedSummarizer

            summarizer = LearnedSummarizer(model)
        self.summarizer: Summarizer = summarizer or ExtractiveSummarizer()
        self.name = name

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str]:
        """Why no summary, without running the summarizer again (it may be a remote model)."""
        title = sanitize_value(clean_title(ticket.title), max_chars=SUMMARY_MAX_CHARS)
        if is_informative_title(title):
            return {}  # the title is the summary: enrich never abstains here
        if not ticket.description.strip():
            what = "no title and" if not ticket.title.strip() else "an uninformative title and"
            return {"summary": f"{what} no description to summarise"}
        return {
            "summary": f"{self.summarizer.name} found too little usable text "
            "(greetings, signatures, quotes and markup are not summarised)"
        }

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        """One summary suggestion, or nothing when there is too little text."""
        # A title that is all markup ("<img src=x onerror=...>") says nothing: summarise instead.
        title = sanitize_value(clean_title(ticket.title), max_chars=SUMMARY_MAX_CHARS)
        candidate: SummaryCandidate | None
        if is_informative_title(title):
            candidate = SummaryCandidate(
                title, TITLE_CONFIDENCE, "title", "the ticket's own title, cleaned"
            )
        else:
            candidate = self.summarizer.summarize(ticket.title, ticket.description)
        # The value is what would be written: no markup, no control chars, no note prefix.
        value = sanitize_value(candidate.text, max_chars=SUMMARY_MAX_CHARS) if candidate else ""
        if candidate is None or not value:
            return []
        reason = f"{candidate.method}: {candidate.detail}" if candidate.detail else candidate.method
        return [
            Suggestion(
                field="summary",
                value=value,
                confidence=max(0.0, min(1.0, candidate.confidence)),
                reason=reason[:300],
                source=self.name,
            )
        ]
