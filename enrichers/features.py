"""Text → sparse TF-IDF vectors, identical at training and serving time (numpy + stdlib only).

A ticket text is the title line followed by the body (``Ticket.text``). It becomes three
feature blocks, each sublinear-TF × IDF weighted and L2-normalised on its own:

* ``word``: word unigrams and bigrams of the whole text (``w:`` / ``b:`` keys);
* ``char``: character n-grams inside word boundaries (``c:``; like scikit-learn's ``char_wb``),
  which carry Danish/Swedish/German compounds and typos that whole words miss;
* ``title``: word unigrams and bigrams of the first line only (``t:`` / ``u:``).

Text is NFKD accent-folded (æ→ae, ø→o, ß→ss) and lowercased first, so "Netværk" and
"netvaerk" meet. The vocabulary is stored with the model: lookups are plain dict hits, so no
salted ``hash()`` is involved and vectors are reproducible across processes.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCKS", "FeatureConfig", "SparseRows", "Vectoriser", "analyse", "normalise"]

BLOCKS = ("word", "char", "title")
_BLOCK_OF_PREFIX = {"w": 0, "b": 0, "c": 1, "t": 2, "u": 2}
_WORD = re.compile(r"[^\W_]+")
_FOLD = str.maketrans({"æ": "ae", "ø": "o", "ß": "ss", "đ": "d", "ł": "l", "þ": "th", "œ": "oe"})
_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class FeatureConfig:
    """How text becomes features; stored in model.json so serving rebuilds the same vectors."""

    char_min: int = 2
    char_max: int = 5
    title_features: bool = True
    min_df: int = 2
    max_features: int = 120_000
    max_chars: int = 5_000
    clean_email: bool = False

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureConfig:
        """Rebuild a config; unknown keys raise ``TypeError`` (caller turns it into ConfigError)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TypeError(f"unknown featuriser keys: {sorted(unknown)}")
        return cls(**data)


def normalise(text: str, *, max_chars: int = 5_000, clean_email: bool = False) -> str:
    """Accent-fold, lowercase and cut a text; optionally strip e-mail boilerplate first."""
    text = text[: max_chars * 2]
    if clean_email:
        from enrichers.text import clean_email_text

        text = clean_email_text(text)
    text = text.lower().translate(_FOLD)
    text = unicodedata.normalize("NFKD", text)
    if not text.isascii():
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text[:max_chars]


def _split(text: str, config: FeatureConfig) -> tuple[list[str], list[str]]:
    """(words of the whole text, words of the title line)."""
    text = text.strip()
    title = text.split("\n", 1)[0] if config.title_features else ""
    norm = normalise(text, max_chars=config.max_chars, clean_email=config.clean_email)
    words = _WORD.findall(norm)
    title_words = _WORD.findall(normalise(title, max_chars=300)) if title else []
    return words, title_words


def _char_grams(word: str, lo: int, hi: int) -> list[str]:
    padded = f" {word} "
    size = len(padded)
    return [
        "c:" + padded[i : i + n] for n in range(lo, hi + 1) for i in range(max(size - n + 1, 0))
    ]


def _word_keys(words: list[str], uni: str, bi: str) -> list[str]:
    keys = [uni + w for w in words]
    keys.extend(f"{bi}{a} {b}" for a, b in itertools.pairwise(words))
    return keys


def analyse(text: str, config: FeatureConfig) -> list[str]:
    """Every feature key of one text, with repeats (training builds the vocabulary from this)."""
    words, title_words = _split(text, config)
    keys = _word_keys(words, "w:", "b:")
    keys.extend(_word_keys(title_words, "t:", "u:"))
    for word in words:
        keys.extend(_char_grams(word, config.char_min, config.char_max))
    return keys


@dataclass(frozen=True)
class SparseRows:
    """A CSR matrix as plain arrays (``scipy.sparse.csr_matrix((data, indices, indptr))``)."""

    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int32]
    data: npt.NDArray[np.float32]
    n_features: int


class Vectoriser:
    """Maps texts to L2-normalised TF-IDF rows over a fixed vocabulary."""

    def __init__(
        self,
        config: FeatureConfig,
        vocabulary: Sequence[str],
        idf: npt.NDArray[np.float32],
    ) -> None:
        self.config = config
        self.vocabulary = list(vocabulary)
        self.index = {key: i for i, key in enumerate(self.vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float32)
        self.blocks = np.array([_BLOCK_OF_PREFIX[k[0]] for k in self.vocabulary], dtype=np.int64)
        self._char_cache: dict[str, list[int]] = {}

    @classmethod
    def fit(cls, texts: Iterable[str], config: FeatureConfig) -> Vectoriser:
        """Build the vocabulary (document frequency ≥ min_df, the most frequent max_features)."""
        df: dict[str, int] = {}
        n_docs = 0
        for text in texts:
            n_docs += 1
            for key in set(analyse(text, config)):
                df[key] = df.get(key, 0) + 1
        kept = [(count, key) for key, count in df.items() if count >= config.min_df]
        # Ties broken by the key so the vocabulary does not depend on dict order.
        kept.sort(key=lambda item: (-item[0], item[1]))
        kept = kept[: config.max_features]
        vocabulary = sorted(key for _, key in kept)
        counts = np.array([df[key] for key in vocabulary], dtype=np.float64)
        idf = (np.log((1.0 + n_docs) / (1.0 + counts)) + 1.0).astype(np.float32)
        return cls(config, vocabulary, idf)

    def _char_ids(self, word: str) -> list[int]:
        ids = self._char_cache.get(word)
        if ids is None:
            get = self.index.get
            found = (get(g) for g in _char_grams(word, self.config.char_min, self.config.char_max))
            ids = [i for i in found if i is not None]
            if len(self._char_cache) >= _CACHE_LIMIT:
                self._char_cache.clear()
            self._char_cache[word] = ids
        return ids

    def _count(self, text: str) -> dict[int, int]:
        words, title_words = _split(text, self.config)
        counts: dict[int, int] = {}
        get = self.index.get
        for key in (*_word_keys(words, "w:", "b:"), *_word_keys(title_words, "t:", "u:")):
            i = get(key)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        for word in words:
            for i in self._char_ids(word):
                counts[i] = counts.get(i, 0) + 1
        return counts

    def transform(self, texts: Sequence[str]) -> SparseRows:
        """Vectorise a batch of texts into CSR arrays."""
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        ids: list[int] = []
        tfs: list[int] = []
        for row, text in enumerate(texts):
            counts = self._count(text)
            ids.extend(counts.keys())
            tfs.extend(counts.values())
            indptr[row + 1] = len(ids)
        indices = np.array(ids, dtype=np.int32)
        values = (1.0 + np.log(np.array(tfs, dtype=np.float64))) * self.idf[indices]
        doc = np.repeat(np.arange(len(texts)), np.diff(indptr))
        segment = doc * len(BLOCKS) + self.blocks[indices]
        norms = np.sqrt(np.bincount(segment, weights=values**2, minlength=len(texts) * 3))
        values = values / np.maximum(norms[segment], 1e-12)
        return SparseRows(indptr, indices, values.astype(np.float32), len(self.vocabulary))
