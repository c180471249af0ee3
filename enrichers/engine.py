"""Runs enrichers in precedence order and keeps the first suggestion per field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from domain.models import Suggestion, Ticket
from enrichers.base import Enricher, Explains

__all__ = ["Abstention", "Explained", "run_enrichers", "run_enrichers_explained"]


def run_enrichers(enrichers: Sequence[Enricher], ticket: Ticket) -> dict[str, Suggestion]:
    """Return the chosen suggestion per field.

    Earlier enrichers take precedence: admin keyword rules sit above the learned model, which
    sits above the built-in cues. A later enricher sees what was chosen so far.
    """
    chosen: dict[str, Suggestion] = {}
    for enricher in enrichers:
        for suggestion in enricher.enrich(ticket, chosen):
            chosen.setdefault(suggestion.field, suggestion)
    return chosen


@dataclass(frozen=True)
class Abstention:
    """Why one enricher suggested nothing for one field."""

    source: str
    reason: str


@dataclass(frozen=True)
class Explained:
    """The chosen suggestion per field, and for every other field why the enrichers abstained.

    ``abstentions`` holds only fields with no chosen suggestion, each with the reasons of the
    enrichers that explain themselves, in precedence order.
    """

    chosen: dict[str, Suggestion]
    abstentions: dict[str, tuple[Abstention, ...]] = field(default_factory=dict)


def run_enrichers_explained(enrichers: Sequence[Enricher], ticket: Ticket) -> Explained:
    """``run_enrichers``, plus the abstention reasons of enrichers that implement ``Explains``.

    The chosen suggestions are exactly those of ``run_enrichers``; each explaining enricher is
    asked right after its own turn, with the same ``chosen`` it saw.
    """
    chosen: dict[str, Suggestion] = {}
    reasons: dict[str, list[Abstention]] = {}
    for enricher in enrichers:
        seen = dict(chosen)
        for suggestion in enricher.enrich(ticket, seen):
            chosen.setdefault(suggestion.field, suggestion)
        if isinstance(enricher, Explains):
            for name, reason in enricher.explain(ticket, seen).items():
                reasons.setdefault(name, []).append(Abstention(enricher.name, reason[:300]))
    abstentions = {f: tuple(r) for f, r in reasons.items() if f not in chosen}
    return Explained(chosen, abstentions)
