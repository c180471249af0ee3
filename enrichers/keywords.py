"""Admin keyword rules: suggest any field from the mapping's ``keywords`` table.

Keyword syntax (each entry of ``keywords.<field>.<value>`` in the admin mapping):

* Matching is case-insensitive and Unicode-aware (``Æ``/``æ``, ``ß``/``ss``; text and keywords
  are NFKC-normalised and case-folded) and respects word boundaries: ``vpn`` matches
  "VPN'en" and "VPN-Verbindung" but not "vpnclient".
* A space matches any run of whitespace or hyphens (``all users`` matches "all\\nusers");
  a hyphen is optional (``wi-fi`` matches "wifi", "wi-fi" and "wi fi").
* ``printer*`` (trailing star) matches words *starting* with ``printer`` ("printeren",
  "printers"); ``*drucker`` (leading star) matches words *ending* in it ("Netzwerkdrucker");
  ``*drucker*`` matches it anywhere inside a word. Use stars for inflections and compounds.

Scoring: a keyword in the title (or, when the title is empty, in the e-mail's ``Subject:``
line, else in the body's first sentence) weighs 2, in the rest of the body 1; each distinct
keyword counts once per value, at its best place.
Confidence grows with the winning value's weight *minus* the weight of all competing values
(one body keyword 0.70, one title keyword 0.85, title + body 0.925); when competitors hold
more than 40% of the weight the field is ambiguous and the enricher abstains.

Subcategory keywords also count as evidence for their parent category, and a subcategory is
only suggested when it belongs to the category a person set, a previous enricher chose or this
enricher suggests (never more confident than that category). For ``impact`` and ``urgency`` a
negation shortly before a cue ("not urgent", "ikke så akut") or right after it ("haster ikke",
"eilt nicht") cancels the cue; list such phrases as ``low`` keywords to make them evidence.

E-mail boilerplate is ignored (``enrichers.text.parse_email``: headers, greetings, signatures,
disclaimers, quoted replies, URLs); only its first 20,000 characters are read.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from domain.errors import ConfigError
from domain.mapping import FieldMapping
from domain.models import Suggestion, Ticket
from enrichers.text import parse_email, split_sentences

__all__ = ["KeywordEnricher", "normalize_text"]

log = logging.getLogger(__name__)

TITLE_WEIGHT = 2.0
BODY_WEIGHT = 1.0
#: The top value's share of the total weight below which the field is too ambiguous to suggest.
MIN_DOMINANCE = 0.6
MAX_CONFIDENCE = 0.97
_OPENING_CHARS = 400

NEGATORS = frozenset(
    {
        *("not", "no", "never", "isn't", "aren't", "wasn't", "don't", "doesn't", "without"),
        *("ikke", "ej", "aldrig", "ingen", "intet", "uden"),
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


def normalize_text(text: str) -> str:
    """NFKC-normalise and case-fold text so keywords and tickets compare alike."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").casefold()


@dataclass(frozen=True)
class _Hit:
    """One keyword found for one value: where, how much it weighs, and via which subcategory."""

    keyword: str
    region: str
    weight: float
    via: str | None = None


# value -> keyword -> its best hit
_Evidence = dict[str, dict[str, _Hit]]


def _compile_keyword(keyword: str) -> tuple[str, str | None]:
    """(regex, bucket key) for one keyword; the key is None when it may start inside a word.

    Keywords are bucketed by their first one or two characters so that each word of a ticket
    is only tried against the few keywords that could start there (see ``_FieldMatcher``).
    """
    text = normalize_text(keyword).strip()
    core = text.strip("*").strip()
    first = _TOKEN.match(core)
    if not _TOKEN.search(core):
        raise ConfigError(f"keyword {keyword!r} has no letters or digits to match")
    parts = []
    for piece in re.split(r"(\s+|-)", core):
        if piece.isspace():
            parts.append(r"[\s\-]+")
        elif piece == "-":
            parts.append(r"[\s\-]?")
        elif piece:
            parts.append(re.escape(piece))
    regex = "".join(parts) + (r"\w*" if text.endswith("*") else r"(?!\w)")
    if text.startswith("*"):
        return regex, None
    if first is None:  # starts with punctuation: needs its own word-start check
        return r"(?<!\w)" + regex, None
    return regex, core[:2] if len(first.group()) >= 2 else core[:1]


def _alternation(group: Sequence[tuple[str, int]]) -> tuple[re.Pattern[str], list[int]]:
    """One compiled alternation (longest regex first) and the rule index of each branch."""
    ordered = sorted(group, key=lambda item: (-len(item[0]), item[0]))
    pattern = re.compile("|".join(f"({regex})" for regex, _ in ordered))
    return pattern, [index for _, index in ordered]


