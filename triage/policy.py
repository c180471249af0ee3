"""Which suggestions may be written back, and the note that says what was filled.

The rules, in order, for each suggested field:

1. the mapping must write the field back (ServiceNow never gets ``priority``: it computes it);
2. the suggestion must clear the field's ``min_confidence``;
3. the field must be unset on the freshly re-read ticket — a value a person set is never
   overwritten (``unset`` in the mapping lists defaults such as category ``inquiry``);
4. the canonical value must map to a platform raw value;
5. a subcategory is written only when it belongs to the ticket's (new or existing) category.

Every value, reason and "why" the note quotes goes through ``domain.sanitize.sanitize_value``
(one line, no markup, at most 200 characters), so text from a ticket cannot add lines to the
note or markup to it; a value with nothing left once sanitised is refused (rule 0).
"""

from __future__ import annotations

from collections.abc import Mapping

from domain.mapping import FieldMapping
from domain.models import SUMMARY_MAX_CHARS, Decision, Suggestion, Ticket
from domain.sanitize import CHOICE_MAX_CHARS, sanitize_value

__all__ = ["NOTE_ITEM_MAX_CHARS", "decide", "render_note", "to_changes", "write_limits"]

#: The most characters of one value, reason or "why" the work note quotes.
NOTE_ITEM_MAX_CHARS = 200


def decide(
    ticket: Ticket,
    chosen: Mapping[str, Suggestion],
    mapping: FieldMapping,
    raw: Mapping[str, object] | None = None,
) -> list[Decision]:
    """Decide, field by field, whether each chosen suggestion is written.

    ``raw`` is the re-read platform record; a write that would not change its value (low impact
    on a ticket whose impact is still the default low) is skipped as a no-op.
    """
    decisions: list[Decision] = []
    for field, suggestion in chosen.items():
        if mapping.mode(field) == "off":
            continue  # the admin switched the field off: not enriched, not mentioned
        why = _refusal(ticket, suggestion, mapping) or _no_op(suggestion, mapping, raw)
        action = "skip" if why else "suggest" if mapping.mode(field) == "suggest" else "write"
        decisions.append(
            Decision(
                field=field,
                action=action,
                value=suggestion.value,
                confidence=suggestion.confidence,
                reason=suggestion.reason,
                why=why
                or f"empty, confidence {suggestion.confidence:.2f} "
                f">= {mapping.threshold(field):.2f}",
            )
        )
    return _drop_orphan_subcategory(decisions, ticket, mapping)


def _refusal(ticket: Ticket, suggestion: Suggestion, mapping: FieldMapping) -> str | None:
    field = suggestion.field
    if not sanitize_value(suggestion.value, max_chars=NOTE_ITEM_MAX_CHARS):
        return "nothing left of the value once markup and control characters are removed"
    if not mapping.writes(field):
        return "not written back (mapping)"
    threshold = mapping.threshold(field)
    if suggestion.confidence < threshold:
        return f"confidence {suggestion.confidence:.2f} below threshold {threshold:.2f}"
    if ticket.current.get(field) is not None:
        return "already set; a value a person set is never overwritten"
    if mapping.to_raw(field, suggestion.value) is None:
        return f"no platform value mapped for {suggestion.value!r}"
    return None


def _no_op(
    suggestion: Suggestion, mapping: FieldMapping, raw: Mapping[str, object] | None
) -> str | None:
    if raw is None:
        return None
    current = raw.get(mapping.fields[suggestion.field])
    if current is not None and str(current) == mapping.to_raw(suggestion.field, suggestion.value):
        return "already has this value"
    return None


def _drop_orphan_subcategory(
    decisions: list[Decision], ticket: Ticket, mapping: FieldMapping
) -> list[Decision]:
    writes = {d.field: d for d in decisions if d.action == "write"}
    sub = writes.get("subcategory")
    if sub is None or sub.value not in mapping.subcategory_parent:
        return decisions
    category = writes["category"].value if "category" in writes else ticket.current.get("category")
    parent = mapping.subcategory_parent[sub.value]
    if category == parent:
        return decisions
    refused = sub.model_copy(
        update={"action": "skip", "why": f"belongs to category {parent!r}, not {category!r}"}
    )
    return [refused if d is sub else d for d in decisions]


def to_changes(decisions: list[Decision], mapping: FieldMapping) -> dict[str, str]:
    """The platform field → raw value changes for the decisions marked ``write``.

    When category and subcategory share one column (Dataverse's Subject tree: one
    ``subjectid`` holds the most specific node), the subcategory is written: it names its
    category too.
    """
    changes: dict[str, str] = {}
    specific_last = sorted(decisions, key=lambda d: d.field == "subcategory")
    for decision in specific_last:
        if decision.action != "write":
            continue
        raw = mapping.to_raw(decision.field, decision.value)
        if raw is not None:
            changes[mapping.fields[decision.field]] = raw
    return changes


def render_note(decisions: list[Decision], mapping: FieldMapping) -> str:
    """The work note saying what was filled, how sure we were and why (and what was not).

    Safe by construction: every interpolated value, reason and "why" is sanitised to one line
    of at most ``NOTE_ITEM_MAX_CHARS`` characters without markup.
    """
    written = [d for d in decisions if d.action == "write"]
    suggested = [d for d in decisions if d.action == "suggest"]
    head = (
        "Filled automatically; please correct anything wrong."
        if written
        else "Suggestions only; nothing was filled."
    )
    lines = [f"{mapping.note_prefix} {head}"]
    lines.extend(_line(d) for d in written)
    if suggested:
        lines.append("Suggested (not filled: the field is in suggest mode):")
        lines.extend(_line(d) for d in suggested)
    skipped = [d for d in decisions if d.action == "skip" and d.field in mapping.fields]
    if skipped:
        lines.append("Not filled:")
        lines.extend(f"- {_item(d.field)}: {_item(d.value)} ({_item(d.why)})" for d in skipped)
    return "\n".join(lines)


def _line(d: Decision) -> str:
    return (
        f"- {_item(d.field)} = {_item(d.value)} (confidence {d.confidence:.0%}): {_item(d.reason)}"
    )


def _item(text: str) -> str:
    return sanitize_value(text, max_chars=NOTE_ITEM_MAX_CHARS)


def write_limits(mapping: FieldMapping) -> dict[str, int]:
    """Per platform field limits for ``sanitize_write``: the summary field, then choice fields.

    A choice field (one with a ``values`` table) gets ``CHOICE_MAX_CHARS``; the field that
    receives the summary gets ``SUMMARY_MAX_CHARS``.
    """
    limits = {mapping.fields[f]: CHOICE_MAX_CHARS for f in mapping.values if f in mapping.fields}
    if "summary" in mapping.fields:
        limits[mapping.fields["summary"]] = SUMMARY_MAX_CHARS
    return limits
