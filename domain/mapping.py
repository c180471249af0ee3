"""The admin mapping: canonical labels ↔ platform raw values, thresholds and keyword rules.

A mapping file (YAML or JSON) tells us, for one platform table:

* ``fields``: canonical field → platform field (``title``/``description`` are read, the rest
  are written). ``summary`` names the field that receives the short summary.
* ``values``: canonical value → the platform's **raw** choice value (never its label).
* ``unset``: raw values that count as "nobody chose this yet" (ServiceNow's default category
  ``inquiry``). The empty value always counts as unset.
* ``min_confidence``: per-field threshold a suggestion must clear to be written.
* ``keywords``: multilingual keyword rules, canonical value → keywords (admin override layer).
* ``priority_matrix``: impact × urgency → priority (ServiceNow's default 3×3 if omitted).
* ``taxonomy``: a canonical taxonomy (shipped name or path, ``domain.taxonomy``) this file binds;
  labels, descriptions and keyword rules then come from it and the file only binds raw values.
* ``names`` / ``descriptions``: per field and label, the display name and a short description.

Validation errors name the key that is wrong (``values.impact.high: ...``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from domain.errors import ConfigError
from domain.models import FIELD_NAME_PATTERN, Ticket

__all__ = [
    "DEFAULT_MAPPING_PATH",
    "DEFAULT_PRIORITY_MATRIX",
    "DYNAMICS_DEFAULT_MAPPING_PATH",
    "FieldMapping",
    "format_validation_error",
    "load_mapping",
    "parse_mapping",
    "to_ticket",
]

DEFAULT_MAPPING_PATH = Path(__file__).with_name("data") / "servicenow_default_mapping.yaml"
#: The Dynamics 365 default: out-of-box Case columns only (see the file's header).
DYNAMICS_DEFAULT_MAPPING_PATH = Path(__file__).with_name("data") / "dynamics_default_mapping.yaml"

#: ServiceNow's out-of-box priority lookup (dl_u_priority): impact × urgency → priority.
DEFAULT_PRIORITY_MATRIX: dict[str, dict[str, str]] = {
    "high": {"high": "critical", "medium": "high", "low": "moderate"},
    "medium": {"high": "high", "medium": "moderate", "low": "low"},
    "low": {"high": "moderate", "medium": "low", "low": "planning"},
}

_READ_ONLY_FIELDS = ("title", "description")
_CACHED = ("_reverse_values", "fingerprint")  # cached_property names (see model_copy)
_PLATFORM_DEFAULTS = {
    "servicenow": {"updated_by": "sys_updated_by", "number": "number"},
    "dataverse": {"updated_by": "_modifiedby_value", "number": "ticketnumber"},
}


class FieldMapping(BaseModel):
    """One platform table's admin mapping (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    system: Literal["servicenow", "dataverse"] = "servicenow"
    table: str = Field("incident", pattern=r"^[a-z][a-z0-9_]*$")
    fields: dict[str, str] = Field(min_length=1)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    unset: dict[str, list[str]] = Field(default_factory=dict)
    min_confidence: dict[str, float] = Field(default_factory=dict)
    default_min_confidence: float = Field(0.9, ge=0.0, le=1.0)
    write_back: dict[str, bool] = Field(default_factory=dict)
    keywords: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    subcategory_parent: dict[str, str] = Field(default_factory=dict)
    priority_matrix: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PRIORITY_MATRIX.items()}
    )
    note_field: str = "work_notes"
    note_prefix: str = "[auto-triage]"
    integration_user: str | None = None
    #: Who made the record's last update (the loop guard compares it with integration_user);
    #: None means the platform's own: ServiceNow ``sys_updated_by``, Dataverse
    #: ``_modifiedby_value`` (the application user's systemuserid, resolved with WhoAmI).
    updated_by_field: str | None = None
    #: Read besides the mapped fields: the record number as people know it.
    number_field: str | None = None
    #: Per field: ``fill`` (write when unset and confident; the default), ``suggest`` (say it in
    #: the note, write no value), ``off`` (not enriched at all). How an admin goes live field
    #: by field once the shadow-mode evidence is good.
    modes: dict[str, Literal["fill", "suggest", "off"]] = Field(default_factory=dict)
    #: Dataverse lookup columns (read as ``_x_value``) → the entity set they point to; written
    #: as ``x@odata.bind: /<set>(<guid>)``. The Subject tree is known already.
    lookups: dict[str, str] = Field(default_factory=lambda: {"_subjectid_value": "subjects"})
    #: The taxonomy this file binds (a shipped name such as ``it_service_desk``, or a path
    #: relative to this file); ``load_mapping`` composes it.
    taxonomy: str | None = None
    #: Per field and label: the display name people know ("Returnering af produkt").
    names: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: Per field and label: a short description (for people and LLM-based enrichers).
    descriptions: dict[str, dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> FieldMapping:
        _check_names(self)
        _check_keywords(self)
        _check_priority_matrix(self)
        if self.system == "servicenow" and self.write_back.get("priority", False):
            raise ValueError(
                "write_back.priority: ServiceNow computes priority from impact and urgency; "
                "it must not be written"
            )
        return self

    # -- lookups -------------------------------------------------------------------------

    @cached_property
    def _reverse_values(self) -> dict[str, dict[str, str]]:
        return {f: {raw: canon for canon, raw in m.items()} for f, m in self.values.items()}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; cached lookups are recomputed, never carried over."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _CACHED:
            copy.__dict__.pop(name, None)
        return copy

    def mode(self, field: str) -> str:
        """``fill``, ``suggest`` or ``off`` for ``field`` (``fill`` unless the admin said)."""
        return self.modes.get(field, "fill")

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the mapping's content: the mapping version a note records."""
        # Fields left at their empty default stay out, so an unchanged file keeps its version.
        empty = {k for k in ("taxonomy", "names", "descriptions") if not getattr(self, k)}
        text = self.model_dump_json(exclude={"integration_user", *empty})
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def human_label(self, field: str, label: str) -> str | None:
        """The display name of a canonical label, when the mapping (or its taxonomy) has one."""
        return self.names.get(field, {}).get(label)

    def description(self, field: str, label: str) -> str | None:
        """The short description of a canonical label, when the mapping has one."""
        return self.descriptions.get(field, {}).get(label)

    def threshold(self, field: str) -> float:
        """The minimum confidence a suggestion for ``field`` needs to be written."""
        return self.min_confidence.get(field, self.default_min_confidence)

    def writes(self, field: str) -> bool:
        """Whether suggestions for ``field`` are written back at all."""
        if field in _READ_ONLY_FIELDS or field not in self.fields:
            return False
        return self.write_back.get(field, field != "priority")

    def to_raw(self, field: str, value: str) -> str | None:
        """The platform raw value for a canonical value, or None when none is mapped.

        Fields without a ``values`` table (free text such as the summary) pass through.
        """
        table = self.values.get(field)
        if table is None:
            return value
        return table.get(value)

    def to_canonical(self, field: str, raw: str) -> str:
        """The canonical value for a platform raw value (the raw value itself when unmapped)."""
        return self._reverse_values.get(field, {}).get(raw, raw)

    def is_unset(self, field: str, raw: object) -> bool:
        """Whether a platform value means "nobody chose this yet"."""
        if raw is None:
            return True
        text = str(raw).strip()
        return text == "" or text in self.unset.get(field, [])

    @property
    def last_updated_by(self) -> str:
        """The platform field naming who made the record's last update."""
        return self.updated_by_field or _PLATFORM_DEFAULTS[self.system]["updated_by"]

    @property
    def record_number(self) -> str:
        """The platform field holding the number people know the record by."""
        return self.number_field or _PLATFORM_DEFAULTS[self.system]["number"]

    def column_types(self) -> dict[str, str]:
        """How a Dataverse connector converts each written column: choice, lookup or text.

        A column whose canonical field has a ``values`` table holds option-set integers
        (``choice``); a lookup column (``_x_value``) binds to its entity set (``lookup:<set>``);
        anything else is text.
        """
        types: dict[str, str] = {}
        for canonical, column in self.fields.items():
            if canonical in _READ_ONLY_FIELDS:
                continue
            if column in self.lookups:
                types[column] = f"lookup:{self.lookups[column]}"
            elif canonical in self.values:
                types[column] = "choice"
            else:
                types[column] = "text"
        return types

    def platform_fields(self) -> list[str]:
        """The platform fields to read for one ticket."""
        extra = {self.last_updated_by, self.record_number}
        if self.system == "servicenow":
            extra.add("sys_mod_count")  # our write's race check compares it
        return sorted({*self.fields.values(), *extra})


def _check_names(m: FieldMapping) -> None:
    for key in (*m.fields, *m.values, *m.keywords, *m.min_confidence):
        if not re.match(FIELD_NAME_PATTERN, key):
            raise ValueError(f"{key!r} is not a valid field name")
    for name in _READ_ONLY_FIELDS:
        if name not in m.fields:
            raise ValueError(f"fields.{name}: required (where the ticket text is read from)")
    for field, threshold in m.min_confidence.items():
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"min_confidence.{field}: {threshold} is not within 0..1")


