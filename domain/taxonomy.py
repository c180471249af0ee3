"""One canonical taxonomy, bound per platform: labels defined once, raw values per mapping file.

A taxonomy file (YAML or JSON) defines the canonical labels of a desk once, with a short
description per label (for people and for LLM-based enrichers) and the keyword rules:

* ``categories``: category → ``{name, description, keywords, subcategories}``; each
  subcategory (``{name, description, keywords}``) belongs to its category. Subcategory names
  are unique across the taxonomy (they become ``values.subcategory``).
* ``labels``: any other field (``impact``, ``urgency``, ``priority``, or an admin label such as
  ``assignment_group`` or ``case_type``) → label → ``{name, description, keywords}``.
* ``priority_matrix``: impact × urgency → priority, in canonical labels (optional).

A *binding* is an ordinary mapping file (``domain.mapping``) with ``taxonomy: <name or path>``:
it binds labels to one platform's raw values (ServiceNow choice values, Dynamics Subject GUIDs
or option-set integers) and names the platform fields; ``load_mapping`` composes the two into one
``FieldMapping``. Keyword rules come from the taxonomy for every *bound* label; a binding's own
``keywords.<field>.<label>`` list replaces the taxonomy's for that label. A binding may bind a
subset of the labels; a value for a label the taxonomy lacks is an error naming its key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from domain.errors import ConfigError
from domain.models import FIELD_NAME_PATTERN

__all__ = [
    "TAXONOMY_DIR",
    "CategoryLabel",
    "Label",
    "Taxonomy",
    "compose_binding",
    "load_taxonomy",
    "resolve_taxonomy_path",
]

#: Where ``taxonomy: <name>`` is looked up (the starter taxonomies ship here).
TAXONOMY_DIR = Path(__file__).with_name("data") / "taxonomies"
_LABEL_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
_NAME_ONLY = re.compile(r"^[a-z][a-z0-9_]*$")


class Label(BaseModel):
    """One canonical label: a display name, a short description and its keyword rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, description="Display name people know (default: the key)")
    description: str = Field(min_length=1, max_length=500, description="One or two sentences")
    keywords: list[str] = Field(default_factory=list, description="enrichers/keywords.py syntax")


class CategoryLabel(Label):
    """A category label with its dependent subcategories."""

    subcategories: dict[str, Label] = Field(default_factory=dict)


class Taxonomy(BaseModel):
    """A desk's canonical labels, defined once for every platform (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    categories: dict[str, CategoryLabel] = Field(default_factory=dict)
    labels: dict[str, dict[str, Label]] = Field(default_factory=dict)
    priority_matrix: dict[str, dict[str, str]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Taxonomy:
        seen: dict[str, str] = {}
        for category, label in self.categories.items():
            _check_label_key(f"categories.{category}", category)
            for sub in label.subcategories:
                _check_label_key(f"categories.{category}.subcategories.{sub}", sub)
                if sub in seen:
                    raise ValueError(
                        f"categories.{category}.subcategories.{sub}: already a subcategory of "
                        f"{seen[sub]} (subcategory names are unique)"
                    )
                seen[sub] = category
        for field, by_label in self.labels.items():
            if not re.match(FIELD_NAME_PATTERN, field) or field in ("category", "subcategory"):
                raise ValueError(f"labels.{field}: not a field name (categories go elsewhere)")
            for key in by_label:
                _check_label_key(f"labels.{field}.{key}", key)
        return self

    def field_labels(self) -> dict[str, dict[str, Label]]:
        """Every field's labels, ``category`` and ``subcategory`` included (flattened)."""
        out: dict[str, dict[str, Label]] = {}
        if self.categories:
            out["category"] = dict(self.categories)
            out["subcategory"] = {
                sub: label
                for c in self.categories.values()
                for sub, label in c.subcategories.items()
            }
        out.update(self.labels)
        return out

    def subcategory_parent(self) -> dict[str, str]:
        """Subcategory → its category."""
        return {sub: cat for cat, c in self.categories.items() for sub in c.subcategories}


def _check_label_key(path: str, key: str) -> None:
    if not re.match(_LABEL_PATTERN, key):
        raise ValueError(f"{path}: {key!r} is not a label (lower case letters, digits, _)")


