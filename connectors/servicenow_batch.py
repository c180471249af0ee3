"""ServiceNow Batch API (``POST /api/now/v1/batch``): many Table API PATCHes in one request.

Shapes (ServiceNow "Batch API" reference, servicenow.com/docs .../rest-apis/batch-api.html,
mirrored in github.com/ServiceNow/ServiceNowDocs markdown/api-reference/rest-apis/batch-api.md;
shared/docs/servicenow.md §7)::

    request  {"batch_request_id": "...",
              "rest_requests": [{"id", "method", "url" (relative, with its query),
                                 "headers": [{"name", "value"}], "body": <base64>,
                                 "exclude_response_headers": bool}]}
    response {"batch_request_id": "...",
              "serviced_requests": [{"id", "status_code", "status_text", "headers",
                                     "body": <base64>, "execution_time", "error_message"?}],
              "unserviced_requests": ["<id>", ...]}

Only the versioned URL works (``/api/now/batch`` answers "Requested URI does not represent any
resource", ServiceNow community thread 2623575). "When a batch request reaches a size or
processing limit, the system cancels the transaction and returns unprocessed requests in the
unserviced JSON array" (30 s "REST Batch API request timeout" quota): an unserviced request did
not run, so it is sent again (bounded, with backoff), as pysnc's ``BatchAPI.execute`` does.

A serviced PATCH is never sent again, whatever its status: our PATCH carries a work note, which
the platform appends on every request. The outer POST is not retried after a 5xx or a timeout
either (``HttpClient`` with ``idempotent=False``): its sub-requests may have run. Each serviced
sub-response is mapped exactly like ``ServiceNowConnector.update``'s answer (the same
``HttpClient.error_for``: 404 NotFoundError, 429 ThrottledError, 5xx UnavailableError, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlencode

import requests
from pydantic import BaseModel, ValidationError

from connectors._http import HttpClient, request_id_of
from connectors.base import SourceRecord, WriteOutcome
from connectors.servicenow_table import (
    AUDIT_FIELDS,
    BASE_PARAMS,
    JSON_HEADERS,
    SYSTEM,
    _check_field,
    _check_sys_id,
    _check_table,
    _dedupe,
)
from domain.errors import (
    AuthError,
    ConnectorError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)

__all__ = ["BATCH_PATH", "AnyUpdate", "BatchOutcome", "ServiceNowBatch"]

log = logging.getLogger(__name__)

BATCH_PATH = "/api/now/v1/batch"
DEFAULT_BATCH_SIZE = 50
DEFAULT_MAX_SENDS = 3  # first send + two re-sends of what was left unserviced (pysnc: 3)
MAX_BATCH_SIZE = 1000


BatchOutcome = WriteOutcome  # the name this module used before backfills generalised it

# An update as update_many takes it: (record_id, changes, etag) (etag ignored: the Table API
# has no If-Match), or the older (record_id, changes).
AnyUpdate = tuple[str, Mapping[str, str], str | None] | tuple[str, Mapping[str, str]]


class _Serviced(BaseModel):
    id: str
    status_code: int
    status_text: str = ""
    headers: list[dict[str, Any]] | None = None
    body: str | None = None
    error_message: str | None = None


class _Envelope(BaseModel):
    batch_request_id: str | None = None
    serviced_requests: list[_Serviced] = []
    unserviced_requests: list[str] = []


class _Sub:
    """One pending PATCH: its position in the caller's list and what to send."""

    __slots__ = ("index", "record_id", "url", "wire")

    def __init__(self, index: int, record_id: str, url: str, wire: dict[str, Any]) -> None:
        self.index, self.record_id, self.url, self.wire = index, record_id, url, wire