def _check_keywords(m: FieldMapping) -> None:
    for field, by_value in m.keywords.items():
        known = m.values.get(field)
        for value in by_value:
            if known is not None and value not in known:
                raise ValueError(f"keywords.{field}.{value}: no such value in values.{field}")
    categories = m.values.get("category")
    for sub, parent in m.subcategory_parent.items():
        if categories is not None and parent not in categories:
            raise ValueError(f"subcategory_parent.{sub}: unknown category {parent!r}")


def _check_priority_matrix(m: FieldMapping) -> None:
    impacts = set(m.values.get("impact", DEFAULT_PRIORITY_MATRIX))
    urgencies = set(m.values.get("urgency", DEFAULT_PRIORITY_MATRIX))
    for impact, row in m.priority_matrix.items():
        if impact not in impacts:
            raise ValueError(f"priority_matrix.{impact}: not a value of values.impact")
        for urgency in row:
            if urgency not in urgencies:
                raise ValueError(
                    f"priority_matrix.{impact}.{urgency}: not a value of values.urgency"
                )


def to_ticket(fields: Mapping[str, Any], mapping: FieldMapping, *, record_id: str) -> Ticket:
    """Build the canonical ``Ticket`` from a platform record's raw fields."""

    def text_of(canonical: str) -> str:
        raw = fields.get(mapping.fields[canonical])
        return "" if raw is None else str(raw)

    current: dict[str, str | None] = {}
    for canonical, platform_field in mapping.fields.items():
        if canonical in _READ_ONLY_FIELDS:
            continue
        raw = fields.get(platform_field)
        current[canonical] = (
            None if mapping.is_unset(canonical, raw) else mapping.to_canonical(canonical, str(raw))
        )
    number = fields.get(mapping.record_number)
    return Ticket(
        system=mapping.system,
        record_id=record_id,
        number=str(number) if number else None,
        title=text_of("title"),
        description=text_of("description"),
        current=current,
    )


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem, each naming the key path (``values.impact.high: ...``)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)


