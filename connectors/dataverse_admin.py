"""Dataverse Web API calls that register our webhook: ``serviceendpoint`` and its step.

Names verified against the Dataverse table reference (MicrosoftDocs/powerapps-docs,
``reference/entities/serviceendpoint.md`` and ``sdkmessageprocessingstep.md``):

* ``serviceendpoints``: ``name``, ``url``, ``contract`` (8 Webhook), ``authtype`` (4 Webhook
  Key, 5 Http Header), ``authvalue`` (max 2048, *IsValidForRead False*: write-only),
  ``messageformat`` (2 Json), ``userclaim`` (1 None).
* ``sdkmessages`` (``name`` ``Create``) and ``sdkmessagefilters`` (``primaryobjecttypecode``
  ``incident``, lookup ``_sdkmessageid_value``).
* ``sdkmessageprocessingsteps``: ``stage`` (40 Post-operation), ``mode`` (1 Asynchronous),
  ``rank``, ``asyncautodelete``, ``supporteddeployment`` (0 Server Only), ``statecode``; the
  navigation properties ``eventhandler_serviceendpoint`` (column ``eventhandler``, read back as
  ``_eventhandler_value``), ``sdkmessageid`` and ``sdkmessagefilterid``.

The HttpHeader ``authvalue`` is ``<settings><setting name="<header>" value="<key>" /></settings>``
(the format the Plug-in Registration Tool stores and the PSDVTableWebHook module sends).
Every request goes through the same ``HttpClient`` + bearer token as ``DataverseConnector``.
Errors never echo an ``authvalue``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import requests

from connectors._auth import BearerAuth, TokenProvider
from connectors._http import HttpClient, request_id_of
from connectors._msal import MsalTokenProvider
from domain.errors import RejectedError, UnavailableError
from domain.redact import Redactor
from domain.settings import DataverseSettings, HttpSettings

__all__ = [
    "AUTHTYPE_HTTP_HEADER",
    "AUTHTYPE_WEBHOOK_KEY",
    "CONTRACT_WEBHOOK",
    "DataverseAdmin",
    "ServiceEndpoint",
    "Step",
    "header_authvalue",
]

SYSTEM = "dataverse"
API = "/api/data/v9.2"
CONTRACT_WEBHOOK = 8
AUTHTYPE_WEBHOOK_KEY = 4
AUTHTYPE_HTTP_HEADER = 5
MESSAGEFORMAT_JSON = 2
USERCLAIM_NONE = 1
MAX_AUTHVALUE = 2048
HEADERS: Mapping[str, str] = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}
READ_HEADERS: Mapping[str, str] = {**HEADERS, "If-None-Match": "null"}
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ENTITY_ID = re.compile(r"\((" + _GUID.pattern + r")\)\s*$")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_NAME = re.compile(r"[^\x00-\x1f']{1,200}")
_SAFE = "(),'=:/@*."
_STEP_COLUMNS = (
    "sdkmessageprocessingstepid,name,stage,mode,rank,asyncautodelete,statecode,"
    "_sdkmessageid_value,_sdkmessagefilterid_value,_eventhandler_value"
)


@dataclass(frozen=True)
class ServiceEndpoint:
    """A ``serviceendpoint`` row as read (``authvalue`` can never be read)."""

    id: str
    name: str
    url: str
    contract: int
    authtype: int | None


@dataclass(frozen=True)
class Step:
    """An ``sdkmessageprocessingstep`` row as read."""

    id: str
    name: str
    stage: int
    mode: int
    rank: int
    asyncautodelete: bool
    statecode: int
    message_id: str
    filter_id: str
    endpoint_id: str


def header_authvalue(header: str, key: str) -> str:
    """The HttpHeader ``authvalue``: ``<settings><setting name=".." value=".." /></settings>``."""
    if not _HEADER_NAME.fullmatch(header):
        raise RejectedError("header name must be 1 to 64 letters, digits or '-'", system=SYSTEM)
    quoted = {'"': "&quot;"}
    value = (
        f'<settings><setting name="{escape(header, quoted)}" '
        f'value="{escape(key, quoted)}" /></settings>'
    )
    if len(value) > MAX_AUTHVALUE:
        raise RejectedError(f"authvalue over {MAX_AUTHVALUE} characters", system=SYSTEM)
    return value


class DataverseAdmin:
    """Finds, creates and updates the webhook registration rows through the Web API."""

    def __init__(
        self,
        settings: DataverseSettings,
        http_settings: HttpSettings,
        *,
        token_provider: TokenProvider | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
    ) -> None:
        self._base = settings.base_url
        self._session = session if session is not None else requests.Session()
        self.redactor = redactor if redactor is not None else Redactor()
        if token_provider is None:
            timeout = (http_settings.connect_timeout_s, http_settings.read_timeout_s)
            token_provider = MsalTokenProvider(
                settings, timeout=timeout, http_client=self._session, redactor=self.redactor
            )
        self._http = HttpClient(
            SYSTEM,
            http_settings,
            session=self._session,
            auth=BearerAuth(token_provider),
            sleep=sleep,
            now=now,
            monotonic=monotonic,
            redactor=self.redactor,
        )

    # ---- reads -------------------------------------------------------------------------------

    def find_endpoint(self, name: str) -> ServiceEndpoint | None:
        """The webhook ``serviceendpoint`` (contract 8) named ``name``, if any."""
        rows = self._list(
            "serviceendpoints",
            {
                "$select": "serviceendpointid,name,url,contract,authtype",
                "$filter": f"contract eq {CONTRACT_WEBHOOK} and name eq '{_check_name(name)}'",
            },
        )
        if len(rows) > 1:
            raise RejectedError(
                f"{len(rows)} webhook service endpoints are named {name!r}: remove the extras",
                system=SYSTEM,
            )
        if not rows:
            return None
        row = rows[0]
        return ServiceEndpoint(
            _guid(row, "serviceendpointid"),
            str(row.get("name") or ""),
            str(row.get("url") or ""),
            int(row.get("contract") or 0),
            row.get("authtype") if isinstance(row.get("authtype"), int) else None,
        )

    def message_id(self, message: str) -> str:
        """The ``sdkmessageid`` of a message such as ``Create``."""
        rows = self._list(
            "sdkmessages",
            {"$select": "sdkmessageid,name", "$filter": f"name eq '{_check_name(message)}'"},
        )
        if len(rows) != 1:
            raise UnavailableError(f"sdkmessage {message!r} not found exactly once", system=SYSTEM)
        return _guid(rows[0], "sdkmessageid")

    def filter_id(self, message_id: str, table: str) -> str:
        """The ``sdkmessagefilterid`` of ``message_id`` on the table ``table`` (logical name)."""
        rows = self._list(
            "sdkmessagefilters",
            {
                "$select": "sdkmessagefilterid,primaryobjecttypecode",
                "$filter": (
                    f"_sdkmessageid_value eq {_check_guid(message_id)} and "
                    f"primaryobjecttypecode eq '{_check_name(table)}'"
                ),
            },
        )
        if len(rows) != 1:
            raise UnavailableError(
                f"sdkmessagefilter for {table!r} not found exactly once", system=SYSTEM
            )
        return _guid(rows[0], "sdkmessagefilterid")

    def steps_of(self, endpoint_id: str) -> list[Step]:
        """Every step whose event handler is the service endpoint ``endpoint_id``."""
        rows = self._list(
            "sdkmessageprocessingsteps",
            {
                "$select": _STEP_COLUMNS,
                "$filter": f"_eventhandler_value eq {_check_guid(endpoint_id)}",
            },
        )
        return [
            Step(
                _guid(r, "sdkmessageprocessingstepid"),
                str(r.get("name") or ""),
                int(r.get("stage") or 0),
                int(r.get("mode") or 0),
                int(r.get("rank") or 0),
                bool(r.get("asyncautodelete")),
                int(r.get("statecode") or 0),
                str(r.get("_sdkmessageid_value") or "").lower(),
                str(r.get("_sdkmessagefilterid_value") or "").lower(),
                str(r.get("_eventhandler_value") or "").lower(),
            )
            for r in rows
        ]

    # ---- writes ------------------------------------------------------------------------------

    def create_endpoint(self, name: str, url: str, authtype: int, authvalue: str) -> str:
        """Create a webhook ``serviceendpoint`` (Json, no user claim); returns its id."""
        body = {
            "name": _check_name(name),
            "url": url,
            "contract": CONTRACT_WEBHOOK,
            "authtype": authtype,
            "authvalue": authvalue,
            "messageformat": MESSAGEFORMAT_JSON,
            "userclaim": USERCLAIM_NONE,
        }
        return self._create("serviceendpoints", body)

    def update_endpoint(self, endpoint_id: str, changes: Mapping[str, Any]) -> None:
        """PATCH columns of an existing endpoint (``If-Match: *``: never creates one)."""
        self._update("serviceendpoints", endpoint_id, changes)

    def create_step(
        self,
        name: str,
        *,
        endpoint_id: str,
        message_id: str,
        filter_id: str,
        stage: int,
        mode: int,
        rank: int,
        asyncautodelete: bool,
    ) -> str:
        """Create a step bound to the endpoint, message and filter; returns its id."""
        body = {
            "name": _check_name(name),
            "stage": stage,
            "mode": mode,
            "rank": rank,
            "asyncautodelete": asyncautodelete,
            "supporteddeployment": 0,
            "eventhandler_serviceendpoint@odata.bind": (
                f"/serviceendpoints({_check_guid(endpoint_id)})"
            ),
            "sdkmessageid@odata.bind": f"/sdkmessages({_check_guid(message_id)})",
            "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({_check_guid(filter_id)})",
        }
        return self._create("sdkmessageprocessingsteps", body)

    def update_step(self, step_id: str, changes: Mapping[str, Any]) -> None:
        """PATCH columns of an existing step (``If-Match: *``)."""
        self._update("sdkmessageprocessingsteps", step_id, changes)

    def close(self) -> None:
        """Release the HTTP session."""
        self._session.close()

    # ---- plumbing ----------------------------------------------------------------------------

    def _list(self, entity_set: str, options: Mapping[str, str]) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={quote(v, safe=_SAFE)}" for k, v in options.items())
        response = self._http.request(
            "GET", f"{self._base}{API}/{entity_set}?{query}", headers=READ_HEADERS
        )
        body = _json(response)
        rows = body.get("value")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UnavailableError("Web API collection without a value array", system=SYSTEM)
        if body.get("@odata.nextLink"):
            raise UnavailableError(f"too many {entity_set} rows for one page", system=SYSTEM)
        return rows

    def _create(self, entity_set: str, body: Mapping[str, Any]) -> str:
        response = self._http.request(
            "POST",
            f"{self._base}{API}/{entity_set}",
            json=dict(body),
            headers={**HEADERS, "Content-Type": "application/json"},
            idempotent=False,
        )
        entity_id = response.headers.get("OData-EntityId") or response.headers.get("Location")
        match = _ENTITY_ID.search(entity_id or "")
        if match is None:
            raise UnavailableError(
                f"create of {entity_set} answered without OData-EntityId",
                system=SYSTEM,
                status_code=response.status_code,
                request_id=request_id_of(response),
            )
        return match.group(1).lower()

    def _update(self, entity_set: str, record_id: str, changes: Mapping[str, Any]) -> None:
        if not changes:
            raise RejectedError("update with no changes", system=SYSTEM)
        self._http.request(
            "PATCH",
            f"{self._base}{API}/{entity_set}({_check_guid(record_id)})",
            json=dict(changes),
            headers={**HEADERS, "Content-Type": "application/json", "If-Match": "*"},
        )


def _check_guid(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise RejectedError(f"invalid id {value[:40]!r}", system=SYSTEM)
    return value.lower()


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise RejectedError(
            "names must be 1 to 200 characters without quotes or control characters",
            system=SYSTEM,
        )
    return value


def _guid(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not _GUID.fullmatch(value):
        raise UnavailableError(f"row without a valid {column}", system=SYSTEM)
    return value.lower()


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UnavailableError(
            "expected a JSON object from the Web API",
            system=SYSTEM,
            status_code=response.status_code,
            request_id=request_id_of(response),
        )
    return body
