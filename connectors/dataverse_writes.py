"""Dataverse writes: each case's ``$batch`` change set, for one case (``update``) or many.

One case is ONE change set (all or nothing): the PATCH of its values with ``If-Match: <etag
read>`` (``*`` only when no etag is known, so a missing case is never created: 404) and, when
the changes hold the pseudo-field ``annotation``, the POST of that note bound to the case.
Values are converted by the connector's ``field_types``: ``text`` as is, ``choice`` → int,
``lookup:<entity set>`` → ``<nav>@odata.bind: /<entity set>(<guid>)``; a column with no declared
type is refused before anything is sent. ``MSCRM.BypassBusinessLogicExecution`` goes on every
write when configured.

``update_many`` puts up to ``cases_per_batch`` change sets in one ``$batch`` (Dataverse allows
1000 operations per batch) with ``Prefer: odata.continue-on-error``: by default Dataverse stops at
the first failing change set and answers 400 (dataverse.md §7), which would leave every later
case of the batch unwritten. Each PATCH asks ``Prefer: return=representation`` with a ``$select``
of the written columns, so the stored values and the new etag come back without a re-read.

Outcomes (``WriteOutcome``), per change set: 2xx → the record; a failed part (412 → Conflict,
404 → NotFound, other 4xx and 5xx mapped like any answer by ``HttpClient.error_for``) → the
error with ``may_have_run=False``: the change set was rolled back. Per ``$batch`` request: 401,
403, 429 (after the retry layer) or a refused request → that batch's and every later batch's
cases get the error with ``may_have_run=False`` and nothing more is sent; a timeout, dropped
connection, 5xx or unreadable answer → ``may_have_run=True`` for that batch (unknown) and
later batches are not sent (``False``). A part answered 429 also stops later batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from connectors import _odata as od
from connectors._http import HttpClient, request_id_of
from connectors.base import SourceRecord, Update, WriteOutcome
from connectors.odata_batch import (
    BatchFormatError,
    BatchRequest,
    BatchResult,
    ChangeSet,
    EncodedBatch,
    build_batch,
    first_failure,
    parse_batch_response,
)
from domain.errors import (
    AuthError,
    ConnectorError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)

__all__ = ["DEFAULT_CASES_PER_BATCH", "MAX_CASES_PER_BATCH", "DataverseWrites"]

log = logging.getLogger(__name__)

DEFAULT_CASES_PER_BATCH = 100
MAX_CASES_PER_BATCH = 500  # two operations per case, 1000 per batch
CONTINUE_ON_ERROR = "odata.continue-on-error"


@dataclass(frozen=True)
class _Case:
    """One update of ``update_many``: its position, its change set and the Content-IDs."""

    index: int
    table: str
    record_id: str
    operations: list[BatchRequest]
    patch_id: str | None  # Content-ID of the PATCH, None for a note-only change set


class DataverseWrites:
    """Builds and sends the change sets of ``DataverseConnector.update`` and ``update_many``."""

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        *,
        field_types: Mapping[str, str],
        note_subject: str,
        bypass_business_logic: str | None = None,
    ) -> None:
        self._http = http
        self._base = base_url
        self._field_types = field_types
        self._note_subject = note_subject
        self._extra = (
            {"MSCRM.BypassBusinessLogicExecution": bypass_business_logic}
            if bypass_business_logic
            else {}
        )

    def change_set(
        self,
        table: str,
        record_id: str,
        changes: Mapping[str, str],
        etag: str | None,
        *,
        ids: tuple[str, str] = ("1", "2"),
        representation: bool = False,
    ) -> list[BatchRequest]:
        """The PATCH (Content-ID ``ids[0]``) and note POST (``ids[1]``) of one case.

        With ``representation`` the PATCH asks for the stored values of the written columns
        (and ``modifiedon``, ``_modifiedby_value``) in its answer. ``RejectedError`` for no
        changes, an undeclared column or a value that does not fit its type.
        """
        if not changes:
            raise RejectedError("update with no changes", system=od.SYSTEM)
        path = f"{od.API}/{od.entity_set(table)}({od.check_guid(record_id)})"
        values = {k: v for k, v in changes.items() if k != od.NOTE_FIELD}
        operations: list[BatchRequest] = []
        if values:
            if_match = etag if etag is not None else "*"
            headers = {**od.BASE_HEADERS, **self._extra, "If-Match": if_match}
            body = dict(self.convert(k, v) for k, v in values.items())
            url = path
            if representation:
                headers["Prefer"] = "return=representation"
                url = f"{path}?{od.query({'$select': od.select([*values, *od.AUDIT_FIELDS])})}"
            operations.append(BatchRequest("PATCH", url, headers, body, content_id=ids[0]))
        if od.NOTE_FIELD in changes:
            note = {
                "subject": self._note_subject,
                "notetext": changes[od.NOTE_FIELD],
                f"objectid_{table}@odata.bind": path.removeprefix(od.API),
            }
            headers = {**od.BASE_HEADERS, **self._extra}
            operations.append(
                BatchRequest("POST", f"{od.API}/annotations", headers, note, content_id=ids[1])
            )
        return operations

    def send_change_set(self, operations: list[BatchRequest]) -> requests.Response:
        """Send one change set as a ``$batch``; raise the first failed part's error."""
        response = self._post(build_batch([ChangeSet(operations)]), continue_on_error=False)
        results = self._parse(response)
        failed = first_failure(results)
        if failed is not None:
            operation = next((o for o in operations if o.content_id == failed.content_id), None)
            raise self._part_error(failed, operation, response)
        if response.status_code >= 400 or len(results) != len(operations):
            raise UnavailableError(
                f"$batch answered {len(results)} of {len(operations)} operations",
                system=od.SYSTEM,
                status_code=response.status_code,
                request_id=request_id_of(response),
            )
        return response

    def update_many(
        self,
        table: str,
        updates: Sequence[Update],
        *,
        cases_per_batch: int = DEFAULT_CASES_PER_BATCH,
    ) -> list[WriteOutcome]:
        """Write each ``(record_id, changes, etag)`` as its own change set; outcomes in order.

        ``ceil(len(updates) / cases_per_batch)`` requests at most, no re-reads. Every update is
        checked before anything is sent (``RejectedError``).
        """
        if not 1 <= cases_per_batch <= MAX_CASES_PER_BATCH:
            raise RejectedError(
                f"cases_per_batch must be 1..{MAX_CASES_PER_BATCH}", system=od.SYSTEM
            )
        cases = [self._case(i, table, *update) for i, update in enumerate(updates)]
        chunks = [cases[s : s + cases_per_batch] for s in range(0, len(cases), cases_per_batch)]
        try:
            batches = [build_batch([ChangeSet(c.operations) for c in chunk]) for chunk in chunks]
        except BatchFormatError as exc:
            raise RejectedError("a $batch could not be built", system=od.SYSTEM) from exc
        outcomes: dict[int, WriteOutcome] = {}
        stop: ConnectorError | None = None
        for chunk, batch in zip(chunks, batches, strict=True):
            if stop is not None:
                outcomes.update({c.index: _unsent(c, stop) for c in chunk})
                continue
            stop = self._run_batch(chunk, batch, outcomes)
        return [outcomes[c.index] for c in cases]

    def convert(self, field: str, value: str) -> tuple[str, Any]:
        """A column's raw value as the Web API takes it (``RejectedError`` when it cannot)."""
        kind = self._field_types.get(field)
        if kind is None:
            raise RejectedError(f"no field type configured for {field[:80]!r}", system=od.SYSTEM)
        if kind == "text":
            return field, value
        if kind == "choice":
            if not od.CHOICE_RE.fullmatch(value.strip()):
                raise RejectedError(f"{field}: a choice value must be an integer", system=od.SYSTEM)
            return field, int(value)
        entity_set = kind.removeprefix("lookup:")
        nav = field.removeprefix("_").removesuffix("_value")
        return f"{nav}@odata.bind", f"/{entity_set}({od.check_guid(value.strip())})"

    # ---- update_many ------------------------------------------------------------------------

    def _case(
        self, index: int, table: str, record_id: str, changes: Mapping[str, str], etag: str | None
    ) -> _Case:
        ids = (str(2 * index + 1), str(2 * index + 2))
        operations = self.change_set(table, record_id, changes, etag, ids=ids, representation=True)
        patch_id = ids[0] if operations[0].method == "PATCH" else None
        return _Case(index, table, record_id, operations, patch_id)

    def _run_batch(
        self, chunk: list[_Case], batch: EncodedBatch, outcomes: dict[int, WriteOutcome]
    ) -> ConnectorError | None:
        """Send one ``$batch`` of change sets; the error that must stop later batches, if any."""
        try:
            response = self._post(batch, continue_on_error=True)
        except ConnectorError as exc:
            # Refused before processing (401/403/429, a malformed request): nothing ran.
            ran = not isinstance(exc, AuthError | ThrottledError | RejectedError)
            for case in chunk:
                outcomes[case.index] = WriteOutcome(case.record_id, error=exc, may_have_run=ran)
            return exc
        try:
            results = self._parse(response)
        except UnavailableError as exc:
            outcomes.update({c.index: WriteOutcome(c.record_id, error=exc) for c in chunk})
            return exc
        by_id = {o.content_id: n for n, c in enumerate(chunk) for o in c.operations}
        answers: dict[int, list[BatchResult]] = {}
        for result in results:
            n = by_id.get(result.content_id)
            if n is None and result.change_set is not None and result.change_set < len(chunk):
                n = result.change_set  # an answer without its Content-ID: by position
            if n is not None:
                answers.setdefault(n, []).append(result)
        # Without continue-on-error honoured, Dataverse stops at the first failure (400): the
        # change sets it did not answer never ran.
        stopped = response.status_code >= 400
        throttled: ConnectorError | None = None
        for n, case in enumerate(chunk):
            outcome = self._outcome(case, answers.get(n, []), response, stopped)
            outcomes[case.index] = outcome
            if isinstance(outcome.error, ThrottledError) and throttled is None:
                throttled = outcome.error
        failed = sum(1 for c in chunk if outcomes[c.index].error is not None)
        log.info(
            "dataverse: $batch of %d change sets: %d written, %d failed, request_id=%s",
            len(chunk),
            len(chunk) - failed,
            failed,
            request_id_of(response),
        )
        return throttled

    def _outcome(
        self, case: _Case, answers: list[BatchResult], outer: requests.Response, stopped: bool
    ) -> WriteOutcome:
        failed = first_failure(answers)
        if failed is not None:
            operation = next(
                (o for o in case.operations if o.content_id == failed.content_id), None
            )
            error = self._part_error(failed, operation, outer)
            return WriteOutcome(case.record_id, error=error, may_have_run=False)
        if len(answers) != len(case.operations):
            missing = UnavailableError(
                "the $batch answer does not cover this change set",
                system=od.SYSTEM,
                status_code=outer.status_code,
                request_id=request_id_of(outer),
            )
            ran = bool(answers) or not stopped
            return WriteOutcome(case.record_id, error=missing, may_have_run=ran)
        record_id = case.record_id.lower()
        patch = next((a for a in answers if a.content_id == case.patch_id), None)
        if case.patch_id is None or patch is None:
            return WriteOutcome(case.record_id, SourceRecord(od.SYSTEM, case.table, record_id))
        body = patch.json()
        fields = od.plain(body) if isinstance(body, dict) else {}
        etag = body.get("@odata.etag") if isinstance(body, dict) else None
        if not isinstance(etag, str):
            etag = patch.headers.get("etag")
        record = SourceRecord(od.SYSTEM, case.table, record_id, fields, etag)
        return WriteOutcome(case.record_id, record)

    # ---- shared -----------------------------------------------------------------------------

    def _post(self, batch: EncodedBatch, *, continue_on_error: bool) -> requests.Response:
        headers = {**od.BASE_HEADERS, **self._extra, "Content-Type": batch.content_type}
        if continue_on_error:
            headers["Prefer"] = CONTINUE_ON_ERROR
        return self._http.request(
            "POST",
            f"{self._base}{od.API}/$batch",
            data=batch.body,
            headers=headers,
            idempotent=False,  # adds notes: retried only when it provably never left
            accept=_is_multipart,
        )

    def _parse(self, response: requests.Response) -> list[BatchResult]:
        try:
            return parse_batch_response(response.content, response.headers["Content-Type"])
        except (BatchFormatError, KeyError) as exc:
            raise UnavailableError(
                "unreadable $batch answer: the write may or may not have applied",
                system=od.SYSTEM,
                status_code=response.status_code,
                request_id=request_id_of(response),
            ) from exc

    def _part_error(
        self, part: BatchResult, operation: BatchRequest | None, outer: requests.Response
    ) -> ConnectorError:
        method = operation.method if operation is not None else "POST"
        where = f"{self._base}{operation.url if operation is not None else od.API + '/$batch'}"
        return self._http.error_for(method, where, _as_response(part, outer))


def _unsent(case: _Case, error: ConnectorError) -> WriteOutcome:
    return WriteOutcome(case.record_id, error=error, may_have_run=False)


def _is_multipart(response: requests.Response) -> bool:
    kind = response.headers.get("Content-Type", "")
    return response.status_code == 400 and kind.lower().startswith("multipart/")


def _as_response(part: BatchResult, outer: requests.Response) -> requests.Response:
    """A ``requests.Response`` for one batch part, so HttpClient maps it like any answer."""
    response = requests.Response()
    response.status_code = part.status
    response._content = part.body
    response.headers.update(part.headers)
    for name in ("x-ms-service-request-id", "REQ_ID"):
        if name not in response.headers and name in outer.headers:
            response.headers[name] = outer.headers[name]
    response.url = outer.url
    return response
