"""Priority derived from impact × urgency through the admin mapping's priority matrix."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from domain.mapping import FieldMapping
from domain.models import Suggestion, Ticket

__all__ = ["PriorityEnricher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Input:
    """One input of the matrix: its value, how sure we are, and who said so (for the reason)."""

    value: str
    confidence: float
    label: str


def _input(field: str, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> _Input | None:
    """A value a person set wins (it will not be overwritten); else the chosen suggestion."""
    person = ticket.current.get(field)
    if person:
        return _Input(person, 1.0, "person")
    suggestion = chosen.get(field)
    if suggestion is None:
        return None
    return _Input(suggestion.value, suggestion.confidence, f"{suggestion.confidence:.2f}")


class PriorityEnricher:
    """Looks impact and urgency up in the priority matrix; abstains if either is missing."""

    name = "priority"

    def __init__(self, mapping: FieldMapping) -> None:
        """Keep a copy of the mapping's impact × urgency → priority matrix."""
        self._matrix = {impact: dict(row) for impact, row in mapping.priority_matrix.items()}

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str]:
        """Why no priority: which of impact and urgency is missing, or no matrix entry."""
        impact = _input("impact", ticket, chosen)
        urgency = _input("urgency", ticket, chosen)
        missing = [f for f, given in (("impact", impact), ("urgency", urgency)) if given is None]
        if impact is None or urgency is None:
            return {"priority": f"needs impact and urgency; no {' and no '.join(missing)}"}
        if self._matrix.get(impact.value, {}).get(urgency.value) is None:
            return {
                "priority": f"no matrix entry for impact {impact.value} × urgency {urgency.value}"
            }
        return {}

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> list[Suggestion]:
        """The priority for this ticket's impact and urgency, as confident as the weaker input."""
        impact = _input("impact", ticket, chosen)
        urgency = _input("urgency", ticket, chosen)
        if impact is None or urgency is None:
            return []
        priority = self._matrix.get(impact.value, {}).get(urgency.value)
        if priority is None:
            log.debug("priority: no matrix entry for %s × %s", impact.value, urgency.value)
            return []
        reason = (
            f"impact {impact.value} ({impact.label}) × "
            f"urgency {urgency.value} ({urgency.label}) → {priority}"
        )
        return [
            Suggestion(
                field="priority",
                value=priority,
                confidence=min(impact.confidence, urgency.confidence),
                reason=reason,
                source=self.name,
            )
        ]
