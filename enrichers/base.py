"""The enricher protocol: pure functions of a ticket (no I/O, no mutation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from domain.models import Suggestion, Ticket

__all__ = ["Enricher"]


@runtime_checkable
class Enricher(Protocol):
    """Suggests values for some fields of a ticket; an empty result means it abstains.

    Enrichers run in precedence order (admin keyword rules, then the learned model, then
    built-in cues, then derived fields). ``chosen`` holds the suggestion already chosen for each
    field by a higher-precedence enricher, so a derived enricher can build on it (priority from
    impact and urgency; subcategory given category).
    """

    name: str

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        """Return suggestions for this ticket, or an empty sequence to abstain."""
        ...
