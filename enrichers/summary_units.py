"""The learned summary's candidate units and their features (what the scorer reads).

A raw body is cleaned as the extractive summarizer cleans it (``enrichers.text.parse_email``)
and cut into candidate units: sentences, their clauses, the segments between the desk's filler
words, forwarded subject lines and the extractive pick; each is trimmed of the desk's
leading/trailing filler n-grams and described by the language-independent ``FEATURES``.
``finish`` cleans and cuts the chosen unit. Training (``triage.learn.summary_train``) and
serving (``enrichers.summary_model.SummaryModel``) share these; numpy and the standard library
only. ``enrichers.summary_model`` re-exports every public name.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain.models import SUMMARY_MAX_CHARS
from enrichers.summary_rules import clip, compress, sentence_score
from enrichers.text import clean_title, is_greeting, is_informative_title, parse_email
from enrichers.text import split_sentences as _split_sentences

__all__ = [
    "FEATURES",
    "KINDS",
    "RateFn",
    "Unit",
    "candidate_units",
    "finish",
    "token_hash",
    "tokens",
    "trim",
    "unit_features",
]

_WORD = re.compile(r"[^\W_]+")
_CLAUSE = re.compile(r"[,;:]\s+|\s+[-–—(]\s*")
_KEY_VALUE = re.compile(r"[\w /().-]{1,30}:\s*\S")
_MAX_SENTENCES = 30
_MAX_UNITS = 160
_TARGET_CHARS = 120
KINDS = ("sentence", "clause", "segment", "subject", "extractive")
FEATURES = (
    "pos_inv", "first", "rel_pos", *(f"kind_{k}" for k in KINDS), "log_tokens", "length_gap",
    "short", "mean_rate", "max_rate", "expected_f", "oov_share", "filler_share", "question",
    "digits", "capitals", "letters", "key_value", "hand_score", "trimmed",
)  # fmt: skip


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits of any script)."""
    return _WORD.findall(text.casefold())


def token_hash(token: str) -> int:
    """The stable 32-bit key a token's statistics are stored under (CRC-32 of its UTF-8)."""
    return zlib.crc32(token.encode("utf-8"))


@dataclass(frozen=True)
class Unit:
    """One candidate: its (trimmed) text, sentence index (-1: a subject line) and kind."""

    text: str
    index: int
    kind: str
    trimmed: bool = False


# --- candidates and trimming -----------------------------------------------------------------
def trim(text: str, lead: frozenset[str], trail: frozenset[str]) -> str:
    """Drop the desk's filler n-grams (up to 3 words) at the start and end of ``text``."""
    spans = [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text)]
    lo, hi = 0, len(spans)
    for _ in range(4):
        moved = False
        for n in (3, 2, 1):
            if hi - lo > n and " ".join(s[2] for s in spans[lo : lo + n]) in lead:
                lo, moved = lo + n, True
                break
        for n in (3, 2, 1):
            if hi - lo > n and " ".join(s[2] for s in spans[hi - n : hi]) in trail:
                hi, moved = hi - n, True
                break
        if not moved:
            break
    if lo == 0 and hi == len(spans):
        return text
    if lo >= hi:
        return ""
    return text[spans[lo][0] : spans[hi - 1][1]]


def _segments(sentence: str, filler_words: frozenset[str]) -> list[str]:
    """The runs of ≥2 words between the desk's filler words (keyword strings have no commas)."""
    out: list[str] = []
    start: int | None = None
    end = 0
    count = 0
    for match in _WORD.finditer(sentence):
        if match.group().casefold() in filler_words:
            if start is not None and count >= 2:
                out.append(sentence[start:end])
            start, count = None, 0
            continue
        if start is None:
            start = match.start()
        end, count = match.end(), count + 1
    if start is not None and count >= 2 and (start > 0 or out):
        out.append(sentence[start:end])
    return out


