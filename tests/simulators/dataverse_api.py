"""Web API resources of the Dataverse simulator: entity sets, records, metadata, WhoAmI.

``WebApi.execute`` answers one request below ``/api/data/v9.2/`` for an authenticated user
(the ``$batch`` executor calls it for every part). Query options it does not implement, and
``$skip``, are refused with 400 ``0x80060888``; nothing is silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tests.simulators import Response
from tests.simulators.dataverse_metadata import option_sets
from tests.simulators.dataverse_odata import (
    ODataError,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_rows,
)
from tests.simulators.dataverse_schema import Column, ValidationError, parse_datetime
from tests.simulators.dataverse_store import Store, Undo

__all__ = ["API_PREFIX", "Call", "WebApi", "error"]

API_PREFIX = "/api/data/v9.2/"
MAX_PAGE = 5000
PRECONDITION_FAILED = (
    "The version of the existing record doesn't match the RowVersion property provided."
)
_RECORD = re.compile(r"^(\w+)\(([0-9a-fA-F-]{36})\)$")
_METADATA = re.compile(
    r"^EntityDefinitions\(LogicalName='incident'\)/Attributes/"
    r"Microsoft\.Dynamics\.CRM\.(Picklist|State|Status)AttributeMetadata$"
)
_COOKIE = re.compile(r'pagingcookie="([A-Za-z0-9_=-]+)"')

BeforeWrite = Callable[[str, str, dict[str, Any]], object]  # entity set, id, parsed body


def error(status: int, code: str, message: str, **headers: str) -> Response:
    """A Web API error body ``{"error": {"code", "message"}}``."""
    return Response(status, {"error": {"code": code, "message": message}}, dict(headers))


@dataclass
class Call:
    """One request as the Web API executes it (top level or a ``$batch`` part)."""

    user: str
    method: str
    resource: str  # below /api/data/v9.2/, no query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    undo: Undo | None = None  # set inside a change set
    created: list[str] = field(default_factory=list)  # incident ids to announce on commit

    def prefer(self, name: str) -> str | None:
        """The value of a ``Prefer`` preference (``""`` for a bare one), else None."""
        for item in self.headers.get("prefer", "").split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"')
        return None

    def annotate(self, name: str) -> bool:
        """Whether ``odata.include-annotations`` asks for annotation ``name``."""
        wanted = (self.prefer("odata.include-annotations") or "").split(",")
        return any(
            w.strip() == "*" or w.strip() == name or (w.strip().endswith("*") and name.startswith(w.strip()[:-1]))
            for w in wanted if w.strip()
        )  # fmt: skip


class WebApi:
    """Entity sets, single records, option set metadata and WhoAmI."""

    def __init__(self, store: Store, base_url: Callable[[], str], org: tuple[str, str]) -> None:
        self.store = store
        self.base_url = base_url
        self.org = org  # (organization id, business unit id)
        self.before_write: BeforeWrite | None = None

    @property
    def api(self) -> str:
        """Service root, e.g. ``https://127.0.0.1:5000/api/data/v9.2``."""
        return self.base_url() + API_PREFIX.rstrip("/")

    def execute(self, call: Call) -> Response:
        """Answer one call; validation errors become their 4xx answers."""
        try:
            return self._route(call)
        except ValidationError as exc:
            return error(exc.status, exc.code, exc.message)

    def _route(self, call: Call) -> Response:
        res, method = call.resource, call.method
        if res == "WhoAmI" and method == "GET":
            self._options(call, set())
            return Response(200, {
                "@odata.context": f"{self.api}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.org[1], "UserId": call.user, "OrganizationId": self.org[0],
            })  # fmt: skip
        if (m := _METADATA.match(res)) and method == "GET":
            self._options(call, {"$select", "$expand"})
            return option_sets(self.store, self.api, call.query, m.group(1))
        if res in self.store.schemas:
            if method == "GET":
                return self._list(call, res)
            if method == "POST":
                return self._write(call, res, None)
        if (m := _RECORD.match(res)) and m.group(1) in self.store.schemas:
            entity_set, rid = m.group(1), m.group(2).lower()
            if method == "GET":
                return self._get(call, entity_set, rid)
            if method == "PATCH":
                return self._write(call, entity_set, rid)
            if method == "DELETE":
                return self._delete(call, entity_set, rid)
        if res in self.store.schemas or _RECORD.match(res):
            return error(405, "0x80060888", f"The HTTP method '{method}' is not allowed here.")
        return error(404, "0x80060888", f"Resource not found for the segment '{res[:100]}'.")

    def _options(self, call: Call, allowed: set[str]) -> None:
        for name in call.query:
            if name not in allowed:
                what = "is not supported" if name.startswith("$") else "is not a query option"
                raise ODataError(f"The query parameter '{name[:50]}' {what}.")

    # ---- reads -------------------------------------------------------------------------------

    def _get(self, call: Call, entity_set: str, rid: str) -> Response:
        self._options(call, {"$select"})
        select = parse_select(self.store.schemas[entity_set], call.query.get("$select"))
        with self.store.lock:
            rec = self.store.tables[entity_set].get(rid)
            if rec is None:
                return self._missing(entity_set, rid)
            etag = f'W/"{rec["versionnumber"]}"'
            if (
                call.headers.get("if-none-match") == etag
                and call.prefer("odata.include-annotations") is None
            ):
                return Response(304, None, {"ETag": etag})
            body = self.store.render(entity_set, rec, select, call.annotate)
        context = f"{self.api}/$metadata#{entity_set}({','.join(select or [])})/$entity"
        return Response(
            200, {"@odata.context": context, **body}, {"ETag": etag, **self._applied(call)}
        )

    def _list(self, call: Call, entity_set: str) -> Response:
        self._options(call, {"$select", "$filter", "$orderby", "$top", "$count", "$skiptoken"})
        schema = self.store.schemas[entity_set]
        select = parse_select(schema, call.query.get("$select"))
        pred = parse_filter(schema, call.query["$filter"]) if "$filter" in call.query else None
        order = parse_orderby(schema, call.query["$orderby"]) if "$orderby" in call.query else []
        size, top = self._page_size(call), call.query.get("$top")
        if top is not None and not top.isdigit():
            raise ODataError(f"Invalid value '{top[:20]}' for $top query option found.")
        cookie = self._cookie(call)
        with self.store.lock:
            rows = [r for r in self.store.tables[entity_set].values() if pred is None or pred(r)]
            rows = sort_rows(rows, order, schema.primary_key)
            if top is not None and call.prefer("odata.maxpagesize") is None:
                rows = rows[: int(top)]  # with maxpagesize, $top is ignored (page-results)
            after = rows
            if cookie is not None:  # the rows matching NOW that sort after the cookie's row
                last = cookie["last"]
                after = [
                    r for r in rows if _after(_position(r, order, schema.primary_key), last, order)
                ]
            page = after[:size]
            value = [self.store.render(entity_set, r, select, call.annotate) for r in page]
        body: dict[str, Any] = {
            "@odata.context": f"{self.api}/$metadata#{entity_set}({','.join(select or [])})"
        }
        if call.query.get("$count") == "true":
            body["@odata.count"] = min(len(rows), MAX_PAGE)
        body["value"] = value
        if len(after) > size:
            served = (cookie["n"] if cookie is not None else 0) + len(page)
            first, last_row = page[0], page[-1]
            body["@odata.nextLink"] = self._next_link(
                call,
                served,
                _position(last_row, order, schema.primary_key),
                first[schema.primary_key],
            )
        return Response(200, body, self._applied(call))

    def _page_size(self, call: Call) -> int:
        raw = call.prefer("odata.maxpagesize")
        if raw is None:
            return MAX_PAGE
        if not raw.isdigit() or int(raw) < 1:
            raise ODataError(f"Invalid odata.maxpagesize '{raw[:20]}'.")
        return min(int(raw), MAX_PAGE)

    def _signature(self, call: Call) -> str:
        items = sorted((k, v) for k, v in call.query.items() if k != "$skiptoken")
        return hashlib.sha256(json.dumps([call.resource, items]).encode()).hexdigest()[:16]

    def _next_link(self, call: Call, served: int, last: list[Any], first: str) -> str:
        # Like Dataverse's paging cookie (<incidentid last="{...}" first="{...}"/>, with the
        # $orderby columns' values of the last row): a position, not an offset. ``n`` (rows
        # served so far) only feeds the informative pagenumber attribute.
        state = {"last": last, "first": first, "n": served, "s": self._signature(call)}
        cookie = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        token = f'<cookie pagenumber="{served}" pagingcookie="{cookie}" istracking="False" />'
        query = {k: v for k, v in call.query.items() if k != "$skiptoken"} | {"$skiptoken": token}
        return f"{self.api}/{call.resource}?{urlencode(query, quote_via=quote, safe='$,()')}"

    def _cookie(self, call: Call) -> dict[str, Any] | None:
        token = call.query.get("$skiptoken")
        if token is None:
            return None
        m = _COOKIE.search(token)
        try:
            state = json.loads(base64.urlsafe_b64decode(m.group(1))) if m else None
        except ValueError:
            state = None
        if (
            not isinstance(state, dict)
            or state.get("s") != self._signature(call)
            or not isinstance(state.get("last"), list)
            or not isinstance(state.get("n"), int)
        ):
            raise ODataError(
                "The $skiptoken does not belong to this query: follow @odata.nextLink unchanged."
            )
        return state

    def _applied(self, call: Call) -> dict[str, str]:
        applied = [
            f"{name}={call.prefer(name)}" if name == "odata.maxpagesize" else f'{name}="{call.prefer(name)}"'
            for name in ("odata.include-annotations", "odata.maxpagesize")
            if call.prefer(name) is not None
        ]  # fmt: skip
        return {"Preference-Applied": ",".join(applied)} if applied else {}

    def _missing(self, entity_set: str, rid: str, code: str = "0x80040217") -> Response:
        logical = self.store.schemas[entity_set].logical_name
        return error(404, code, f"{logical} With Id = {rid} Does Not Exist")

    # ---- writes ------------------------------------------------------------------------------

    def _write(self, call: Call, entity_set: str, rid: str | None) -> Response:
        self._options(call, {"$select"})
        select = parse_select(self.store.schemas[entity_set], call.query.get("$select"))
        try:
            body = json.loads(call.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ValidationError(400, "0x80048d19", "The request body must be a JSON object.")
        hook = self.before_write
        if hook is not None and rid is not None and rid in self.store.tables[entity_set]:
            hook(entity_set, rid, body)  # outside the lock: may act as a person
        if_match, if_none = call.headers.get("if-match"), call.headers.get("if-none-match")
        with self.store.lock:
            key = body.get(self.store.schemas[entity_set].primary_key)
            existing = self.store.tables[entity_set].get(str(rid or key or "").lower())
            if if_match is not None and rid is not None:
                if existing is None:
                    return self._missing(entity_set, rid, code="")
                if if_match != "*" and if_match != f'W/"{existing["versionnumber"]}"':
                    return error(412, "", PRECONDITION_FAILED)
            if existing is not None and (rid is None or if_none == "*"):
                return error(412, "0x80040237", "A record with matching key values already exists.")
            rec, created = self.store.write(entity_set, rid, body, call.user, undo=call.undo)
        new_id = rec[self.store.schemas[entity_set].primary_key]
        if created and entity_set == "incidents":
            call.created.append(new_id)
        entity_id = f"{self.api}/{entity_set}({new_id})"
        headers = {"OData-EntityId": entity_id, "ETag": f'W/"{rec["versionnumber"]}"'}
        if call.prefer("return") == "representation":
            out = self.store.render(entity_set, rec, select, call.annotate)
            context = f"{self.api}/$metadata#{entity_set}/$entity"
            return Response(
                201 if rid is None else 200, {"@odata.context": context, **out}, headers
            )
        return Response(204, None, headers)

    def _delete(self, call: Call, entity_set: str, rid: str) -> Response:
        self._options(call, set())
        with self.store.lock:
            old = self.store.tables[entity_set].pop(rid, None)
            if old is None:
                return self._missing(entity_set, rid)
            if call.undo is not None:
                call.undo.append((entity_set, rid, old))
        return Response(204)


def _position(row: dict[str, Any], order: list[tuple[Column, bool]], pk: str) -> list[Any]:
    """A row's place in the order: its raw $orderby values, then its key (JSON-safe)."""
    return [row.get(col.attribute) for col, _ in order] + [str(row[pk])]


def _sort_key(col: Column, value: Any) -> tuple[Any, ...]:
    # As sort_rows compares: nulls first ascending, case-insensitive strings, parsed times.
    if value is None:
        return (0,)
    if col.type == "datetime":
        return (1, parse_datetime(value))
    return (1, value.lower() if isinstance(value, str) else value)


def _after(position: list[Any], last: list[Any], order: list[tuple[Column, bool]]) -> bool:
    """Whether ``position`` sorts strictly after ``last`` (the cookie's row)."""
    if len(last) != len(order) + 1:
        raise ODataError("The $skiptoken does not belong to this query.")
    for (col, desc), mine, theirs in zip(order, position, last, strict=False):
        a, b = _sort_key(col, mine), _sort_key(col, theirs)
        if a != b:
            return (a < b) if desc else (a > b)
    return bool(position[-1] > last[-1])
