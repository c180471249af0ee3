"""Keyword matching for ``enrichers.keywords``: compiling rules and finding them in text.

The syntax is documented in ``enrichers.keywords``; this module turns each keyword into a regex
and finds leftmost-longest, non-overlapping matches per text region.

Compounds (Danish, Swedish, Norwegian and German write "internetforbindelse", "Netzwerkdrucker",
"nätverkskabel" as one word). For *topic* fields (everything but impact and urgency, whose cues
are phrases) a plain one-word keyword of at least ``COMPOUND_MIN_CHARS`` letters also matches:

* as the **first element** of a longer word when at least ``COMPOUND_MIN_REST`` letters follow
  and they are not a mere ending ("internet" matches "internetforbindelse"; "monitor" does not
  match "monitorering" or "monitoring", "betalingsterminal" not "betalingsterminalerne");
* as the **head** (end) of a word whose modifier has at least ``COMPOUND_MIN_REST`` letters,
  followed by at most a noun ending ("printer" matches "netværksprinteren", "Laserprinters").

A head beats a first element on the same word (the head names the thing: "netværksprinter" is a
printer). Short keywords ("sap", "excel", "vpn") and ``=word`` keywords only match whole words.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from domain.errors import ConfigError

__all__ = ["COMPOUND_MIN_CHARS", "COMPOUND_MIN_REST", "FieldMatcher", "Hit", "Region"]

#: A keyword needs this many characters to match inside a compound word.
COMPOUND_MIN_CHARS = 6
#: The other part of a compound (what follows a first element, what precedes a head).
COMPOUND_MIN_REST = 4
#: What may follow a first element without making a compound: inflections and derivations.
_NOT_A_COMPOUND = (
    r"(?!(?:e?rne|e?rnes|e?rna|e?rnas|arna|orna|ende|ande|ene|enes|ens|ets)(?!\w))"
    r"(?!e?ring|ing|ung|ation|ed(?!\w))"
)
#: Noun endings a compound's head may carry (en, er, erne, ar, arna, s, n, ...).
_HEAD_ENDING = r"(?:e|en|ens|er|ere|erne|ernes|ern|et|ets|ene|es|s|n|ne|ar|arna|or|orna|a|na)?"

NEGATORS = frozenset(
    {
        *("not", "no", "never", "isn't", "aren't", "wasn't", "don't", "doesn't", "without"),
        *("ikke", "ej", "aldrig", "ingen", "intet", "uden", "aldri", "uten"),
        *("inte", "icke", "inga", "utan"),
        *("nicht", "kein", "keine", "keinen", "keiner", "nie", "niemals", "ohne"),
    }
)
_NEGATION_WINDOW_WORDS = 3
_CLAUSE_END = re.compile(r"[.!?;:,()\n]")
_WORD = re.compile(r"[\w']+")
_TOKEN = re.compile(r"\w+")
# Verb-second languages negate after the verb ("det haster ikke", "es eilt nicht"); "not only"
# style phrases are not negations of the cue.
_POST_NEGATION = re.compile(
    r"[ \t]+(?:ikke|inte|nicht|not)(?!\w)(?![ \t]+(?:kun|blot|bara|endast|nur|only|just)(?!\w))"
)
#: `` ... `` in a keyword: up to this many words in between, within one clause.
_GAP_WORDS = 3
_GAP = r"(?:[\s\-]+[\w']+){0," + str(_GAP_WORDS) + r"}?[\s\-]+"


def normalize_text(text: str) -> str:
    """NFKC-normalise and case-fold text so keywords and tickets compare alike."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").casefold()


@dataclass(frozen=True)
class Hit:
    """One keyword found for one value: where, how much it weighs, and via which subcategory."""

    keyword: str
    region: str
    weight: float
    via: str | None = None


# value -> keyword -> its best hit
Evidence = dict[str, dict[str, Hit]]


