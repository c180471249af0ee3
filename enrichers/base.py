"""The enricher protocol: pure functions of a ticket (no I/O, no mutation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from domain.models import Suggestion, Ticket

__all__ = ["Enricher", "Explains"]


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


@runtime_checkable
class Explains(Protocol):
    """Optional: an enricher that can say why it abstained, field by field.

    Separate from ``Enricher`` so enrichers without it keep working; the engine checks for it
    with ``isinstance``. ``chosen`` is what the enricher saw when it ran (as for ``enrich``).
    Reasons name fields, values, scores and thresholds, never the ticket's text.
    """

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Mapping[str, str]:
        """Field → why no value was suggested for it (fields it suggested may be left out)."""
        ...