def candidate_units(
    body: str,
    *,
    lead: frozenset[str] = frozenset(),
    trail: frozenset[str] = frozenset(),
    filler_words: frozenset[str] = frozenset(),
    extractive: str | None = None,
) -> list[Unit]:
    """Candidate units of a raw body, already trimmed, each at most once (first kind wins)."""
    email = parse_email(body)
    raw: list[tuple[str, int, str]] = []
    for subject in email.subjects:
        subject = clean_title(subject)
        if is_informative_title(subject):
            raw.append((subject, -1, "subject"))
    if extractive:
        raw.append((extractive, 0, "extractive"))
    for index, sentence in enumerate(_split_sentences(email.body)[:_MAX_SENTENCES]):
        raw.append((sentence, index, "sentence"))
        clauses = [c for c in _CLAUSE.split(sentence) if c and c.strip()]
        if len(clauses) > 1:
            raw.extend((c.strip(), index, "clause") for c in clauses)
        if filler_words:
            raw.extend((s, index, "segment") for s in _segments(sentence, filler_words))
    units: list[Unit] = []
    seen: set[str] = set()
    for text, index, kind in raw:
        cut = trim(text, lead, trail).strip(" ,;:-–—(")
        key = cut.casefold()
        if len(tokens(cut)) < 2 or key in seen or is_greeting(cut):
            continue
        seen.add(key)
        units.append(Unit(cut, index, kind, trimmed=cut != text.strip()))
        if len(units) >= _MAX_UNITS:
            break
    return units


# --- features ----------------------------------------------------------------------------------
RateFn = Callable[[Sequence[str]], tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]


def unit_features(
    units: Sequence[Unit],
    rates: RateFn,
    *,
    title_tokens: float,
    filler_words: frozenset[str],
) -> npt.NDArray[np.float64]:
    """One row of ``FEATURES`` per unit. ``rates(tokens)`` gives each token's title rate and
    whether it is known; training passes leave-one-out rates, serving the stored ones."""
    rows = np.zeros((len(units), len(FEATURES)), dtype=np.float64)
    n_sentences = max([u.index for u in units] + [0]) + 1
    for row, unit in zip(rows, units, strict=True):
        words = tokens(unit.text)
        n = max(1, len(words))
        rate, known = rates(words)
        covered = float(rate.sum())
        precision, recall = covered / n, covered / max(1.0, title_tokens)
        index = max(unit.index, 0)
        raw_words = _WORD.findall(unit.text)
        letters = sum(len(w) for w in raw_words if not w.isdigit())
        row[:] = (
            1.0 / (1.0 + index), float(index == 0), index / n_sentences,
            *(float(unit.kind == k) for k in KINDS),
            math.log1p(n), abs(math.log(n) - math.log(max(1.0, title_tokens))), float(n < 3),
            float(rate[known].mean()) if known.any() else 0.0, float(rate.max(initial=0.0)),
            2 * precision * recall / (precision + recall) if covered > 0 else 0.0,
            1.0 - float(known.mean()) if words else 1.0,
            sum(w in filler_words for w in words) / n, float("?" in unit.text),
            sum(any(c.isdigit() for c in w) for w in raw_words) / n,
            sum(w[:1].isupper() for w in raw_words[1:]) / n, letters / max(1, len(unit.text)),
            float(bool(_KEY_VALUE.match(unit.text.lower()))),
            max(-3.0, min(3.0, sentence_score(unit.text, index))), float(unit.trimmed),
        )  # fmt: skip
    return rows


def finish(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """Clean the chosen unit (the extractive rules' leading/trailing fillers) and cut it to a
    complete phrase: at a clause break within the target when one exists, else at a word."""
    text = compress(text)
    if len(text) > _TARGET_CHARS:
        ends = [m.start() for m in _CLAUSE.finditer(text, 25, _TARGET_CHARS + 1)]
        if ends:
            text = text[: ends[-1]]
    return clip(text, limit)