def _phrase(core: str) -> str:
    """Regex for a keyword without stars: spaces, hyphens and `` ... `` gaps."""
    segments = []
    for segment in re.split(r"\s+\.\.\.\s+", core):
        parts = []
        for piece in re.split(r"(\s+|-)", segment):
            if piece.isspace():
                parts.append(r"[\s\-]+")
            elif piece == "-":
                parts.append(r"[\s\-]?")
            elif piece:
                parts.append(re.escape(piece))
        segments.append("".join(parts))
    return _GAP.join(segments)


def _is_compound_part(core: str) -> bool:
    """Whether a plain keyword may also match as part of a compound word."""
    return len(core) >= COMPOUND_MIN_CHARS and core.isalpha()


def compile_keyword(keyword: str, *, compounds: bool) -> tuple[str, str | None, str | None]:
    """(regex, bucket key, head) for one keyword.

    The key is None when the keyword may start inside a word; keywords are bucketed by their
    first one or two characters so that each word of a ticket is only tried against the few
    keywords that could start there. ``head`` is the text to match at the end of compound
    words (None when the keyword is not a compound head).
    """
    text = normalize_text(keyword).strip()
    exact = text.startswith("=")
    text = text.lstrip("=").strip()
    core = text.strip("*").strip()
    if re.search(r"(?:^|\s)\.\.\.(?:\s|$)", core) and not re.search(r"\w\s+\.\.\.\s+\w", core):
        raise ConfigError(f"keyword {keyword!r}: '...' must stand between two words")
    if not _TOKEN.search(core):
        raise ConfigError(f"keyword {keyword!r} has no letters or digits to match")
    first = _TOKEN.match(core)
    plain = not exact and not text.startswith("*") and not text.endswith("*")
    compound = compounds and plain and _is_compound_part(core)
    if text.endswith("*"):
        end = r"\w*"
    elif compound:
        end = r"(?:(?!\w)|" + _NOT_A_COMPOUND + rf"\w{{{COMPOUND_MIN_REST},}})"
    else:
        end = r"(?!\w)"
    regex = _phrase(core) + end
    head = core if compound else None
    if text.startswith("*"):
        return regex, None, head
    if first is None:  # starts with punctuation: needs its own word-start check
        return r"(?<!\w)" + regex, None, head
    return regex, core[:2] if len(first.group()) >= 2 else core[:1], head


def _alternation(group: Sequence[tuple[str, int]]) -> tuple[re.Pattern[str], list[int]]:
    """One compiled alternation (longest regex first) and the rule index of each branch."""
    ordered = sorted(group, key=lambda item: (-len(item[0]), item[0]))
    pattern = re.compile("|".join(f"({regex})" for regex, _ in ordered))
    return pattern, [index for _, index in ordered]


