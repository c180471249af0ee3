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
from typing import TYPE_CHECKING, Any

import requests

from connectors._auth import BearerAuth, ServiceNowOAuth
from connectors._http import HttpClient, request_id_of
from connectors.base import RecordPage, SourceRecord, System, WriteOutcome
from connectors.servicenow_journal import ServiceNowJournal
from connectors.servicenow_table import (
    AUDIT_FIELDS,
    BASE_PARAMS,
    HAS_ORDER,
    JSON_HEADERS,
    SYSTEM,
    _check_field,
    _check_sys_id,
    _check_table,
    _dedupe,
    _Many,
    _new_records,
    _One,
    _parse,
    _same_origin,
    stable_order,
)
from domain.errors import ConfigError, RejectedError
from domain.redact import Redactor
from domain.settings import HttpSettings, ServiceNowSettings, Settings

if TYPE_CHECKING:
    from connectors.servicenow_batch import AnyUpdate

__all__ = [
    "AUDIT_FIELDS",
    "BASE_PARAMS",
    "JSON_HEADERS",
    "SYSTEM",
    "ServiceNowConnector",
    "build_servicenow_connector",
    "stable_order",
]

log = logging.getLogger(__name__)


class ServiceNowConnector(ServiceNowJournal):
    """Reads and writes ServiceNow records through the Table API.

    The choice, journal and audit reads (``list_choices``, ``journal``, ``has_note``,
    ``overwritten``) come from ``connectors.servicenow_journal.ServiceNowJournal``.
    """

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

    def own_user(self) -> str | None:
        """None: the mapping names the integration user (sys_updated_by holds a user name)."""
        return None

    def fallback_text(self, table: str, record_id: str) -> str | None:
        """None: an e-mail's text is the incident's description on ServiceNow."""
        return None

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
