"""ServiceNow Table API connector: raw values in, raw values out.

Every call sends ``sysparm_display_value=false`` (raw DB values), ``sysparm_exclude_reference_link
=true`` (reference fields as plain sys_id strings) and an explicit ``sysparm_fields``. Paging
always ends the query with ``ORDERBYsys_id`` (PySNC issue #96: without a stable order, offset
pages repeat and skip records) and dedupes by sys_id.

Table names, field names and sys_ids are checked before any URL or encoded query is built. A bad
one raises ``RejectedError`` (status_code None): like a 4xx, it means our request is wrong and
must not be retried, and it stays inside the ``EnrichmentError`` tree the entry points handle.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ValidationError

from connectors._auth import BearerAuth, ServiceNowOAuth
from connectors._http import HttpClient, request_id_of
from connectors.base import RecordPage, SourceRecord, System, WriteOutcome
from domain.errors import ConfigError, RejectedError, UnavailableError
from domain.models import SYS_ID_PATTERN, TABLE_PATTERN
from domain.redact import Redactor
from domain.settings import HttpSettings, ServiceNowSettings, Settings

if TYPE_CHECKING:
    from connectors.servicenow_batch import AnyUpdate

__all__ = ["ServiceNowConnector", "build_servicenow_connector"]

log = logging.getLogger(__name__)

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


class ServiceNowConnector:
    """Reads and writes ServiceNow records through the Table API."""

    system: System = SYSTEM

    def __init__(
        self,
        settings: ServiceNowSettings,
        http_settings: HttpSettings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
        pacer: Callable[[], AbstractContextManager[None]] | None = None,
        on_throttle: Callable[[float], None] | None = None,
    ) -> None:
        """``pacer`` (each request is sent inside ``pacer()``) and ``on_throttle`` (told of
        every 429) let a backfill share one request budget across instances."""
        self._settings = settings
        self._base = settings.base_url
        self._pacer = pacer
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        # Error text built from responses is scrubbed of the configured password or client
        # secret in every form; a shared redactor (the runtime's) gets them added.
        self.redactor = redactor if redactor is not None else Redactor()
        self._http = HttpClient(
            SYSTEM,
            http_settings,
            session=self._session,
            auth=_auth_for(settings, http_settings, self._session, monotonic, self.redactor),
            sleep=sleep,
            now=now,
            monotonic=monotonic,
            redactor=self.redactor,
            pacer=pacer,
            on_throttle=on_throttle,
        )

    def get(self, table: str, record_id: str, fields: Sequence[str]) -> SourceRecord:
        """Read one record's raw values (``NotFoundError`` when missing or hidden by an ACL)."""
        url = self._record_url(table, record_id)
        response = self._http.request("GET", url, params=self._params(fields), headers=JSON_HEADERS)
        return SourceRecord(SYSTEM, table, record_id, _parse(_One, response).result)

    def update(
        self,
        table: str,
        record_id: str,
        changes: Mapping[str, str],
        *,
        etag: str | None = None,
    ) -> SourceRecord:
        """PATCH raw values in one request; return the changed and audit fields as stored.

        ``etag`` is ignored: the Table API has no If-Match. Callers compare ``sys_mod_count``.
        """
        if not changes:
            raise RejectedError("update with no changes", system=SYSTEM)
        url = self._record_url(table, record_id)
        fields = _dedupe([*changes, *AUDIT_FIELDS])
        response = self._http.request(
            "PATCH",
            url,
            params=self._params(fields),
            json=dict(changes),
            headers=JSON_HEADERS,
            idempotent=False,  # may carry a work_notes entry: see _http.should_retry
        )
        stored = _parse(_One, response).result
        log.info(
            "servicenow: updated %s/%s fields=%s request_id=%s",
            table,
            record_id,
            sorted(changes),
            request_id_of(response),
        )
        return SourceRecord(SYSTEM, table, record_id, stored)

    def update_many(
        self,
        table: str,
        updates: Sequence[AnyUpdate],
        *,
        batch_size: int = 50,
    ) -> list[WriteOutcome]:
        """PATCH many records through the Batch API (``connectors.servicenow_batch``).

        ``updates`` holds ``(record_id, changes, etag)`` (``BatchConnector``'s shape; the etag
        is ignored: the Table API has no If-Match, callers compare ``sys_mod_count``) or the
        older ``(record_id, changes)``. One ``WriteOutcome`` per update, in order: the record
        as ``update()`` would return it, or the error it would have raised. Up to
        ``batch_size`` PATCHes per request; unserviced ones are re-sent, serviced ones never.
        """
        from connectors.servicenow_batch import ServiceNowBatch  # it imports this module

        batch = ServiceNowBatch(
            self._http, self._base, batch_size=batch_size, sleep=self._sleep, pacer=self._pacer
        )
        return batch.update_many(table, updates)

    def read_page(
        self,
        table: str,
        query: str,
        fields: Sequence[str],
        *,
        limit: int,
        cursor: str | None = None,
        order: str | None = None,
    ) -> RecordPage:
        """ONE GET of the Table API: the first ``limit`` records matching ``query``.

        ``query`` is sent verbatim and must hold its ``ORDERBY`` terms (an unordered page could
        not be resumed); the caller pages by keyset (its next query continues after the last
        record), so no ``sysparm_offset`` is sent, ``cursor`` and ``order`` must be None, and
        ``more`` means the page came back full.
        """
        if cursor is not None or order is not None:
            raise RejectedError(
                "ServiceNow pages by keyset: no cursor or separate order", system=SYSTEM
            )
        if not 1 <= limit <= 10_000:
            raise RejectedError(f"limit must be 1..10000, got {limit}", system=SYSTEM)
        if not HAS_ORDER.search(query) or re.search(r"[\x00-\x1f]", query):
            raise RejectedError("a page query needs its ORDERBY terms", system=SYSTEM)
        params: dict[str, str | int] = {
            **self._params(["sys_id", *fields]),
            "sysparm_query": query,
            "sysparm_limit": limit,
        }
        response = self._http.request(
            "GET", self._table_url(table), params=params, headers=JSON_HEADERS
        )
        rows = _parse(_Many, response).result
        records = list(_new_records(table, rows, set()))
        return RecordPage(records, more=len(rows) >= limit)

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        """Yield every record matching an encoded query once, in a stable sys_id-tiebroken order."""
        url = self._table_url(table)
        limit = page_size if page_size is not None else self._settings.page_size
        if limit < 1:
            raise RejectedError(f"page_size must be at least 1, got {limit}", system=SYSTEM)
        params: dict[str, str | int] = {
            **self._params(["sys_id", *fields]),
            "sysparm_query": stable_order(query),
            "sysparm_limit": limit,
        }
        seen: set[str] = set()
        offset = 0
        page_url, page_params = url, {**params, "sysparm_offset": offset}
        while True:
            response = self._http.request("GET", page_url, params=page_params, headers=JSON_HEADERS)
            rows = _parse(_Many, response).result
            yield from _new_records(table, rows, seen)
            offset += limit
            link = self._next_link(response)
            if link is not None:
                # The link carries every sysparm_* of the first request.
                page_url, page_params = link, {}
            elif "Link" in response.headers and "next" not in response.links:
                return  # the instance omits rel="next" on the last page
            elif len(rows) < limit:
                return  # offset paging: a short page is the last one
            else:
                page_url, page_params = url, {**params, "sysparm_offset": offset}

    def list_choices(
        self, table: str, elements: Sequence[str], *, language: str = "en"
    ) -> list[dict[str, str]]:
        """Active choices of ``elements`` on ``table`` (inherited from task unless overridden)."""
        _check_table(table)
        for element in elements:
            _check_field(element)
        if not elements:
            return []
        names = ",".join(_dedupe([table, "task"]))
        query = (
            f"nameIN{names}^elementIN{','.join(elements)}^inactive=false"
            f"^language={_check_field(language)}^ORDERBYelement^ORDERBYsequence"
        )
        rows = [r.fields for r in self.iter_records("sys_choice", query, CHOICE_FIELDS)]
        # A choice list defined on the table itself replaces the one it inherits from task.
        own = {str(r.get("element")) for r in rows if r.get("name") == table}
        return [
            {k: str(r.get(k) or "") for k in ("element", "value", "label", "dependent_value")}
            for r in rows
            if r.get("name") == table or str(r.get("element")) not in own
        ]

    def journal(self, record_id: str, element: str = "work_notes") -> list[dict[str, str]]:
        """Journal entries (``sys_journal_field``) of one record's field, oldest first."""
        _check_sys_id(record_id)
        _check_field(element)
        # Reading work_notes through the record itself is unreliable with raw values; the
        # journal table holds one row per entry.
        query = f"element_id={record_id}^element={element}^ORDERBYsys_created_on"
        rows = self.iter_records("sys_journal_field", query, JOURNAL_FIELDS)
        return [{k: str(r.fields.get(k) or "") for k in JOURNAL_FIELDS} for r in rows]

    def own_user(self) -> str | None:
        """None: the mapping names the integration user (sys_updated_by holds a user name)."""
        return None

    def fallback_text(self, table: str, record_id: str) -> str | None:
        """None: an e-mail's text is the incident's description on ServiceNow."""
        return None

    def has_note(
        self, table: str, record_id: str, marker: str, *, element: str = "work_notes"
    ) -> bool:
        """Whether a journal entry of the record's ``element`` contains ``marker``."""
        _check_table(table)
        _check_sys_id(record_id)
        _check_field(element)
        if not NOTE_MARKER_RE.fullmatch(marker):
            raise RejectedError("invalid note marker", system=SYSTEM)
        query = f"element_id={record_id}^element={element}^valueLIKE{marker}"
        rows = self.iter_records("sys_journal_field", query, ("sys_id",), page_size=1)
        return next(rows, None) is not None

    def overwritten(
        self,
        table: str,
        record_id: str,
        *,
        written: SourceRecord,
        marker: str,
        element: str = "work_notes",
        read: SourceRecord | None = None,
    ) -> dict[str, tuple[str, str]]:
        """``{field: (value before our update, our value)}`` where that earlier value was set.

        ``written`` is the record as our update left it (the PATCH's answer, or a re-read whose
        last update is ours); the update is recognised as ours by ``marker`` in its ``element``
        journal entry. We only write fields that were unset when we read them, so a value set
        just before our update was put there by someone else after our read. The Table API has
        no If-Match: when we know the ``sys_mod_count`` we read, one more after our update means
        nobody wrote in between (no request needed). Otherwise the ``sys_audit`` rows of our
        update (``record_checkpoint`` = its count) hold each field's old value.
        """
        _check_table(table)
        _check_sys_id(record_id)
        before, after = _mod_count(read), _mod_count(written)
        if after is None or (before is not None and after <= before + 1):
            return {}
        query = f"tablename={table}^documentkey={record_id}^record_checkpoint={after}"
        rows = [r.fields for r in self.iter_records("sys_audit", query, AUDIT_ROW_FIELDS)]
        if not any(
            r.get("fieldname") == element and marker in str(r.get("newvalue")) for r in rows
        ):
            return {}  # not our update: nothing of ours to answer for
        found: dict[str, tuple[str, str]] = {}
        for row in rows:
            name = str(row.get("fieldname") or "")
            old, new = (str(row.get(k) or "") for k in ("oldvalue", "newvalue"))
            if name not in JOURNAL_ELEMENTS and old and old != new:
                found[name] = (old, new)
        if found:
            log.warning(
                "servicenow: %s/%s was changed by someone else during our update: %s",
                table,
                record_id,
                sorted(found),
            )
        return found

    def close(self) -> None:
        """Release the HTTP session if this connector created it."""
        if self._owns_session:
            self._session.close()

    def _params(self, fields: Iterable[str]) -> dict[str, str | int]:
        checked = [_check_field(f) for f in _dedupe(fields)]
        return {**BASE_PARAMS, "sysparm_fields": ",".join(checked)}

    def _table_url(self, table: str) -> str:
        return f"{self._base}/api/now/table/{_check_table(table)}"

    def _record_url(self, table: str, record_id: str) -> str:
        return f"{self._table_url(table)}/{_check_sys_id(record_id)}"

    def _next_link(self, response: requests.Response) -> str | None:
        """The rel="next" URL, if it is on this instance and moves forward."""
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        if not _same_origin(link, self._base) or link == response.url:
            # Never send our credentials off the instance; fall back to offset arithmetic.
            log.warning("servicenow: ignoring an unusable Link rel=next, paging by offset")
            return None
        return str(link)