class _FieldMatcher:
    """All keywords of one field, bucketed by how they start and compiled once."""

    def __init__(self, field: str, by_value: Mapping[str, Sequence[str]]) -> None:
        merged: dict[tuple[str, str | None], tuple[str, list[str]]] = {}
        for value, keywords in by_value.items():
            for keyword in keywords:
                try:
                    compiled = _compile_keyword(keyword)
                except ConfigError as exc:
                    raise ConfigError(f"keywords.{field}.{value}: {exc}") from exc
                merged.setdefault(compiled, (keyword, []))[1].append(value)
        self._rules = [(keyword, tuple(values)) for keyword, values in merged.values()]
        by_key: dict[str, list[tuple[str, int]]] = {}
        inside: list[tuple[str, int]] = []
        for index, (regex, key) in enumerate(merged):
            (inside if key is None else by_key.setdefault(key, [])).append((regex, index))
        self._buckets = {key: _alternation(group) for key, group in by_key.items()}
        self._keys = frozenset(self._buckets)
        self._inside = _alternation(inside) if inside else None
        #: Keywords whose first word is one character long ("i dag"), indexed by that character.
        self.one_char_keys = frozenset(key for key in self._buckets if len(key) == 1)

    def find(self, region: _Region, *, negation: bool) -> _Evidence:
        """Evidence per value from one text region."""
        found: _Evidence = {}
        for start, end, index in self._spans(region):
            if negation and _negated(region.text, start, end):
                continue
            keyword, values = self._rules[index]
            hit = _Hit(keyword, region.name, region.weight)
            for value in values:
                found.setdefault(value, {}).setdefault(keyword, hit)
        return found

    def _spans(self, region: _Region) -> list[tuple[int, int, int]]:
        """Leftmost-longest, non-overlapping (start, end, rule index) matches."""
        text = region.text
        # (start, -end, tie-break, rule): a compound's head ("*drucker") beats its
        # modifier ("netzwerk*") on the same word, as the head names the thing.
        found: list[tuple[int, int, int, int]] = []
        for key in self._keys & region.starts.keys():
            pattern, rules = self._buckets[key]
            for start in region.starts[key]:
                if m := pattern.match(text, start):
                    found.append((start, -m.end(), 1, rules[(m.lastindex or 1) - 1]))
        if self._inside is not None:
            pattern, rules = self._inside
            for m in pattern.finditer(text):
                found.append(
                    (region.word_start(m.start()), -m.end(), 0, rules[(m.lastindex or 1) - 1])
                )
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


class _Region:
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

    def word_start(self, position: int) -> int:
        """The start of the word that contains ``position`` (``position`` if outside words)."""
        at = bisect.bisect_right(self.tokens, (position, len(self.text))) - 1
        inside = at >= 0 and self.tokens[at][1] > position
        return self.tokens[at][0] if inside else position


def _regions(ticket: Ticket, one_char_keys: frozenset[str]) -> list[_Region]:
    """The title (else the e-mail's subject line) and the cleaned e-mail body."""
    # Headers, greetings, signatures, disclaimers ("notify the sender immediately"), quotes and
    # URLs are noise for keywords; a mailed-in ticket's "Subject:" line is its best title.
    email = parse_email(ticket.description)
    regions: list[_Region] = []
    if ticket.title.strip():
        regions.append(_Region("title", ticket.title, TITLE_WEIGHT, one_char_keys))
    elif email.subjects:
        regions.append(_Region("subject", email.subjects[0], TITLE_WEIGHT, one_char_keys))
    elif opening := split_sentences(email.body[:_OPENING_CHARS])[:1]:
        # Without a title the opening sentence is where people name the problem.
        regions.append(_Region("first sentence", opening[0], TITLE_WEIGHT, one_char_keys))
    regions.append(_Region("body", email.body, BODY_WEIGHT, one_char_keys))
    return regions


def _merge(into: _Evidence, new: _Evidence) -> None:
    """Keep the heaviest hit per (value, keyword)."""
    for value, hits in new.items():
        mine = into.setdefault(value, {})
        for keyword, hit in hits.items():
            if keyword not in mine or hit.weight > mine[keyword].weight:
                mine[keyword] = hit


def _strength(weight: float) -> float:
    """Confidence from net weight: 1 → 0.70, 2 → 0.85, 3 → 0.925, capped at 0.97."""
    return min(MAX_CONFIDENCE, 1.0 - 0.3 * math.pow(0.5, weight - 1.0))


def _describe(hits: Mapping[str, _Hit], limit: int = 3) -> str:
    """``keyword "vpn" in title`` / ``keywords "vpn" in title, "tunnel" in body``."""
    best = sorted(hits.values(), key=lambda h: (-h.weight, h.keyword))[:limit]
    parts = [
        f'"{h.keyword}" in {h.region}' + (f" (subcategory {h.via})" if h.via else "") for h in best
    ]
    more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
    return ("keyword " if len(hits) == 1 else "keywords ") + ", ".join(parts) + more


