"""The improvement report: shadow-mode suggestions joined with the values people finally set.

Shadow mode (``connectors.shadow``) records every suggestion the worker would have acted on.
Once the tickets are closed, the value a person left on each one is the truth this report
scores the suggestions against, per field and per class (the canonical label, shown as the
mapping names it):

* ``suggestions``: closed tickets that got a suggestion for the field (the latest one per
  ticket when a ticket was enriched more than once);
* ``final_known``: of those, tickets whose final value is set (not empty, not one of the
  mapping's ``unset`` defaults such as ServiceNow's impact ``3``: a default left in place says
  nothing about what a person chose);
* ``agreement``: suggested == final, over every suggestion with a known final value;
* ``coverage``: share of the closed tickets whose suggestion cleared the field's threshold;
* ``precision``: share of those (with a known final value) that agreed;
* ``sweep``: coverage and precision had the threshold been 0.50 … 0.99, so an admin sees what
  moving it would change. Suggestions the enrichers abstained on were never recorded, so a
  threshold below an enricher's own floor cannot show more coverage than that floor gave.

Values are compared as the platform stores them (raw), so two canonical labels sharing one raw
value (Dynamics priority ``critical``/``high`` → 1) agree, and a Subject-tree column shared by
category and subcategory yields the category of the subcategory a person chose. The report
works the same after go-live: ``by_action`` splits the figures by what the worker did (``write``
in fill mode, ``suggest``, ``skip``), so a class whose precision slides shows as drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from connectors.shadow import ShadowRecord
from triage.learn.evaluate import natural_sorted
from triage.learn.run_record import label_names

if TYPE_CHECKING:
    from connectors.base import SourceRecord
    from domain.mapping import FieldMapping

__all__ = [
    "CLOSED_STATES",
    "DEFAULT_TARGET",
    "SWEEP_THRESHOLDS",
    "FinalSource",
    "Finals",
    "build_report",
    "final_query",
    "latest_suggestions",
    "read_finals",
]

#: Thresholds of the sweep: 0.50, 0.55, … 0.95, then 0.99.
SWEEP_THRESHOLDS: tuple[float, ...] = (*(round(0.5 + 0.05 * i, 2) for i in range(10)), 0.99)
#: The precision a class must reach unless the admin names another target.
DEFAULT_TARGET = 0.95
#: Per system: the state column and the values that mean a person closed the ticket.
CLOSED_STATES: dict[str, tuple[str, frozenset[str]]] = {
    "servicenow": ("state", frozenset({"6", "7"})),  # Resolved, Closed
    "dataverse": ("statecode", frozenset({"1"})),  # Resolved
}
#: Identifiers per query: a ServiceNow ``sys_idIN`` list or a Dataverse ``or`` chain.
DEFAULT_BATCH = 50
_IDS = {
    "servicenow": re.compile(r"[0-9a-f]{32}"),
    "dataverse": re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"),
}


class FinalSource(Protocol):
    """The part of a connector the report reads final values through."""

    @property
    def system(self) -> str:
        """The platform name, e.g. ``servicenow``."""
        ...

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        """Yield every record matching a platform query."""
        ...


@dataclass
class Finals:
    """Raw values of the closed tickets (record id → platform field → raw value).

    ``not_final``: asked-for tickets not closed (or gone); ``invalid_ids``: record ids that are
    not the platform's identifier shape, never put in a query.
    """

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_final: int = 0
    invalid_ids: int = 0


def latest_suggestions(
    records: Iterable[ShadowRecord],
    mapping: FieldMapping,
    *,
    until: float | None = None,
) -> dict[str, dict[str, ShadowRecord]]:
    """record id → field → its latest suggestion, for the mapping's system, table and fields.

    Only fields with a ``values`` table are scored (free text such as the summary is not).
    """
    out: dict[str, dict[str, ShadowRecord]] = {}
    for row in records:
        if row.system != mapping.system or row.table != mapping.table:
            continue
        if until is not None and row.at >= until:
            continue
        if row.field not in mapping.values or row.field not in mapping.fields:
            continue
        seen = out.setdefault(row.record_id, {})
        if row.field not in seen or row.at >= seen[row.field].at:
            seen[row.field] = row
    return out


def final_query(system: str, table: str, ids: Sequence[str]) -> str:
    """The platform query selecting the closed tickets among ``ids`` (already validated)."""
    column, closed = CLOSED_STATES[system]
    if system == "servicenow":
        return f"sys_idIN{','.join(ids)}^{column}IN{','.join(sorted(closed))}"
    key = f"{table}id"
    either = " or ".join(f"{key} eq {i}" for i in ids)
    return f"{column} eq {min(closed)} and ({either})"


def read_finals(
    connector: FinalSource,
    mapping: FieldMapping,
    record_ids: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> Finals:
    """Re-read the tickets, ``batch_size`` per query, keeping only the closed ones."""
    column, closed = CLOSED_STATES[mapping.system]
    pattern = _IDS[mapping.system]
    finals = Finals()
    wanted: list[str] = []
    for rid in dict.fromkeys(record_ids):
        if pattern.fullmatch(rid):
            wanted.append(rid)
        else:
            finals.invalid_ids += 1
    columns = sorted({mapping.fields[f] for f in mapping.values if f in mapping.fields} | {column})
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        query = final_query(mapping.system, mapping.table, chunk)
        asked = set(chunk)
        for record in connector.iter_records(mapping.table, query, columns, page_size=batch_size):
            # The query asks for closed tickets only; the state is checked again all the same.
            if record.record_id in asked and str(record.fields.get(column)) in closed:
                finals.values[record.record_id] = dict(record.fields)
    finals.not_final = len(wanted) - len(finals.values)
    return finals


def _final_raw(mapping: FieldMapping, name: str, fields: Mapping[str, Any]) -> str | None:
    """The raw value a person left in ``name``'s column, None when unset."""
    raw = fields.get(mapping.fields[name])
    if mapping.is_unset(name, raw):
        return None
    text = str(raw)
    shared = mapping.fields.get("subcategory") == mapping.fields[name] and name == "category"
    if shared and text not in mapping.values.get("category", {}).values():
        # One Subject column for both: a subcategory node names its category too.
        parent = mapping.subcategory_parent.get(mapping.to_canonical("subcategory", text))
        mapped = mapping.to_raw("category", parent) if parent else None
        return mapped if mapped is not None else text
    return text


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