def stable_order(query: str) -> str:
    """Append ``ORDERBYsys_id`` so offset pages are stable (a tiebreak after any other order)."""
    query = query.strip().strip("^")
    if ORDERS_BY_SYS_ID.search(query):
        return query
    return f"{query}^ORDERBYsys_id" if query else "ORDERBYsys_id"


def build_servicenow_connector(
    settings: Settings, *, redactor: Redactor | None = None, **options: Any
) -> ServiceNowConnector:
    """Build the connector from settings; ``ConfigError`` when ServiceNow is not configured.

    Pass the process's log ``redactor`` so it also learns the basic-auth encoding and each
    OAuth token as it is issued.
    """
    if settings.servicenow is None:
        raise ConfigError("ServiceNow is not configured (set ENRICH_SERVICENOW__INSTANCE_URL)")
    return ServiceNowConnector(settings.servicenow, settings.http, redactor=redactor, **options)


def _auth_for(
    settings: ServiceNowSettings,
    http_settings: HttpSettings,
    session: requests.Session,
    clock: Callable[[], float],
    redactor: Redactor,
) -> requests.auth.AuthBase:
    # ServiceNowSettings already checks these pairs; the checks here narrow the types.
    if settings.auth == "basic":
        if settings.username is None or settings.password is None:
            raise ConfigError("ServiceNow auth=basic needs username and password")
        redactor.add_basic(settings.username, settings.password)
        return requests.auth.HTTPBasicAuth(settings.username, settings.password.get_secret_value())
    if settings.client_id is None or settings.client_secret is None:
        raise ConfigError("ServiceNow auth=oauth needs client_id and client_secret")
    provider = ServiceNowOAuth(
        settings.base_url,
        settings.client_id,
        settings.client_secret,
        timeout=(http_settings.connect_timeout_s, http_settings.read_timeout_s),
        session=session,
        clock=clock,
        redactor=redactor,
    )
    return BearerAuth(provider)


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