class FieldMatcher:
    """All keywords of one field, bucketed by how they start and compiled once."""

    def __init__(
        self, field: str, by_value: Mapping[str, Sequence[str]], *, compounds: bool = True
    ) -> None:
        merged: dict[tuple[str, str | None, str | None], tuple[str, list[str]]] = {}
        for value, keywords in by_value.items():
            for keyword in keywords:
                try:
                    compiled = compile_keyword(keyword, compounds=compounds)
                except ConfigError as exc:
                    raise ConfigError(f"keywords.{field}.{value}: {exc}") from exc
                merged.setdefault(compiled, (keyword, []))[1].append(value)
        self._rules = [(keyword, tuple(values)) for keyword, values in merged.values()]
        by_key: dict[str, list[tuple[str, int]]] = {}
        inside: list[tuple[str, int]] = []
        heads: list[tuple[str, int]] = []
        for index, (regex, key, head) in enumerate(merged):
            (inside if key is None else by_key.setdefault(key, [])).append((regex, index))
            if head is not None:
                heads.append((re.escape(head) + _HEAD_ENDING + r"\Z", index))
        # Buckets compile on first use: a ticket's words reach a fraction of them, and
        # compiling all ~270 alternations up front costs the cold start ~0.3 s.
        self._groups = by_key
        self._buckets: dict[str, tuple[re.Pattern[str], list[int]]] = {}
        self._keys = frozenset(by_key)
        self._inside = _alternation(inside) if inside else None
        self._heads = _alternation(heads) if heads else None
        self._min_head_word = COMPOUND_MIN_CHARS + COMPOUND_MIN_REST
        #: Keywords whose first word is one character long ("i dag"), indexed by that character.
        self.one_char_keys = frozenset(key for key in by_key if len(key) == 1)

    def _bucket(self, key: str) -> tuple[re.Pattern[str], list[int]]:
        compiled = self._buckets.get(key)
        if compiled is None:  # two threads may both compile it: harmless, same result
            compiled = self._buckets[key] = _alternation(self._groups[key])
        return compiled

    def find(self, region: Region, *, negation: bool) -> Evidence:
        """Evidence per value from one text region."""
        found: Evidence = {}
        for start, end, index in self._spans(region):
            if negation and _negated(region.text, start, end):
                continue
            keyword, values = self._rules[index]
            hit = Hit(keyword, region.name, region.weight)
            for value in values:
                found.setdefault(value, {}).setdefault(keyword, hit)
        return found

    def _spans(self, region: Region) -> list[tuple[int, int, int]]:
        """Leftmost-longest, non-overlapping (start, end, rule index) matches."""
        text = region.text
        # (start, -end, tie-break, rule): a compound's head ("*drucker") beats its
        # modifier ("netzwerk*") on the same word, as the head names the thing.
        found: list[tuple[int, int, int, int]] = []
        for key in self._keys & region.starts.keys():
            pattern, rules = self._bucket(key)
            for start in region.starts[key]:
                if m := pattern.match(text, start):
                    found.append((start, -m.end(), 1, rules[(m.lastindex or 1) - 1]))
        if self._inside is not None:
            pattern, rules = self._inside
            for m in pattern.finditer(text):
                found.append(
                    (region.word_start(m.start()), -m.end(), 0, rules[(m.lastindex or 1) - 1])
                )
        if self._heads is not None:
            pattern, rules = self._heads
            for start, end in region.tokens:
                if end - start >= self._min_head_word and (
                    m := pattern.search(text, start + COMPOUND_MIN_REST, end)
                ):
                    found.append((start, -end, 0, rules[(m.lastindex or 1) - 1]))
        found.sort()
        spans: list[tuple[int, int, int]] = []
        for start, neg_end, _, index in found:
            if not spans or start >= spans[-1][1]:
                spans.append((start, -neg_end, index))
        return spans


def _negated(text: str, start: int, end: int) -> bool:
    """Whether a negation sits within a few words before the match or right after it."""
    before = _CLAUSE_END.split(text[max(0, start - 60) : start])[-1]
    words = _WORD.findall(before)[-_NEGATION_WINDOW_WORDS:]
    if any(word in NEGATORS or word.endswith("n't") for word in words):
        return True
    return _POST_NEGATION.match(text, end) is not None


class Region:
    """A normalised part of the ticket with its weight and an index of where words start.

    The index is shared by every field's matcher: words are visited once per ticket, and each
    matcher only tries the starts whose first characters open one of its keywords.
    """

    def __init__(self, name: str, text: str, weight: float, one_char_keys: frozenset[str]):
        self.name, self.text, self.weight = name, normalize_text(text), weight
        self.tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(self.text)]
        self.starts: dict[str, list[int]] = {}
        for start, _ in self.tokens:
            head = self.text[start : start + 2]
            self.starts.setdefault(head, []).append(start)
            if head[0] in one_char_keys and len(head) == 2:
                self.starts.setdefault(head[0], []).append(start)

    def reweighed(self, weight: float) -> Region:
        """The same text and index with another weight (cue fields weigh regions alike)."""
        twin = object.__new__(Region)
        twin.name, twin.text, twin.weight = self.name, self.text, weight
        twin.tokens, twin.starts = self.tokens, self.starts
        return twin

    def word_start(self, position: int) -> int:
        """The start of the word that contains ``position`` (``position`` if outside words)."""
        at = bisect.bisect_right(self.tokens, (position, len(self.text))) - 1
        inside = at >= 0 and self.tokens[at][1] > position
        return self.tokens[at][0] if inside else position