@dataclass
class _Row:
    label: str
    confidence: float
    action: str
    final: str | None  # the final value's canonical label, None when unknown
    agreed: bool | None  # None when the final value is unknown


def _rows(
    mapping: FieldMapping,
    name: str,
    suggestions: Mapping[str, Mapping[str, ShadowRecord]],
    finals: Finals,
) -> list[_Row]:
    rows = []
    for rid, fields in finals.values.items():
        raw = _final_raw(mapping, name, fields)
        final = None if raw is None else mapping.to_canonical(name, raw)
        s = suggestions.get(rid, {}).get(name)
        if s is None:
            rows.append(_Row("", 0.0, "", final, None))  # no suggestion: a coverage gap
            continue
        ours = mapping.to_raw(name, s.value)
        agreed = None if raw is None else (ours if ours is not None else s.value) == raw
        rows.append(_Row(s.value, s.confidence, s.action, final, agreed))
    return rows


def _at(rows: Sequence[_Row], total: int, threshold: float) -> dict[str, Any]:
    cleared = [r for r in rows if r.label and r.confidence >= threshold]
    known = [r for r in cleared if r.agreed is not None]
    right = sum(1 for r in known if r.agreed)
    return {
        "threshold": threshold,
        "cleared": len(cleared),
        "coverage": _ratio(len(cleared), total),
        "judged": len(known),
        "correct": right,
        "precision": _ratio(right, len(known)),
    }


