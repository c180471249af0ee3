"""Binding skeletons for ``mappings pull``: live choice lists → a YAML file the admin edits.

Each bound value is written as ``label: "raw"   # its display label``. With a taxonomy, a value
is bound when its raw value or display label matches one of the taxonomy's labels (by key or
by name); the others are written commented out, naming why, so the skeleton validates as it is
and the admin binds or drops them. Without a taxonomy every value is bound under a label made
from its display label (``1 - High`` → ``high``), and dependent subcategories get their
``subcategory_parent``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from domain.mapping import DEFAULT_PRIORITY_MATRIX
from domain.taxonomy import Taxonomy

__all__ = ["dataverse_skeleton", "servicenow_skeleton", "slug"]

_SUBJECTS = "_subjectid_value"


def slug(text: str) -> str:
    """A canonical label from a raw value or display label: ``1 - High`` → ``high``."""
    text = re.sub(r"^\s*\d+\s*-\s*", "", text)
    return re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_") or "value"


class _Binder:
    """Chooses each value's label (from the taxonomy when given) and renders the lines."""

    def __init__(self, taxonomy: Taxonomy | None) -> None:
        self.taxonomy = taxonomy
        self.labels = taxonomy.field_labels() if taxonomy else {}
        self.parents: dict[str, str] = {}  # subcategory label → category label (no taxonomy)

    def label_for(self, field: str, raw: str, display: str, taken: set[str]) -> str | None:
        """The label ``raw`` binds to, or None when the taxonomy has none for it."""
        if self.taxonomy is None:
            base = slug(display or raw)
            label, n = base, 2
            while label in taken:
                label, n = f"{base}_{n}", n + 1
            return label
        known = self.labels.get(field, {})
        wanted = {slug(raw), slug(display)}
        for key, info in known.items():
            if key in wanted or (info.name and slug(info.name) in wanted):
                return None if key in taken else key
        return None

    def render(self, field: str, entries: Sequence[tuple[str, str, str]]) -> list[str]:
        """``values.<field>`` lines; entries are (raw, display, comment suffix)."""
        lines = [f"  {field}:"]
        taken: set[str] = set()
        for raw, display, extra in entries:
            label = self.label_for(field, raw, display, taken)
            note = f"   # {display}{extra}" if display else ""
            if label is None:
                guess = slug(display or raw)
                why = f" (no label of {self.taxonomy.name} matches)" if self.taxonomy else ""
                lines.append(f"    # {guess}: {json.dumps(raw, ensure_ascii=False)}{note}{why}")
                continue
            taken.add(label)
            lines.append(f"    {label}: {json.dumps(raw, ensure_ascii=False)}{note}")
        return lines

    def head(self, system: str, table: str) -> list[str]:
        lines = [
            "# Bind each canonical label to this platform's RAW value (never its label); the",
            "# comments show the labels people see. Then: python -m triage mappings validate",
            f"# <file> --against {'servicenow' if system == 'servicenow' else 'dynamics'}",
            "version: 1",
            f"system: {system}",
            f"table: {table}",
        ]
        if self.taxonomy:
            lines.append(f"taxonomy: {self.taxonomy.name}")
        else:
            lines.append("# taxonomy: it_service_desk   # or customer_service, or a path")
        lines.append("integration_user: null        # set it (ServiceNow: the user name)")
        return lines


def servicenow_skeleton(
    rows: Sequence[Mapping[str, str]], *, table: str, taxonomy: Taxonomy | None
) -> str:
    """The skeleton from ServiceNow ``sys_choice`` rows (``list_choices``)."""
    binder = _Binder(taxonomy)
    by_element: dict[str, dict[str, tuple[str, list[str]]]] = {}
    for row in rows:
        values = by_element.setdefault(row["element"], {})
        label, parents = values.setdefault(row["value"], (row.get("label", ""), []))
        if row.get("dependent_value"):
            parents.append(row["dependent_value"])
    present = [e for e in ("category", "subcategory", "impact", "urgency", "priority")]
    present = [e for e in present if e in by_element]
    lines = binder.head("servicenow", table)
    lines += ["", "fields:", "  title: short_description", "  description: description"]
    lines += [f"  {e}: {e}" for e in present]
    lines += ["", "values:"]
    bound: dict[str, dict[str, str]] = {}
    for element in present:
        entries = []
        for raw, (display, parents) in by_element[element].items():
            extra = f" (under {', '.join(parents)})" if parents else ""
            entries.append((raw, display, extra))
        block = binder.render(element, entries)
        lines += block
        bound[element] = _bound_raw(block)
    category_labels = bound.get("category", {})
    if taxonomy is None and "subcategory" in by_element:
        subs = _bound_raw(binder.render("subcategory", _entries(by_element["subcategory"])))
        parents_block = []
        for raw, label in subs.items():
            parents = by_element["subcategory"][raw][1]
            parent = next((category_labels[p] for p in parents if p in category_labels), None)
            if parent:
                parents_block.append(f"  {label}: {parent}")
        if parents_block:
            lines += ["", "subcategory_parent:   # dependent choice lists", *parents_block]
    if taxonomy is None:
        lines += _matrix_lines(bound)
    lines += [
        "",
        "unset:                         # raw values that mean nobody chose yet",
        "  category: []                 # e.g. [inquiry], ServiceNow's default category",
    ]
    return "\n".join(lines) + "\n"


