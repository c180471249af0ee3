"""Admin keyword rules: suggest any field from the mapping's ``keywords`` table.

Keyword syntax (each entry of ``keywords.<field>.<value>`` in the admin mapping):

* Matching is case-insensitive and Unicode-aware (``Æ``/``æ``, ``ß``/``ss``; text and keywords
  are NFKC-normalised and case-folded) and respects word boundaries: ``vpn`` matches
  "VPN'en" and "VPN-Verbindung" but not "vpnclient".
* A space matches any run of whitespace or hyphens (``all users`` matches "all\\nusers");
  a hyphen is optional (``wi-fi`` matches "wifi", "wi-fi" and "wi fi").
* ``printer*`` (trailing star) matches words *starting* with ``printer`` ("printeren",
  "printers"); ``*drucker`` (leading star) matches words *ending* in it ("Netzwerkdrucker");
  ``*drucker*`` matches it anywhere inside a word. Use stars for inflections.
* Compounds: in topic fields (all but ``impact`` and ``urgency``) a plain one-word keyword of
  6+ letters also matches as the first element or the head of a compound word when the other
  part has 4+ letters and is not a mere ending: ``internet`` matches "internetforbindelse",
  ``printer`` matches "netværksprinteren", but ``monitor`` not "monitorering" and
  ``betalingsterminal`` not "betalingsterminalerne". ``=screen`` opts a keyword out
  (whole word only: "screen" but not "screenshot"). See ``enrichers.keyword_match``.
* ``konto ... låst``: up to three words in between, within one clause ("Min konto er blevet
  låst"; not "konto. Låst").
* Device nouns are listed in the singular ("betalingsterminal", "betalingsterminalen"): when
  several terminals or tills fail at once the cause is rarely the device.

Scoring: a topic keyword (category, subcategory, ...) in the title (or, when the title is empty,
in the e-mail's ``Subject:`` line, else in the body's first sentence) weighs 2, in the rest of
the body 1: bodies mention incidental things ("the printer works, but ..."). An ``impact`` or
``urgency`` cue weighs 2 wherever it stands: "Det haster!" in the body states the urgency as
plainly as in the title. Each distinct keyword counts once per value, at its best place.
Confidence grows with the winning value's weight *minus* the weight of all competing values
(net 1: 0.70, net 2: 0.85, net 3: 0.925), so one clear cue clears the 0.75 floor while a lone
topic word in the body does not; when competitors hold more than 40% of the weight the field
is ambiguous and the enricher abstains.

Subcategory keywords also count as evidence for their parent category, and a subcategory is
only suggested when it belongs to the category a person set, a previous enricher chose or this
enricher suggests (never more confident than that category). For ``impact`` and ``urgency`` a
negation shortly before a cue ("not urgent", "ikke så akut") or right after it ("haster ikke",
"eilt nicht") cancels the cue; list such phrases as ``low`` keywords to make them evidence.

E-mail boilerplate is ignored (``enrichers.text.parse_email``: headers, greetings, signatures,
disclaimers, quoted replies, URLs); only its first 20,000 characters are read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence

from domain.mapping import FieldMapping
from domain.models import Suggestion, Ticket
from enrichers.keyword_match import Evidence, FieldMatcher, Hit, Region, normalize_text
from enrichers.text import parse_email, split_sentences

__all__ = ["KeywordEnricher", "normalize_text"]

log = logging.getLogger(__name__)

TITLE_WEIGHT = 2.0
BODY_WEIGHT = 1.0
#: A cue (impact, urgency) weighs this much wherever it stands: it states the ticket's urgency.
CUE_WEIGHT = 2.0
#: The top value's share of the total weight below which the field is too ambiguous to suggest.
MIN_DOMINANCE = 0.6
MAX_CONFIDENCE = 0.97
_OPENING_CHARS = 400


def _regions(ticket: Ticket, one_char_keys: frozenset[str]) -> list[Region]:
    """The title (else the e-mail's subject line) and the cleaned e-mail body."""
    # Headers, greetings, signatures, disclaimers ("notify the sender immediately"), quotes and
    # URLs are noise for keywords; a mailed-in ticket's "Subject:" line is its best title.
    email = parse_email(ticket.description)
    regions: list[Region] = []
    if ticket.title.strip():
        regions.append(Region("title", ticket.title, TITLE_WEIGHT, one_char_keys))
    elif email.subjects:
        regions.append(Region("subject", email.subjects[0], TITLE_WEIGHT, one_char_keys))
    elif opening := split_sentences(email.body[:_OPENING_CHARS])[:1]:
        # Without a title the opening sentence is where people name the problem.
        regions.append(Region("first sentence", opening[0], TITLE_WEIGHT, one_char_keys))
    regions.append(Region("body", email.body, BODY_WEIGHT, one_char_keys))
    return regions


def _merge(into: Evidence, new: Evidence) -> None:
    """Keep the heaviest hit per (value, keyword)."""
    for value, hits in new.items():
        mine = into.setdefault(value, {})
        for keyword, hit in hits.items():
            if keyword not in mine or hit.weight > mine[keyword].weight:
                mine[keyword] = hit


def _strength(weight: float) -> float:
    """Confidence from net weight: 1 → 0.70, 2 → 0.85, 3 → 0.925, capped at 0.97."""
    return min(MAX_CONFIDENCE, 1.0 - 0.3 * math.pow(0.5, weight - 1.0))


def _describe(hits: Mapping[str, Hit], limit: int = 3) -> str:
    """``keyword "vpn" in title`` / ``keywords "vpn" in title, "tunnel" in body``."""
    best = sorted(hits.values(), key=lambda h: (-h.weight, h.keyword))[:limit]
    parts = [
        f'"{h.keyword}" in {h.region}' + (f" (subcategory {h.via})" if h.via else "") for h in best
    ]
    more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
    return ("keyword " if len(hits) == 1 else "keywords ") + ", ".join(parts) + more


def _decide(field: str, evidence: Evidence, source: str) -> Suggestion | None:
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
        cue_fields: Collection[str] = ("impact", "urgency"),
        compounds: bool = True,
        min_confidence: float = 0.75,
    ) -> None:
        """Compile every field's keywords once.

        ``negation_fields``: fields whose keywords a nearby negation cancels.
        ``cue_fields``: fields whose keywords are statements about the whole ticket ("haster",
        "alle brugere"): a cue in the body weighs as much as one in the title, and their
        keywords never match inside compound words.
        ``compounds``: whether plain keywords of topic fields also match inside compound words
        (see ``enrichers.keyword_match``); off reproduces whole-word matching only.
        ``min_confidence``: below it the enricher abstains rather than suggest, because the
        engine keeps the first suggestion per field and a weak keyword guess would hide a
        better one from a later enricher (the learned model).
        """
        self._cue_fields = frozenset(cue_fields)
        self._matchers = {
            f: FieldMatcher(f, kw, compounds=compounds and f not in self._cue_fields)
            for f, kw in mapping.keywords.items()
        }
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

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str]:
        """Why each field with keyword rules got no suggestion: no cue, ambiguity, weak score.

        Recomputes the evidence ``enrich`` weighs (same regions, roll-up and decision); the
        reasons quote keywords, values and scores, never the ticket's text.
        """
        evidence = self._evidence(_regions(ticket, self._one_char_keys))
        if self._parents and evidence.get("subcategory"):
            _merge(evidence.setdefault("category", {}), self._rolled_up(evidence["subcategory"]))
        suggested = {s.field for s in self.enrich(ticket, chosen)}
        own: Suggestion | None = None
        if "category" in evidence:
            own = _decide("category", evidence["category"], self.name)
        out: dict[str, str] = {}
        for field in self._matchers.keys() | evidence.keys():
            if field in suggested:
                continue
            found = evidence.get(field, {})
            if field == "subcategory" and any(found.values()):
                out[field] = self._why_no_subcategory(ticket, chosen, own, found)
            else:
                out[field] = self._why_not(field, found)
        return out

    def _why_not(self, field: str, found: Evidence) -> str:
        scores = {v: sum(h.weight for h in hits.values()) for v, hits in found.items() if hits}
        if not scores:
            return "no cue found"
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(scores.values())
        top, top_score = ranked[0]
        if top_score / total < MIN_DOMINANCE:
            runner, runner_score = ranked[1]
            return (
                f"ambiguous: {top} {top_score / total:.2f} vs {runner} {runner_score / total:.2f}"
                f" (the top value needs {MIN_DOMINANCE:.2f} of the keyword weight)"
            )
        confidence = round(_strength(2 * top_score - total), 3)
        return (
            f"below the {self._min_confidence:.2f} floor ({confidence:.2f}) for {top}: "
            f"{_describe(found[top])}"
        )

    def _why_no_subcategory(
        self,
        ticket: Ticket,
        chosen: Mapping[str, Suggestion],
        own: Suggestion | None,
        found: Evidence,
    ) -> str:
        category, cat_confidence, _ = _category_in_force(ticket, chosen, own)
        allowed = {s: h for s, h in found.items() if self._parents.get(s, category) == category}
        if not any(allowed.values()):
            best = max(found, key=lambda s: (sum(h.weight for h in found[s].values()), s))
            parent = self._parents.get(best)
            if category is None:
                return f"subcategory {best} belongs to category {parent}, and no category is known"
            return f"subcategory {best} belongs to category {parent}, not {category}"
        suggestion = _decide("subcategory", allowed, self.name)
        if suggestion is None or category is None or suggestion.confidence < self._min_confidence:
            return self._why_not("subcategory", allowed)
        return (
            f"below the {self._min_confidence:.2f} floor "
            f"({min(suggestion.confidence, cat_confidence):.2f}) for {suggestion.value}: "
            f"capped by the confidence of category {category}"
        )

    def _evidence(self, regions: Sequence[Region]) -> dict[str, Evidence]:
        evidence: dict[str, Evidence] = {}
        for field, matcher in self._matchers.items():
            negation = field in self._negation_fields
            cue = field in self._cue_fields
            found: Evidence = {}
            for region in regions:
                region = region.reweighed(CUE_WEIGHT) if cue else region
                _merge(found, matcher.find(region, negation=negation))
            evidence[field] = found
        return evidence

    def _rolled_up(self, subcategory: Evidence) -> Evidence:
        """Subcategory hits re-labelled as evidence for their parent categories."""
        rolled: Evidence = {}
        for sub, hits in subcategory.items():
            parent = self._parents.get(sub)
            if parent is None:
                continue
            for keyword, hit in hits.items():
                via = Hit(hit.keyword, hit.region, hit.weight, via=sub)
                _merge(rolled, {parent: {keyword: via}})
        return rolled

    def _subcategory(
        self,
        ticket: Ticket,
        chosen: Mapping[str, Suggestion],
        own_category: Suggestion | None,
        evidence: Evidence,
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
