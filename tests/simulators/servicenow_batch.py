"""The ServiceNow simulator's Batch API: ``POST /api/now/v1/batch`` (servicenow.md §7).

Request ``{"batch_request_id", "rest_requests": [{"id", "method", "url", "headers": [{"name",
"value"}], "body": <base64>, "exclude_response_headers"}]}``; answer ``{"batch_request_id",
"serviced_requests": [{"id", "status_code", "status_text", "headers", "body": <base64>,
"execution_time"}], "unserviced_requests": [ids]}`` (ServiceNow "Batch API" reference).

Sub-requests run in order, as the outer request's user, through the simulator's own Table API
handlers (``_table_op``), each counted by the rate limit rule (a blocked one is serviced with
429). After ``max_serviced`` sub-requests (or the next entry of ``cut_next``) the rest come back
unserviced and did not run, like a batch cut by the 30 s "REST Batch API request timeout".
Staged write faults act on the PATCHes inside: a held answer holds the whole batch, a dropped
one drops the batch's connection (after the writes that committed).

A malformed batch (not a JSON object, no ``rest_requests``, a missing or repeated id, a bad
header list, a body that is not base64) is refused with 400 and nothing runs. A sub-request to
anything but the Table API is serviced with 400 and recorded in ``sim.errors`` (not implemented
here, so a test must not rely on it silently).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tests.simulators import Request, Response

if TYPE_CHECKING:
    from tests.simulators.servicenow import ServiceNowSimulator

__all__ = ["BATCH_PATH", "BatchEndpoint", "SubRequestLog"]

BATCH_PATH = "/api/now/v1/batch"
METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


class UnsupportedSubRequestError(ValueError):
    """A batch sub-request the simulator does not implement (surfaced through ``sim.errors``)."""


@dataclass(frozen=True)
class SubRequestLog:
    """One sub-request the batch endpoint ran (unserviced ones are not logged)."""

    batch_request_id: str
    id: str
    method: str
    path: str
    status: int
    body: Any = None


class _Malformed(ValueError):
    pass


def _error(status: int, message: str, detail: str | None = None) -> Response:
    return Response(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


class BatchEndpoint:
    """Serves ``POST /api/now/v1/batch`` for one simulator; configure ``max_serviced``."""

    def __init__(self, sim: ServiceNowSimulator) -> None:
        self._sim = sim
        self._lock = threading.Lock()
        self.max_serviced: int | None = None  # None: every sub-request is serviced
        self._cuts: list[int] = []
        self._log: list[SubRequestLog] = []

    def cut_next(self, *serviced: int) -> None:
        """The next batches service only this many sub-requests each (then ``max_serviced``)."""
        with self._lock:
            self._cuts.extend(serviced)

    @property
    def sub_requests(self) -> list[SubRequestLog]:
        """A copy of every sub-request run so far, in order."""
        with self._lock:
            return list(self._log)

    def serve(self, req: Request, user: str) -> Response:
        """Answer one batch request by ``user`` (already authenticated)."""
        if req.method != "POST":
            return _error(405, "Method not Supported", f"{req.method} is not allowed here")
        if "json" not in req.headers.get("content-type", "").lower():
            return _error(415, "Unsupported Media Type", "the Batch API takes application/json")
        try:
            batch_id, items = _parse(req.body)
        except _Malformed as exc:
            return _error(400, "Invalid batch request", str(exc))
        with self._lock:
            limit = self._cuts.pop(0) if self._cuts else self.max_serviced
        limit = len(items) if limit is None else max(0, limit)
        outer = Response(200)
        serviced = [self._run(batch_id, item, user, outer) for item in items[:limit]]
        outer.body = {
            "batch_request_id": batch_id,
            "serviced_requests": serviced,
            "unserviced_requests": [item["id"] for item in items[limit:]],
        }
        return outer

    def _run(self, batch_id: str, item: dict[str, Any], user: str, outer: Response) -> Any:
        url = urlsplit(item["url"])
        body: bytes = item["body"]
        headers = {str(h["name"]).lower(): str(h["value"]) for h in item["headers"]}
        sub = Request(
            item["method"], url.path, dict(parse_qsl(url.query, keep_blank_values=True)),
            headers, body,
        )  # fmt: skip
        resp = self._dispatch(sub, user)
        # The sub-response's lifecycle is the batch's: callbacks, holds and drops carry over.
        outer.after.extend(resp.after)
        outer.finished.extend(resp.finished)
        outer.hold_s = max(outer.hold_s, resp.hold_s)
        outer.drop = outer.drop or resp.drop
        try:
            logged = json.loads(body) if body else None
        except ValueError:
            logged = body.decode("utf-8", "replace")
        with self._lock:
            self._log.append(
                SubRequestLog(batch_id, item["id"], sub.method, sub.path, resp.status, logged)
            )
        resp.headers.setdefault("X-Transaction-ID", secrets.token_hex(6))
        payload = b"" if resp.body is None else json.dumps(resp.body).encode()
        if resp.body is not None:
            resp.headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        shown = (
            [] if item["exclude"] else [{"name": k, "value": v} for k, v in resp.headers.items()]
        )
        return {
            "id": item["id"],
            "status_code": resp.status,
            "status_text": _reason(resp.status),
            "headers": shown,
            "body": base64.b64encode(payload).decode("ascii"),
            "execution_time": 0,
        }

    def _dispatch(self, sub: Request, user: str) -> Response:
        parts = sub.path.strip("/").split("/")
        if parts[:2] == ["api", "now"] and len(parts) > 3 and parts[2][:1] == "v":
            del parts[2]  # /api/now/v2/table/... == /api/now/table/...
        if parts[:3] != ["api", "now", "table"] or len(parts) not in (4, 5):
            self._sim.errors.append(UnsupportedSubRequestError(sub.path[:100]))
            return _error(400, "Requested URI does not represent any resource")
        blocked, limit_headers = self._sim._auth.rate_limit(user, sub.method, parts[3])
        if blocked:
            resp = _error(429, "Too Many Requests", "Rate limit exceeded")
        else:
            sys_id = parts[4] if len(parts) == 5 else None
            resp = self._sim._table_op(sub, user, parts[3], sys_id)
        resp.headers.update(limit_headers)
        return resp


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _parse(raw: bytes) -> tuple[str, list[dict[str, Any]]]:
    """Check the whole batch before anything runs; bodies come back decoded."""
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise _Malformed("the payload is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Malformed("the payload is not a JSON object")
    batch_id = data.get("batch_request_id", "")
    requests = data.get("rest_requests")
    if not isinstance(batch_id, str) or not isinstance(requests, list) or not requests:
        raise _Malformed("rest_requests must be a non-empty array")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, entry in enumerate(requests):
        if not isinstance(entry, dict):
            raise _Malformed(f"rest_requests[{n}] is not an object")
        sub_id, method, url = entry.get("id"), entry.get("method"), entry.get("url")
        if not isinstance(sub_id, str) or not sub_id or sub_id in seen:
            raise _Malformed(f"rest_requests[{n}].id is missing or repeated")
        seen.add(sub_id)
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise _Malformed(f"rest_requests[{n}].method is not supported")
        if not isinstance(url, str) or not url.startswith("/"):
            raise _Malformed(f"rest_requests[{n}].url must be a relative path")
        headers = entry.get("headers", [])
        if not isinstance(headers, list) or not all(
            isinstance(h, dict) and isinstance(h.get("name"), str) and "value" in h for h in headers
        ):
            raise _Malformed(f"rest_requests[{n}].headers must be [{{name, value}}]")
        encoded = entry.get("body")
        try:
            body = base64.b64decode(encoded, validate=True) if encoded else b""
        except (binascii.Error, TypeError, ValueError):
            raise _Malformed(f"rest_requests[{n}].body is not base64") from None
        exclude = entry.get("exclude_response_headers", False)
        items.append({"id": sub_id, "method": method.upper(), "url": url, "headers": headers,
                      "body": body, "exclude": exclude is True})  # fmt: skip
    return batch_id, items