def _field_report(
    mapping: FieldMapping,
    name: str,
    rows: Sequence[_Row],
    target: float,
    thresholds: Sequence[float],
) -> dict[str, Any]:
    total = len(rows)
    suggested = [r for r in rows if r.label]
    known = [r for r in suggested if r.agreed is not None]
    threshold = mapping.threshold(name)
    names = label_names(mapping).get(name, {})
    classes = []
    labels = natural_sorted({r.label for r in suggested} | {r.final for r in rows if r.final})
    for label in labels:
        mine = [r for r in rows if r.label == label]
        mine_known = [r for r in mine if r.agreed is not None]
        at = _at(mine, total, threshold)
        truth = [r for r in rows if r.final == label]
        found = sum(1 for r in truth if r.agreed and r.confidence >= threshold)
        known_name = names.get(label)
        classes.append(
            {
                "label": label,
                "raw": known_name.raw if known_name else None,
                "name": known_name.human if known_name else None,
                "suggestions": len(mine),
                "final_known": len(mine_known),
                "agreement": _ratio(sum(1 for r in mine_known if r.agreed), len(mine_known)),
                "cleared": at["cleared"],
                "judged": at["judged"],
                "precision": at["precision"],
                "final": len(truth),
                "recall_at_threshold": _ratio(found, len(truth)),
                "below_target": at["precision"] is not None and at["precision"] < target,
            }
        )
    current = _at(rows, total, threshold)
    by_action = {}
    for action in sorted({r.action for r in suggested}):
        acted = [r for r in known if r.action == action]
        by_action[action] = {
            "suggestions": sum(1 for r in suggested if r.action == action),
            "final_known": len(acted),
            "agreement": _ratio(sum(1 for r in acted if r.agreed), len(acted)),
        }
    return {
        "field": name,
        "mode": mapping.mode(name),
        "threshold": threshold,
        "target": target,
        "tickets": total,
        "suggestions": len(suggested),
        "final_known": len(known),
        "agreement": _ratio(sum(1 for r in known if r.agreed), len(known)),
        "coverage": current["coverage"],
        "precision": current["precision"],
        "cleared": current["cleared"],
        "judged": current["judged"],
        "below_target": current["precision"] is not None and current["precision"] < target,
        "classes_below_target": [c["label"] for c in classes if c["below_target"]],
        "by_action": by_action,
        "sweep": [_at(rows, total, t) for t in thresholds],
        "classes": classes,
    }


def build_report(
    records: Iterable[ShadowRecord],
    finals: Finals,
    mapping: FieldMapping,
    *,
    targets: Mapping[str, float] | None = None,
    default_target: float = DEFAULT_TARGET,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    until: float | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready object: ``tickets`` counts and ``fields`` (see module doc).

    ``records`` are the shadow records of the window; ``finals`` what ``read_finals`` found for
    their tickets; ``targets`` the precision each field must reach (``default_target`` else).
    """
    suggestions = latest_suggestions(records, mapping, until=until)
    versions: dict[str, dict[str, int]] = {"mapping": {}, "model": {}}
    for fields in suggestions.values():
        for row in fields.values():
            for kind, value in (("mapping", row.mapping_version), ("model", row.model_version)):
                versions[kind][value or "none"] = versions[kind].get(value or "none", 0) + 1
    closed = {rid: f for rid, f in finals.values.items() if rid in suggestions}
    scoped = Finals(closed, finals.not_final, finals.invalid_ids)
    names = natural_sorted({f for fields in suggestions.values() for f in fields})
    targets = dict(targets or {})
    return {
        "platform": mapping.system,
        "table": mapping.table,
        "mapping_version": mapping.fingerprint,
        "tickets": {
            "with_suggestions": len(suggestions),
            "closed": len(closed),
            "not_closed": finals.not_final,
            "invalid_ids": finals.invalid_ids,
        },
        "versions_seen": versions,
        "fields": {
            name: _field_report(
                mapping,
                name,
                _rows(mapping, name, suggestions, scoped),
                targets.get(name, default_target),
                thresholds,
            )
            for name in names
        },
    }