def _load_yaml(text: str) -> Any:
    # libyaml's safe loader when the wheel has it: ~10x faster, which shows in cold start.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a *safe* loader either way


def load_mapping(path: str | Path | None = None) -> FieldMapping:
    """Load and validate a mapping file (YAML or JSON); the embedded default when ``path`` is None.

    Raises:
        ConfigError: the file is missing, unparsable or fails validation (naming the key).
    """
    source = Path(path) if path else DEFAULT_MAPPING_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read mapping file {source}: {exc.strerror}") from exc
    return parse_mapping(text, name=str(source), json_format=source.suffix == ".json",
                         base_dir=source.parent)  # fmt: skip


def parse_mapping(
    text: str, *, name: str, json_format: bool = False, base_dir: Path | None = None
) -> FieldMapping:
    """Validate a mapping's text; ``name`` (a file name, never a URL with a token) in errors.

    A ``taxonomy:`` reference is resolved against ``base_dir`` (or the built-in taxonomies).
    """
    try:
        data = json.loads(text) if json_format else _load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if json_format else "YAML"
        raise ConfigError(f"{name}: not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of keys to values")
    if data.get("taxonomy") is not None:
        from domain.taxonomy import TAXONOMY_DIR, compose_binding, load_taxonomy

        taxonomy = load_taxonomy(str(data["taxonomy"]), base_dir or TAXONOMY_DIR)
        data = compose_binding(data, taxonomy, name)
    try:
        return FieldMapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(name, exc)) from exc
