"""The ServiceNow Table API's vocabulary: constants, name checks, the envelope and paging helpers.

Pure (no session, no I/O): what ``connectors.servicenow.ServiceNowConnector`` and
``connectors.servicenow_batch`` send (``BASE_PARAMS``, ``JSON_HEADERS``, the field lists), how a
table, field or sys_id is checked before it goes into a URL or an encoded query (a bad one raises
``RejectedError``), how a ``{"result": ...}`` answer is validated and how a page's rows become
deduplicated ``SourceRecord``s. ``connectors.servicenow`` re-exports the names callers import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ValidationError

from connectors._http import request_id_of
from connectors.base import SourceRecord, System
from domain.errors import RejectedError, UnavailableError
from domain.models import SYS_ID_PATTERN, TABLE_PATTERN

__all__ = [
    "AUDIT_FIELDS",
    "AUDIT_ROW_FIELDS",
    "BASE_PARAMS",
    "CHOICE_FIELDS",
    "FIELD_RE",
    "HAS_ORDER",
    "JOURNAL_ELEMENTS",
    "JOURNAL_FIELDS",
    "JSON_HEADERS",
    "NOTE_MARKER_RE",
    "SYSTEM",
    "stable_order",
]

SYSTEM: System = "servicenow"
TABLE_RE = re.compile(TABLE_PATTERN)
SYS_ID_RE = re.compile(SYS_ID_PATTERN)
# Column names, optionally dot-walked (caller_id.user_name); nothing that could end an encoded
# query term (^, =, comma).
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$")
ORDERS_BY_SYS_ID = re.compile(r"(?:^|\^)ORDERBY(?:DESC)?sys_id(?:\^|$)")
HAS_ORDER = re.compile(r"(?:^|\^)ORDERBY(?:DESC)?[a-z]")
BASE_PARAMS: Mapping[str, str] = {
    "sysparm_display_value": "false",
    "sysparm_exclude_reference_link": "true",
}
JSON_HEADERS: Mapping[str, str] = {
    "Accept": "application/json",
    "Content-Type": "application/json",
}
# Returned by update() besides the changed fields, so callers see who wrote last and when.
AUDIT_FIELDS = ("sys_id", "sys_updated_by", "sys_updated_on", "sys_mod_count")
CHOICE_FIELDS = ("name", "element", "value", "label", "dependent_value")
JOURNAL_FIELDS = ("sys_id", "element", "value", "sys_created_on", "sys_created_by")
JOURNAL_ELEMENTS = frozenset({"work_notes", "comments"})
AUDIT_ROW_FIELDS = ("fieldname", "oldvalue", "newvalue", "user", "record_checkpoint")
# What a note marker may hold: it goes into an encoded query (no ^, no =).
NOTE_MARKER_RE = re.compile(r"^[A-Za-z0-9 _.:-]{1,80}$")


_T = TypeVar("_T", bound=BaseModel)


class _One(BaseModel):
    result: dict[str, Any]


class _Many(BaseModel):
    result: list[dict[str, Any]]


def stable_order(query: str) -> str:
    """Append ``ORDERBYsys_id`` so offset pages are stable (a tiebreak after any other order)."""
    query = query.strip().strip("^")
    if ORDERS_BY_SYS_ID.search(query):
        return query
    return f"{query}^ORDERBYsys_id" if query else "ORDERBYsys_id"


def _parse(model: type[_T], response: requests.Response) -> _T:
    """Validate the ``{"result": ...}`` envelope; a non-JSON body means a proxy or sleeping PDI."""
    request_id = request_id_of(response)
    try:
        body = response.json()
    except ValueError as exc:
        kind = response.headers.get("Content-Type", "unknown")
        raise UnavailableError(
            f"expected JSON from the Table API, got {kind}",
            system=SYSTEM,
            status_code=response.status_code,
            request_id=request_id,
        ) from exc
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RejectedError(
            "Table API response lacks the expected result envelope",
            system=SYSTEM,
            status_code=response.status_code,
            request_id=request_id,
        ) from exc


def _check_table(table: str) -> str:
    if not TABLE_RE.fullmatch(table):
        raise RejectedError(f"invalid table name {table[:80]!r}", system=SYSTEM)
    return table


def _check_sys_id(record_id: str) -> str:
    if not SYS_ID_RE.fullmatch(record_id):
        raise RejectedError(f"invalid sys_id {record_id[:40]!r}", system=SYSTEM)
    return record_id


def _check_field(field: str) -> str:
    if not FIELD_RE.fullmatch(field) or len(field) > 200:
        raise RejectedError(f"invalid field name {field[:80]!r}", system=SYSTEM)
    return field


def _mod_count(record: SourceRecord | None) -> int | None:
    if record is None:
        return None
    try:
        return int(str(record.fields.get("sys_mod_count")))
    except ValueError:
        return None


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())


def _new_records(table: str, rows: list[dict[str, Any]], seen: set[str]) -> Iterator[SourceRecord]:
    for row in rows:
        sys_id = row.get("sys_id")
        if not isinstance(sys_id, str) or not sys_id:
            raise UnavailableError(f"{table} row without sys_id", system=SYSTEM, status_code=200)
        # Offset pages can overlap when records change between requests.
        if sys_id not in seen:
            seen.add(sys_id)
            yield SourceRecord(SYSTEM, table, sys_id, row)
