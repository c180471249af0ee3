"""The Web API's vocabulary shared by the Dataverse connectors: headers, checks, query text.

Identifiers (tables, columns, GUIDs) are checked before they reach a URL; a bad one raises
``RejectedError`` (our request would be wrong) without echoing more than a short excerpt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from connectors._http import request_id_of
from connectors.base import System
from domain.errors import ConfigError, RejectedError, UnavailableError

__all__ = [
    "API",
    "AUDIT_FIELDS",
    "BASE_HEADERS",
    "CHOICE_RE",
    "ENTITY_SETS",
    "FIELD_RE",
    "GUID_RE",
    "NOTE_FIELD",
    "NOTE_MARKER_RE",
    "ORDER_RE",
    "QUERY_SAFE",
    "READ_HEADERS",
    "SET_RE",
    "SYSTEM",
    "check_field",
    "check_field_types",
    "check_guid",
    "entity_set",
    "json",
    "plain",
    "query",
    "rows",
    "same_origin",
    "select",
]

SYSTEM: System = "dataverse"
API = "/api/data/v9.2"
NOTE_FIELD = "annotation"  # pseudo-field of update(): the note to add to the record
ENTITY_SETS: Mapping[str, str] = {
    "incident": "incidents",
    "annotation": "annotations",
    "email": "emails",
    "subject": "subjects",
}
BASE_HEADERS: Mapping[str, str] = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}
READ_HEADERS: Mapping[str, str] = {**BASE_HEADERS, "If-None-Match": "null"}
AUDIT_FIELDS = ("modifiedon", "_modifiedby_value")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
ORDER_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?: (?:asc|desc))?(?:,[A-Za-z_][A-Za-z0-9_]*(?: (?:asc|desc))?)*$"
)
CHOICE_RE = re.compile(r"^-?\d{1,10}$")
NOTE_MARKER_RE = re.compile(r"^[A-Za-z0-9 _.:-]{1,80}$")
# Characters left readable in query option values; everything else is percent-encoded.
QUERY_SAFE = "(),'=:/@*."


def check_field_types(field_types: Mapping[str, str]) -> dict[str, str]:
    for field, kind in field_types.items():
        lookup = kind.startswith("lookup:") and SET_RE.fullmatch(kind.removeprefix("lookup:"))
        if not FIELD_RE.fullmatch(field) or not (kind in ("text", "choice") or lookup):
            raise ConfigError(f"invalid Dataverse field type for {field[:80]!r}: {kind[:40]!r}")
        if lookup and not (field.startswith("_") and field.endswith("_value")):
            raise ConfigError(f"lookup column {field!r} must be named _<name>_value")
    return dict(field_types)


def entity_set(table: str) -> str:
    entity_set = ENTITY_SETS.get(table)
    if entity_set is None:
        raise RejectedError(f"unsupported Dataverse table {table[:80]!r}", system=SYSTEM)
    return entity_set


def check_guid(record_id: str) -> str:
    if not GUID_RE.fullmatch(record_id):
        raise RejectedError(f"invalid record id {record_id[:40]!r}", system=SYSTEM)
    return record_id.lower()


def check_field(field: str) -> str:
    if not FIELD_RE.fullmatch(field):
        raise RejectedError(f"invalid column name {field[:80]!r}", system=SYSTEM)
    return field


def select(fields: Sequence[str]) -> str:
    return ",".join(dict.fromkeys(check_field(f) for f in fields))


def query(options: Mapping[str, str]) -> str:
    return "&".join(f"{name}={quote(value, safe=QUERY_SAFE)}" for name, value in options.items())


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """The record's values without OData annotations (``@odata.etag``, formatted values)."""
    return {k: v for k, v in body.items() if "@" not in k}


def json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UnavailableError(
            f"expected a JSON object from the Web API, got {response.headers.get('Content-Type', 'unknown')[:60]}",
            system=SYSTEM,
            status_code=response.status_code,
            request_id=request_id_of(response),
        )
    return body


def rows(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = body.get("value")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UnavailableError("Web API collection without a value array", system=SYSTEM)
    return rows


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())
