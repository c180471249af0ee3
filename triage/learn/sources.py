"""Labelled training data pulled through a platform connector (ServiceNow or Dataverse).

Both platforms go through one loop (``labelled_from_connector``): page through the records the
platform query selects, skip those whose last update was our own (their labels are our guesses,
not a person's), read each label column as its raw value (a choice value, an option-set int, a
subject GUID) and map it to the canonical label when the mapping maps it (else keep it raw).
The text is what the pipeline enriches: title line + description, or, for an empty
description, the platform's fallback text (a Dynamics case created from an e-mail: its first
e-mail's body).

What differs per platform is the query: ServiceNow takes an encoded query (closed incidents by
default), Dataverse an OData ``$filter``, always restricted to resolved cases
(``statecode eq 1``) and AND-ed with the admin's own filter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from domain.errors import ConfigError

if TYPE_CHECKING:
    from connectors.base import SourceRecord
    from domain.mapping import FieldMapping

__all__ = [
    "DEFAULT_LABELS",
    "DEFAULT_SERVICENOW_QUERY",
    "RESOLVED_CASES_FILTER",
    "LabelledData",
    "RecordSource",
    "dataverse_filter",
    "label_columns",
    "labelled_from_connector",
]

log = logging.getLogger(__name__)

#: Resolved (6) or closed (7) incidents, oldest first: their labels were reviewed by people.
DEFAULT_SERVICENOW_QUERY = "stateIN6,7^ORDERBYsys_id"
#: Resolved Dynamics cases (statecode 1): an agent closed them, so their labels were reviewed.
RESOLVED_CASES_FILTER = "statecode eq 1"
#: The label fields trained when no ``--label`` is named (those the mapping maps).
DEFAULT_LABELS = ("category", "subcategory", "impact", "urgency")
MAX_FILTER_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RecordSource(Protocol):
    """The part of ``connectors.base.Connector`` that training needs."""

    @property
    def system(self) -> str:
        """The platform name, e.g. ``servicenow``."""
        ...

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        """Yield every record matching a platform query, paging in a stable order."""
        ...

    def own_user(self) -> str | None:
        """Who our own writes appear as, when the platform can tell (Dataverse WhoAmI)."""
        ...

    def fallback_text(self, table: str, record_id: str) -> str | None:
        """Text of a record whose description is empty (a Dynamics case's first e-mail)."""
        ...


@dataclass
class LabelledData:
    """Texts (title line + body, like ``Ticket.text``) and a label column per field.

    ``skipped``: records left out as machine-labelled; ``from_fallback``: texts whose body
    came from the platform's fallback (a case's first e-mail) because the description was empty.
    """

    texts: list[str]
    labels: dict[str, list[str | None]]
    source: str
    skipped: int = 0
    from_fallback: int = 0


def label_columns(specs: Sequence[str], mapping: FieldMapping) -> dict[str, str]:
    """``--label FIELD[=COLUMN]`` → {canonical field: platform column}.

    A bare ``FIELD`` reads the column the mapping names for it. Without any spec, the
    ``DEFAULT_LABELS`` the mapping maps are used; ``ConfigError`` when that leaves nothing or a
    field has no column.
    """
    columns: dict[str, str] = {}
    missing: list[str] = []
    for spec in specs:
        field, sep, column = (part.strip() for part in spec.partition("="))
        if not field or (sep and not column):
            raise ConfigError(f"--label {spec[:80]!r}: expected FIELD or FIELD=COLUMN")
        if column:
            columns[field] = column
        elif field in mapping.fields:
            columns[field] = mapping.fields[field]
        else:
            missing.append(field)
    if missing:
        raise ConfigError(
            f"the mapping has no platform field for {', '.join(missing)} "
            "(name the column: --label FIELD=COLUMN)"
        )
    if not specs:
        columns = {f: mapping.fields[f] for f in DEFAULT_LABELS if f in mapping.fields}
        if not columns:
            raise ConfigError(
                f"the mapping maps none of {', '.join(DEFAULT_LABELS)}: name the label columns "
                "with --label FIELD=COLUMN (e.g. category=_subjectid_value)"
            )
    return columns


def dataverse_filter(admin_filter: str | None) -> str:
    """The ``$filter`` of a training pull: resolved cases, AND-ed with the admin's filter.

    The admin's filter is parenthesised so an ``or`` in it cannot widen the pull past resolved
    cases; ``ConfigError`` (never echoing the filter) when it is empty, too long, holds control
    characters or unbalanced parentheses.
    """
    if admin_filter is None:
        return RESOLVED_CASES_FILTER
    text = admin_filter.strip()
    if not text:
        raise ConfigError("--filter is empty")
    if len(text) > MAX_FILTER_CHARS:
        raise ConfigError(f"--filter is longer than {MAX_FILTER_CHARS} characters")
    if _CONTROL.search(text):
        raise ConfigError("--filter holds control characters")
    if not _balanced(text):
        raise ConfigError("--filter has unbalanced parentheses or quotes")
    return f"{RESOLVED_CASES_FILTER} and ({text})"


def _balanced(text: str) -> bool:
    """Parentheses outside ``'string'`` literals balance, and every literal is closed."""
    depth = 0
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted  # '' (an escaped quote) toggles twice
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def labelled_from_connector(
    connector: RecordSource, mapping: FieldMapping, query: str, columns: Mapping[str, str]
) -> LabelledData:
    """Human-labelled records through the connector, labels mapped to canonical values.

    ``query`` is the platform's (encoded query, OData ``$filter``); ``columns`` maps each label
    field to the platform column holding it (see ``label_columns``).
    """
    title_col = mapping.fields["title"]
    body_col = mapping.fields["description"]
    select = sorted({title_col, body_col, mapping.last_updated_by, *columns.values()})
    # The pipeline's loop guard, reused: the mapping's name, else the platform's (WhoAmI).
    own = mapping.integration_user or connector.own_user()
    data = LabelledData([], {f: [] for f in columns}, f"{connector.system}:{mapping.table}")
    for record in connector.iter_records(mapping.table, query, select):
        values = record.fields
        # Last touched by us and never by a person since: its labels are our own guesses.
        if own and values.get(mapping.last_updated_by) == own:
            data.skipped += 1
            continue
        title = str(values.get(title_col) or "")
        body = str(values.get(body_col) or "")
        if not body.strip():
            # The same text the pipeline would enrich: a Dynamics e-mail case's first e-mail.
            extra = connector.fallback_text(mapping.table, record.record_id)
            if extra:
                body = extra
                data.from_fallback += 1
        data.texts.append(f"{title}\n{body}".strip())
        for field, column in columns.items():
            raw = values.get(column)
            unset = mapping.is_unset(field, raw)
            data.labels[field].append(None if unset else mapping.to_canonical(field, str(raw)))
    log.info(
        "fetched %d labelled records from %s (%d skipped as machine-labelled, %d texts from "
        "the fallback)",
        len(data.texts),
        data.source,
        data.skipped,
        data.from_fallback,
    )
    return data
