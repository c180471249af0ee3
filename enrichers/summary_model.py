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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from domain.errors import ConfigError
from domain.models import SUMMARY_MAX_CHARS
from enrichers.summary import (
    ExtractiveSummarizer,
    SummaryCandidate,
    clip,
    compress,
    sentence_score,
)
from enrichers.text import clean_title, is_greeting, is_informative_title, parse_email
from enrichers.text import split_sentences as _split_sentences

__all__ = [
    "FEATURES",
    "SUMMARY_FORMAT",
    "SUMMARY_FORMAT_VERSION",
    "SUMMARY_KEY",
    "LearnedSummarizer",
    "SummaryModel",
    "Unit",
    "candidate_units",
    "token_hash",
    "tokens",
    "trim",
    "unit_features",
]

SUMMARY_KEY = "summary"
SUMMARY_FORMAT = "ticket-enrichment/summary-model"
SUMMARY_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
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
_REQUIRED_ARRAYS = ("token_hash", "token_rate", "weights", "mean", "scale", "fillers")


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


# --- the model -------------------------------------------------------------------------------
def _blob(strings: Sequence[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8).copy()


def _strings(blob: npt.NDArray[Any]) -> list[str]:
    text = bytes(np.asarray(blob, dtype=np.uint8)).decode("utf-8")
    return text.split("\n") if text else []


class SummaryModel:
    """A learned summary: token title rates, filler lists and a linear unit scorer."""

    def __init__(self, metadata: dict[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.metadata = metadata
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
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
        for entry in _strings(self.arrays["fillers"]):
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
            "fillers": _blob([f"{k}:{p}" for k in ("lead", "trail", "word") for p in fillers[k]]),
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

    # --- persistence: the "summary" part of model.json -----------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The ``summary`` object of model.json: metadata plus the embedded, hashed arrays."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **self.arrays)
        raw = buffer.getvalue()
        arrays = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
        return {**self.metadata, "arrays": {**arrays, "npz_base64": base64.b64encode(raw).decode()}}

    @classmethod
    def from_json(cls, part: Any, *, where: str = MODEL_JSON) -> SummaryModel:
        """Verify and load a ``summary`` object; ``ConfigError`` says what is wrong with it."""
        if not isinstance(part, dict) or part.get("format") != SUMMARY_FORMAT:
            raise ConfigError(f"{where}: 'summary' is not a {SUMMARY_FORMAT!r} part")
        if part.get("format_version") != SUMMARY_FORMAT_VERSION:
            raise ConfigError(
                f"{where}: summary format version {part.get('format_version')!r} is not "
                f"supported (this build reads version {SUMMARY_FORMAT_VERSION}); retrain"
            )
        for key in ("prior_rate", "title_tokens", "features", "arrays"):
            if key not in part:
                raise ConfigError(f"{where}: summary: missing key {key!r}")
        if list(part["features"]) != list(FEATURES):
            raise ConfigError(f"{where}: summary: features differ from this build's; retrain")
        info = part["arrays"]
        try:
            raw = base64.b64decode(str(info["npz_base64"]), validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ConfigError(f"{where}: summary: unreadable arrays: {exc}") from exc
        if hashlib.sha256(raw).hexdigest() != info.get("sha256"):
            raise ConfigError(
                f"{where}: summary arrays do not match the SHA-256 recorded beside them "
                "(modified, truncated or from another model)"
            )
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            missing = [k for k in _REQUIRED_ARRAYS if k not in arrays]
            if missing:
                raise KeyError(", ".join(missing))
            meta = {k: v for k, v in part.items() if k != "arrays"}
            return cls(meta, arrays)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: summary: inconsistent model: {exc}") from exc

    def save(self, directory: str | Path) -> Path:
        """Add (or replace) the ``summary`` part of ``DIR/model.json``; other keys are kept."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        path = target / MODEL_JSON
        document: dict[str, Any] = {}
        if path.is_file():
            document = json.loads(path.read_text(encoding="utf-8"))
        document[SUMMARY_KEY] = self.to_json()
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return target

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SummaryModel | None:
        """The summary part of a loaded model.json (e.g. ``TextModel.metadata``), if any."""
        part = metadata.get(SUMMARY_KEY)
        return None if part is None else cls.from_json(part)

    @classmethod
    def load(cls, directory: str | Path) -> SummaryModel | None:
        """The summary part of ``DIR/model.json``, or None when the directory has none."""
        path = Path(directory) / MODEL_JSON
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"model directory {directory}: {MODEL_JSON} is missing") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable {MODEL_JSON}: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: not a JSON object")
        part = document.get(SUMMARY_KEY)
        return None if part is None else cls.from_json(part, where=str(path))


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
