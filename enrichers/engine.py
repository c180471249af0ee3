"""Runs enrichers in precedence order and keeps the first suggestion per field."""

from __future__ import annotations

from collections.abc import Sequence

from domain.models import Suggestion, Ticket
from enrichers.base import Enricher

__all__ = ["run_enrichers"]


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