class ServiceNowBatch:
    """Sends Table API PATCHes through the Batch API; see the module docstring for the rules."""

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_sends: int = DEFAULT_MAX_SENDS,
        backoff_s: float = 1.0,
        backoff_max_s: float = 10.0,
        sleep: Callable[[float], None],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        pacer: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        """``pacer`` is the HTTP client's: a rate-limit rule counts every sub-request, so the
        budget is charged once per PATCH beyond the one the batch request itself takes."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise RejectedError(f"batch_size must be 1..{MAX_BATCH_SIZE}", system=SYSTEM)
        if max_sends < 1:
            raise RejectedError("max_sends must be at least 1", system=SYSTEM)
        self._http = http
        self._base = base_url.rstrip("/")
        self._batch_size = batch_size
        self._max_sends = max_sends
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._new_id = new_id
        self._pacer = pacer

    def update_many(self, table: str, updates: Sequence[AnyUpdate]) -> list[WriteOutcome]:
        """PATCH each ``(record_id, changes[, etag])``; one outcome per update, in order.

        The etag is ignored (the Table API has no If-Match: callers compare ``sys_mod_count``).

        Up to ``batch_size`` PATCHes go in one batch request. Names and ids are checked before
        anything is sent (``RejectedError``). After an outer failure (the batch request itself
        answered 401/429/5xx or timed out) the remaining updates are not sent: they get that
        error with ``may_have_run=False``.
        """
        subs = [self._sub(i, table, u[0], u[1]) for i, u in enumerate(updates)]
        outcomes: dict[int, WriteOutcome] = {}
        stop: ConnectorError | None = None
        for start in range(0, len(subs), self._batch_size):
            chunk = subs[start : start + self._batch_size]
            if stop is not None:
                outcomes.update({s.index: _unsent(s, stop) for s in chunk})
                continue
            stop = self._run_chunk(chunk, outcomes)
        return [outcomes[s.index] for s in subs]

    def _sub(self, index: int, table: str, record_id: str, changes: Mapping[str, str]) -> _Sub:
        if not changes:
            raise RejectedError("update with no changes", system=SYSTEM)
        fields = [_check_field(f) for f in _dedupe([*changes, *AUDIT_FIELDS])]
        query = urlencode({**BASE_PARAMS, "sysparm_fields": ",".join(fields)})
        path = f"/api/now/table/{_check_table(table)}/{_check_sys_id(record_id)}"
        body = json.dumps(dict(changes), ensure_ascii=False).encode("utf-8")
        wire = {
            "id": str(index),
            "method": "PATCH",
            "url": f"{path}?{query}",
            "headers": [{"name": k, "value": v} for k, v in JSON_HEADERS.items()],
            "body": base64.b64encode(body).decode("ascii"),
            # Headers kept: X-Transaction-ID and Retry-After of a sub-request's error.
            "exclude_response_headers": False,
        }
        return _Sub(index, record_id, path, wire)

    def _run_chunk(
        self, chunk: list[_Sub], outcomes: dict[int, WriteOutcome]
    ) -> ConnectorError | None:
        """Send one chunk until every PATCH is serviced or the sends run out."""
        pending = {s.wire["id"]: s for s in chunk}
        for send in range(1, self._max_sends + 1):
            if send > 1:
                self._sleep(min(self._backoff_max_s, self._backoff_s * 2 ** (send - 2)))
            try:
                envelope, outer = self._post(list(pending.values()))
            except ConnectorError as exc:
                ran = not isinstance(exc, AuthError | ThrottledError | RejectedError)
                for sub in pending.values():
                    outcomes[sub.index] = WriteOutcome(sub.record_id, error=exc, may_have_run=ran)
                return exc
            self._settle(envelope, outer, pending, outcomes)
            if not pending:
                return None
            log.info(
                "servicenow: batch left %d of %d unserviced (send %d/%d)",
                len(pending),
                len(chunk),
                send,
                self._max_sends,
            )
        gave_up = UnavailableError(
            f"not serviced by the Batch API after {self._max_sends} sends", system=SYSTEM
        )
        outcomes.update({s.index: _unsent(s, gave_up) for s in pending.values()})
        return None

    def _post(self, subs: list[_Sub]) -> tuple[_Envelope, requests.Response]:
        if self._pacer is not None:
            for _ in range(len(subs) - 1):  # the POST below takes the first grant itself
                with self._pacer():
                    pass
        payload = {"batch_request_id": self._new_id(), "rest_requests": [s.wire for s in subs]}
        response = self._http.request(
            "POST",
            f"{self._base}{BATCH_PATH}",
            json=payload,
            headers=JSON_HEADERS,
            idempotent=False,  # its PATCHes carry work notes
        )
        try:
            envelope = _Envelope.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise UnavailableError(
                "Batch API answer is not the expected JSON envelope",
                system=SYSTEM,
                status_code=response.status_code,
                request_id=request_id_of(response),
            ) from exc
        log.info(
            "servicenow: batch of %d PATCHes: %d serviced, %d unserviced, request_id=%s",
            len(subs),
            len(envelope.serviced_requests),
            len(envelope.unserviced_requests),
            request_id_of(response),
        )
        return envelope, response

    def _settle(
        self,
        envelope: _Envelope,
        outer: requests.Response,
        pending: dict[str, _Sub],
        outcomes: dict[int, WriteOutcome],
    ) -> None:
        """Record serviced answers; leave in ``pending`` only what is listed as unserviced."""
        for item in envelope.serviced_requests:
            sub = pending.pop(item.id, None)
            if sub is not None:  # an id we did not send (or already settled) is ignored
                outcomes[sub.index] = self._outcome(sub, item, outer)
        unserviced = set(envelope.unserviced_requests)
        for sub_id in [i for i in pending if i not in unserviced]:
            sub = pending.pop(sub_id)  # neither serviced nor unserviced: it may have run
            lost = UnavailableError(
                "Batch API answer does not mention this request",
                system=SYSTEM,
                request_id=request_id_of(outer),
            )
            outcomes[sub.index] = WriteOutcome(sub.record_id, error=lost)

    def _outcome(self, sub: _Sub, item: _Serviced, outer: requests.Response) -> WriteOutcome:
        response = _as_response(item, outer)
        if item.status_code >= 400:
            error = self._http.error_for("PATCH", f"{self._base}{sub.url}", response)
            ran = not isinstance(error, AuthError | ThrottledError)
            return WriteOutcome(sub.record_id, error=error, may_have_run=ran)
        try:
            result = response.json()["result"]
            if not isinstance(result, dict):
                raise TypeError("result is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            error = RejectedError(
                "Batch API sub-response lacks the expected result envelope",
                system=SYSTEM,
                status_code=item.status_code,
                request_id=request_id_of(response),
            )
            error.__cause__ = exc
            return WriteOutcome(sub.record_id, error=error)
        return WriteOutcome(
            sub.record_id, SourceRecord(SYSTEM, _table_of(sub), sub.record_id, result)
        )


def _unsent(sub: _Sub, error: ConnectorError) -> WriteOutcome:
    return WriteOutcome(sub.record_id, error=error, may_have_run=False)


def _table_of(sub: _Sub) -> str:
    return sub.url.split("/")[4]  # /api/now/table/<table>/<sys_id>


def _as_response(item: _Serviced, outer: requests.Response) -> requests.Response:
    """A ``requests.Response`` for one sub-response, so HttpClient maps it like any answer."""
    response = requests.Response()
    response.status_code = item.status_code
    response.reason = item.status_text
    for header in item.headers or []:
        name, value = header.get("name"), header.get("value")
        if isinstance(name, str) and isinstance(value, str | int | float):
            response.headers[name] = str(value)
    try:
        response._content = base64.b64decode(item.body or "", validate=True)
    except (binascii.Error, ValueError):
        response._content = (item.error_message or "").encode("utf-8")
    if request_id_of(response) is None and (outer_id := request_id_of(outer)) is not None:
        response.headers["X-Transaction-ID"] = outer_id
    response.url = outer.url
    return response