def _decide(field: str, evidence: _Evidence, source: str) -> Suggestion | None:
    """The top value, unless competitors hold too much of the weight."""
    scores = {v: sum(h.weight for h in hits.values()) for v, hits in evidence.items() if hits}
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    top, top_score = ranked[0]
    rest = sum(score for _, score in ranked[1:])
    dominance = top_score / (top_score + rest)
    if dominance < MIN_DOMINANCE:
        log.debug("keywords: %s ambiguous between %s", field, [v for v, _ in ranked[:3]])
        return None
    reason = _describe(evidence[top])
    if len(ranked) > 1:
        runner = ranked[1][0]
        reason += f"; also {_describe(evidence[runner], limit=1)} → {runner}"
    return Suggestion(
        field=field,
        value=top,
        confidence=round(_strength(top_score - rest), 3),
        reason=reason[:300],
        source=source,
    )


class KeywordEnricher:
    """Suggests every field that has keyword rules in the admin mapping; abstains when unsure."""

    name = "keywords"

    def __init__(
        self,
        mapping: FieldMapping,
        *,
        negation_fields: Collection[str] = ("impact", "urgency"),
        min_confidence: float = 0.75,
    ) -> None:
        """Compile every field's keywords once.

        ``min_confidence``: below it the enricher abstains rather than suggest, because the
        engine keeps the first suggestion per field and a weak keyword guess would hide a
        better one from a later enricher (the learned model).
        """
        self._matchers = {f: _FieldMatcher(f, kw) for f, kw in mapping.keywords.items()}
        self._one_char_keys = frozenset().union(*(m.one_char_keys for m in self._matchers.values()))
        self._parents = dict(mapping.subcategory_parent)
        self._negation_fields = frozenset(negation_fields)
        self._min_confidence = min_confidence

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> list[Suggestion]:
        """Suggestions for the fields whose keywords match this ticket."""
        evidence = self._evidence(_regions(ticket, self._one_char_keys))
        if self._parents and evidence.get("subcategory"):
            _merge(evidence.setdefault("category", {}), self._rolled_up(evidence["subcategory"]))
        out: dict[str, Suggestion] = {}
        for field, found in evidence.items():
            if field != "subcategory" and (suggestion := _decide(field, found, self.name)):
                out[field] = suggestion
        if "subcategory" in evidence:
            sub = self._subcategory(ticket, chosen, out.get("category"), evidence["subcategory"])
            if sub is not None:
                out["subcategory"] = sub
        return [s for s in out.values() if s.confidence >= self._min_confidence]

    def _evidence(self, regions: Sequence[_Region]) -> dict[str, _Evidence]:
        evidence: dict[str, _Evidence] = {}
        for field, matcher in self._matchers.items():
            negation = field in self._negation_fields
            found: _Evidence = {}
            for region in regions:
                _merge(found, matcher.find(region, negation=negation))
            evidence[field] = found
        return evidence

    def _rolled_up(self, subcategory: _Evidence) -> _Evidence:
        """Subcategory hits re-labelled as evidence for their parent categories."""
        rolled: _Evidence = {}
        for sub, hits in subcategory.items():
            parent = self._parents.get(sub)
            if parent is None:
                continue
            for keyword, hit in hits.items():
                via = _Hit(hit.keyword, hit.region, hit.weight, via=sub)
                _merge(rolled, {parent: {keyword: via}})
        return rolled

    def _subcategory(
        self,
        ticket: Ticket,
        chosen: Mapping[str, Suggestion],
        own_category: Suggestion | None,
        evidence: _Evidence,
    ) -> Suggestion | None:
        """The best subcategory consistent with the category in force, if any."""
        category, cat_confidence, cat_source = _category_in_force(ticket, chosen, own_category)
        allowed = {
            sub: hits
            for sub, hits in evidence.items()
            if self._parents.get(sub, category) == category
        }
        suggestion = _decide("subcategory", allowed, self.name)
        if suggestion is None or category is None:
            return suggestion
        # A subcategory is only as right as the category it hangs under.
        return suggestion.model_copy(
            update={
                "confidence": min(suggestion.confidence, cat_confidence),
                "reason": f"{suggestion.reason}; under category {category} ({cat_source})"[:300],
            }
        )


def _category_in_force(
    ticket: Ticket, chosen: Mapping[str, Suggestion], own: Suggestion | None
) -> tuple[str | None, float, str]:
    """The category a subcategory must fit: a person's, else an earlier enricher's, else ours."""
    person = ticket.current.get("category")
    if person:
        return person, 1.0, "person"
    for suggestion in (chosen.get("category"), own):
        if suggestion is not None:
            return suggestion.value, suggestion.confidence, f"{suggestion.confidence:.2f}"
    return None, 0.0, ""
