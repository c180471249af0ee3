"""Dataverse (Dynamics 365) Web API v9.2 connector: raw values in, raw values out.

Reads send the headers of dataverse.md §1 and an explicit ``$select``; choices come back as
integers, lookups as ``_<name>_value`` GUIDs, and the record's ``@odata.etag`` becomes
``SourceRecord.etag``. Pages follow ``@odata.nextLink`` unchanged (never ``$skip``), and only
on this organisation. Writes (``connectors.dataverse_writes``) are ``$batch`` change sets, one
per case, all or nothing: the PATCH of the values with ``If-Match: <etag read>`` and the POST of
the note. A 412 means a person or process changed the case since our read: it surfaces as
``ConflictError`` for the caller to re-read and re-decide; nothing was written. Values are
converted by the ``field_types`` given at construction (``text``, ``choice``,
``lookup:<entity set>``); ``MSCRM.BypassBusinessLogicExecution`` is sent on writes when
configured (the application user needs ``prvBypassCustomBusinessLogic``).

Every attempt goes through the ``Pacer`` (client-side service-protection pacing) and the one
``HttpClient`` retry layer (429 ``Retry-After``, 401 → token refreshed once).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from connectors import _odata as od
from connectors._auth import BearerAuth, TokenProvider
from connectors._http import HttpClient, request_id_of
from connectors._msal import MsalTokenProvider
from connectors._pacing import Pacer
from connectors.backfill_pacing import combine
from connectors.base import RecordPage, SourceRecord, System, Update, WriteOutcome
from connectors.dataverse_reads import DataverseLookups
from connectors.dataverse_writes import DEFAULT_CASES_PER_BATCH, DataverseWrites
from domain.errors import ConfigError, RejectedError, UnavailableError
from domain.redact import Redactor
from domain.settings import DataverseSettings, HttpSettings, Settings

__all__ = ["NOTE_FIELD", "DataverseConnector", "build_dataverse_connector"]

NOTE_FIELD = od.NOTE_FIELD  # pseudo-field of update(): the note to add to the record

log = logging.getLogger(__name__)


class DataverseConnector(DataverseLookups):
    """Reads and writes Dataverse records through the Web API (``incidents`` and friends).

    ``has_note``, ``first_email_text``, ``list_subjects`` and ``list_choices`` come from
    ``connectors.dataverse_reads.DataverseLookups``.
    """

    system: System = od.SYSTEM

    def __init__(
        self,
        settings: DataverseSettings,
        http_settings: HttpSettings,
        *,
        field_types: Mapping[str, str],
        token_provider: TokenProvider | None = None,
        session: requests.Session | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
        note_subject: str = "Ticket enrichment",
        shared_pacer: Callable[[], AbstractContextManager[None]] | None = None,
        on_throttle: Callable[[float], None] | None = None,
    ) -> None:
        """``shared_pacer`` (inside this process's ``pacer``) and ``on_throttle`` (told of
        every 429) let a backfill share one request budget across instances."""
        self._settings = settings
        self._base = settings.base_url
        field_types = od.check_field_types(field_types)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self.redactor = redactor if redactor is not None else Redactor()
        if token_provider is None:
            timeout = (http_settings.connect_timeout_s, http_settings.read_timeout_s)
            token_provider = MsalTokenProvider(
                settings, timeout=timeout, http_client=self._session, redactor=self.redactor
            )
        self.pacer = pacer if pacer is not None else Pacer(sleep=sleep, monotonic=monotonic)
        self._http = HttpClient(
            od.SYSTEM,
            http_settings,
            session=self._session,
            auth=BearerAuth(token_provider),
            sleep=sleep,
            now=now,
            monotonic=monotonic,
            redactor=self.redactor,
            pacer=self.pacer.slot
            if shared_pacer is None
            else combine(self.pacer.slot, shared_pacer),
            on_throttle=on_throttle,
        )
        self._writes = DataverseWrites(
            self._http,
            self._base,
            field_types=field_types,
            note_subject=note_subject,
            bypass_business_logic=settings.bypass_business_logic,
        )
        self._who_am_i: str | None = None

    def get(self, table: str, record_id: str, fields: Sequence[str]) -> SourceRecord:
        """Read one record's raw values and its etag (``NotFoundError`` when missing)."""
        url = f"{self._record_url(table, record_id)}?{od.query({'$select': od.select(fields)})}"
        body = od.json(self._http.request("GET", url, headers=od.READ_HEADERS))
        etag = body.get("@odata.etag")
        return SourceRecord(
            od.SYSTEM,
            table,
            record_id.lower(),
            od.plain(body),
            etag=etag if isinstance(etag, str) else None,
        )

    def update(
        self,
        table: str,
        record_id: str,
        changes: Mapping[str, str],
        *,
        etag: str | None = None,
    ) -> SourceRecord:
        """Write values and the note in one ``$batch`` change set; return the record re-read.

        ``ConflictError`` (412) when the record changed since ``etag`` was read, ``NotFoundError``
        when it is gone: in both cases nothing was written.
        """
        operations = self._writes.change_set(table, record_id, changes, etag)
        response = self._writes.send_change_set(operations)
        values = [k for k in changes if k != od.NOTE_FIELD]
        log.info(
            "dataverse: updated %s/%s fields=%s note=%s request_id=%s",
            table,
            record_id,
            sorted(values),
            od.NOTE_FIELD in changes,
            request_id_of(response),
        )
        return self.get(table, record_id, [*values, *od.AUDIT_FIELDS])

    def update_many(
        self,
        table: str,
        updates: Sequence[Update],
        *,
        cases_per_batch: int = DEFAULT_CASES_PER_BATCH,
    ) -> list[WriteOutcome]:
        """Write each ``(record_id, changes, etag)`` as one change set, up to ``cases_per_batch``
        change sets per ``$batch`` (``connectors.dataverse_writes``); one outcome per update, in
        order, each record built from the PATCH's representation (no re-read)."""
        return self._writes.update_many(table, updates, cases_per_batch=cases_per_batch)

    def overwritten(
        self,
        table: str,
        record_id: str,
        *,
        written: SourceRecord,
        marker: str,
        element: str = od.NOTE_FIELD,
        read: SourceRecord | None = None,
    ) -> dict[str, tuple[str, str]]:
        """Always ``{}``: every write carries ``If-Match``, so a concurrent change is refused
        (412 → ``ConflictError``) instead of overwritten; there is never anything to restore."""
        return {}

    def iter_records(
        self,
        table: str,
        query: str,
        fields: Sequence[str],
        *,
        page_size: int | None = None,
        order_by: str | None = None,
    ) -> Iterator[SourceRecord]:
        """Yield every record matching the OData ``$filter`` ``query``, in a stable order.

        Pages with ``Prefer: odata.maxpagesize`` and follows ``@odata.nextLink`` unchanged
        (never ``$skip``); a link off this organisation or seen before is refused.
        """
        size = page_size if page_size is not None else self._settings.page_size
        page = self.read_page(table, query, fields, limit=size, order=order_by)
        links: set[str] = set()
        seen: set[str] = set()
        while True:
            for record in page.records:
                if record.record_id not in seen:
                    seen.add(record.record_id)
                    yield record
            if page.cursor is None:
                return
            if page.cursor in links:
                raise UnavailableError("the same @odata.nextLink came back twice", system=od.SYSTEM)
            links.add(page.cursor)
            page = self.read_page(table, query, fields, limit=size, cursor=page.cursor)

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
        """ONE page: the first ``limit`` records matching the ``$filter`` ``query`` (may be
        empty) in ``order`` (default ``createdon asc,<table>id asc``), or, with ``cursor`` (an
        ``@odata.nextLink`` of the same query), the page it points to, fetched unchanged.

        A cursor off this organisation's Web API path for the table's entity set is refused
        (``RejectedError``). ``cursor`` of the result is the next link, ``more`` whether there
        is one.
        """
        headers = self._page_headers(limit)
        if cursor is None:
            url = self._list_url(table, query, fields, order)
        else:
            url = self._check_link(cursor, table)
        body = od.json(self._http.request("GET", url, headers=headers))
        records = [_record(table, row) for row in od.rows(body)]
        link = body.get("@odata.nextLink")
        next_cursor = None if link is None else self._check_link(link, table)
        return RecordPage(records, more=next_cursor is not None, cursor=next_cursor)

    def who_am_i(self) -> str:
        """The ``systemuserid`` of the application user we act as (cached after the first call)."""
        if self._who_am_i is None:
            body = od.json(
                self._http.request("GET", f"{self._base}{od.API}/WhoAmI", headers=od.READ_HEADERS)
            )
            user_id = body.get("UserId")
            if not isinstance(user_id, str) or not od.GUID_RE.fullmatch(user_id):
                raise UnavailableError("WhoAmI answered without a UserId", system=od.SYSTEM)
            self._who_am_i = user_id.lower()
        return self._who_am_i

    def own_user(self) -> str | None:
        """Our application user's systemuserid (``WhoAmI``, cached): ``_modifiedby_value`` of
        our own writes, and the ``UserId`` of the webhook events they cause."""
        return self.who_am_i()

    def fallback_text(self, table: str, record_id: str) -> str | None:
        """A case created from an e-mail: the HTML body of its first e-mail activity."""
        return self.first_email_text(record_id)

    def close(self) -> None:
        """Release the HTTP session if this connector created it."""
        if self._owns_session:
            self._session.close()

    def _list_url(self, table: str, query: str, fields: Sequence[str], order: str | None) -> str:
        entity_set = od.entity_set(table)
        key = f"{table}id"
        order = order if order is not None else f"createdon asc,{key} asc"
        if not od.ORDER_RE.fullmatch(order):
            raise RejectedError("invalid $orderby", system=od.SYSTEM)
        if re.search(r"[\x00-\x1f]", query):
            raise RejectedError("invalid $filter", system=od.SYSTEM)
        options = {"$select": od.select([key, *fields])}
        if query.strip():
            options["$filter"] = query.strip()
        options["$orderby"] = order
        return f"{self._base}{od.API}/{entity_set}?{od.query(options)}"

    def _page_headers(self, size: int) -> dict[str, str]:
        if not 1 <= size <= 5000:
            raise RejectedError(f"page_size must be 1..5000, got {size}", system=od.SYSTEM)
        return {**od.READ_HEADERS, "Prefer": f"odata.maxpagesize={size}"}

    def _record_path(self, table: str, record_id: str) -> str:
        return f"{od.API}/{od.entity_set(table)}({od.check_guid(record_id)})"

    def _record_url(self, table: str, record_id: str) -> str:
        return f"{self._base}{self._record_path(table, record_id)}"

    def _check_link(self, link: object, table: str) -> str:
        """A next link we may send our token to: this organisation, this entity set."""
        if not isinstance(link, str) or not od.same_origin(link, self._base):
            raise RejectedError("@odata.nextLink points outside the organisation", system=od.SYSTEM)
        path = f"{urlsplit(self._base).path.rstrip('/')}{od.API}/{od.entity_set(table)}"
        if unquote(urlsplit(link).path) != path:
            raise RejectedError("@odata.nextLink is not a page of this query", system=od.SYSTEM)
        return link


def build_dataverse_connector(
    settings: Settings,
    *,
    field_types: Mapping[str, str],
    redactor: Redactor | None = None,
    **options: Any,
) -> DataverseConnector:
    """Build the connector from settings; ``ConfigError`` when Dataverse is not configured."""
    if settings.dataverse is None:
        raise ConfigError("Dataverse is not configured (set ENRICH_DATAVERSE__ORG_URL)")
    return DataverseConnector(
        settings.dataverse, settings.http, field_types=field_types, redactor=redactor, **options
    )


def _record(table: str, row: Mapping[str, Any]) -> SourceRecord:
    key = f"{table}id"
    record_id, etag = row.get(key), row.get("@odata.etag")
    if not isinstance(record_id, str) or not record_id:
        raise UnavailableError(f"{table} row without {key}", system=od.SYSTEM)
    return SourceRecord(
        od.SYSTEM, table, record_id, od.plain(row), etag if isinstance(etag, str) else None
    )