def resolve_taxonomy_path(ref: str, base_dir: Path) -> Path:
    """``it_service_desk`` → the shipped one; anything else is a path (relative to ``base_dir``)."""
    if _NAME_ONLY.match(ref):
        for suffix in (".yaml", ".yml", ".json"):
            candidate = TAXONOMY_DIR / f"{ref}{suffix}"
            if candidate.exists():
                return candidate
    path = Path(ref)
    return path if path.is_absolute() else base_dir / path


def load_taxonomy(ref: str | Path, base_dir: Path | None = None) -> Taxonomy:
    """Load and validate a taxonomy by shipped name or path.

    Raises:
        ConfigError: missing, unparsable or invalid (one line per problem, naming the key).
    """
    path = resolve_taxonomy_path(str(ref), base_dir or Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read taxonomy {ref!s} ({path}): {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"{path}: not valid {kind}{_where(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from exc


def _where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
    return f" (line {line})" if line else ""


def compose_binding(binding: dict[str, Any], taxonomy: Taxonomy, source: str) -> dict[str, Any]:
    """The ``FieldMapping`` data of a binding composed with its taxonomy.

    Raises:
        ConfigError: a bound value is not a label of the taxonomy (naming file, key and value).
    """
    labels = taxonomy.field_labels()
    values = binding.get("values") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: values: must be a mapping of field to label → raw value")
    problems = []
    for field, table in values.items():
        if not isinstance(table, dict):
            continue  # FieldMapping's validation names it
        known = labels.get(str(field))
        if known is None:
            problems.append(f"{source}: values.{field}: no such field in taxonomy {taxonomy.name}")
            continue
        for label in table:
            if label not in known:
                problems.append(
                    f"{source}: values.{field}.{label}: {label!r} is not a label of "
                    f"{field} in taxonomy {taxonomy.name}"
                )
    if problems:
        raise ConfigError("\n".join(problems))
    data = {k: v for k, v in binding.items() if k != "taxonomy"}
    data["taxonomy"] = taxonomy.name
    data["keywords"] = _keywords(values, labels, binding.get("keywords") or {})
    bound_subs = set(values.get("subcategory") or {})
    parents = {s: c for s, c in taxonomy.subcategory_parent().items() if s in bound_subs}
    data["subcategory_parent"] = {**parents, **(binding.get("subcategory_parent") or {})}
    if "priority_matrix" not in binding and taxonomy.priority_matrix is not None:
        data["priority_matrix"] = _bound_matrix(taxonomy.priority_matrix, values)
    names: dict[str, dict[str, str]] = {}
    descriptions: dict[str, dict[str, str]] = {}
    for field, table in values.items():
        for label in table:
            info = labels[field][label]
            descriptions.setdefault(field, {})[label] = info.description
            if info.name:
                names.setdefault(field, {})[label] = info.name
    data["names"] = {**names, **(binding.get("names") or {})}
    data["descriptions"] = {**descriptions, **(binding.get("descriptions") or {})}
    return data


def _bound_matrix(
    matrix: dict[str, dict[str, str]], values: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The taxonomy's impact × urgency matrix, cut to the impact and urgency labels bound."""
    impacts, urgencies = values.get("impact"), values.get("urgency")
    return {
        impact: {u: p for u, p in row.items() if urgencies is None or u in urgencies}
        for impact, row in matrix.items()
        if impacts is None or impact in impacts
    }


def _keywords(
    values: dict[str, dict[str, str]], labels: dict[str, dict[str, Label]], own: dict[str, Any]
) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for field, table in values.items():
        for label in table:
            words = list(labels[field][label].keywords)
            if words:
                out.setdefault(field, {})[label] = words
    # A category bound without (some of) its subcategories keeps their words as its own.
    bound_subs = set(values.get("subcategory") or {})
    for category in values.get("category") or {}:
        extra = [
            word
            for sub, label in _subcategories(labels, category).items()
            if sub not in bound_subs
            for word in label.keywords
        ]
        if extra:
            words = out.setdefault("category", {}).setdefault(category, [])
            words.extend(w for w in dict.fromkeys(extra) if w not in words)
    for field, by_label in own.items():
        if isinstance(by_label, dict):
            out.setdefault(str(field), {}).update(by_label)
    return out


def _subcategories(labels: dict[str, dict[str, Label]], category: str) -> dict[str, Label]:
    label = labels.get("category", {}).get(category)
    return label.subcategories if isinstance(label, CategoryLabel) else {}