def _matrix_lines(bound: Mapping[str, Mapping[str, str]]) -> list[str]:
    """ServiceNow's default impact × urgency matrix, cut to the impact and urgency labels."""
    if "impact" not in bound and "urgency" not in bound:
        return []
    impacts = set(bound.get("impact", {}).values()) if "impact" in bound else None
    urgencies = set(bound.get("urgency", {}).values()) if "urgency" in bound else None
    lines = ["", "priority_matrix:              # impact -> urgency -> priority; check it"]
    for impact, row in DEFAULT_PRIORITY_MATRIX.items():
        if impacts is not None and impact not in impacts:
            continue
        cells = [f"{u}: {p}" for u, p in row.items() if urgencies is None or u in urgencies]
        lines.append(f"  {impact}: {{{', '.join(cells)}}}")
    return lines if len(lines) > 2 else [*lines[:1], "priority_matrix: {}"]


def _entries(values: Mapping[str, tuple[str, list[str]]]) -> list[tuple[str, str, str]]:
    return [(raw, display, "") for raw, (display, _) in values.items()]


def _bound_raw(block: Sequence[str]) -> dict[str, str]:
    """raw → label of the bound (uncommented) lines of a rendered block."""
    out = {}
    for line in block[1:]:
        text = line.strip()
        if text.startswith("#"):
            continue
        label, _, rest = text.partition(": ")
        raw = json.loads(rest.split("   # ")[0])
        out[str(raw)] = label
    return out


def dataverse_skeleton(
    rows: Sequence[Mapping[str, str]],
    subjects: Sequence[Mapping[str, str]],
    columns: Mapping[str, str],
    *,
    table: str,
    taxonomy: Taxonomy | None,
) -> str:
    """The skeleton from option-set metadata (``list_choices``) and the Subject tree."""
    binder = _Binder(taxonomy)
    options: dict[str, list[tuple[str, str, str]]] = {}
    for row in rows:
        options.setdefault(row["element"], []).append((row["value"], row.get("label", ""), ""))
    lines = binder.head("dataverse", table)
    lines += ["", "fields:", "  title: title", "  description: description"]
    if subjects:
        lines += [f"  category: {_SUBJECTS}", f"  subcategory: {_SUBJECTS}"]
    bound = {f: c for f, c in columns.items() if c in options}
    lines += [f"  {field}: {column}" for field, column in bound.items()]
    lines += [f"  # {f}: {c}   (no such option set on {table})" for f, c in columns.items()
              if c not in options]  # fmt: skip
    lines += ["", "values:"]
    sub_parent: dict[str, str] = {}
    if subjects:
        title = {s["subjectid"]: s["title"] for s in subjects}
        parent = {s["subjectid"]: s["_parentsubject_value"] for s in subjects}
        tops = [(s["subjectid"], s["title"], "") for s in subjects if not parent[s["subjectid"]]]
        category_block = binder.render("category", tops)
        lines += category_block
        categories = _bound_raw(category_block)
        subs = []
        for s in subjects:
            sid = s["subjectid"]
            if parent[sid]:
                subs.append((sid, s["title"], f"   [{_path(sid, title, parent)}]"))
        sub_block = binder.render("subcategory", subs)
        lines += sub_block
        for raw, label in _bound_raw(sub_block).items():
            top = _top(raw, parent)
            if top in categories:
                sub_parent[label] = categories[top]
    option_labels = {}
    for field, column in bound.items():
        block = binder.render(field, options[column])
        lines += block
        option_labels[field] = _bound_raw(block)
    if taxonomy is None and sub_parent:
        lines += ["", "subcategory_parent:   # the Subject tree"]
        lines += [f"  {s}: {c}" for s, c in sub_parent.items()]
    if taxonomy is None:
        lines += _matrix_lines(option_labels)
    lines += ["", "write_back:"]
    lines += [f"  {field}: true" for field in bound]
    lines += [
        "",
        "# unset:                       # raw values that mean nobody chose yet",
        '#   priority: ["2"]            # Normal, the form\'s default',
        "note_field: annotation",
    ]
    return "\n".join(lines) + "\n"


def _path(sid: str, title: Mapping[str, str], parent: Mapping[str, str]) -> str:
    names, seen = [], set()
    node = sid
    while node and node not in seen:
        seen.add(node)
        names.append(title.get(node, node))
        node = parent.get(node, "")
    return " > ".join(reversed(names))


def _top(sid: str, parent: Mapping[str, str]) -> str:
    seen = set()
    while parent.get(sid) and sid not in seen:
        seen.add(sid)
        sid = parent[sid]
    return sid
