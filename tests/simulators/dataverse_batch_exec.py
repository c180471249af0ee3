"""Executes a ``$batch`` (dataverse.md §7) against the simulator's WebApi.

Parts run in order as the batch's user. A change set is atomic: its writes note undo entries
and are rolled back when one part fails (the answer then holds only the failing part); GETs
inside a change set are refused; ``$n`` refers to the entity created by the part with
``Content-ID: n``. Without ``Prefer: odata.continue-on-error`` the first failure ends the
batch and the batch answers 400; with it, the batch answers 200 and carries on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.simulators import Response
from tests.simulators.dataverse_api import API_PREFIX, Call, WebApi, error
from tests.simulators.dataverse_batch import (
    BatchError,
    ChangeSet,
    PartRequest,
    PartResponse,
    boundary_of,
    parse_batch,
    render_batch,
)

__all__ = ["run_batch"]

Announce = Callable[[list[str], Call], None]  # created incident ids, the call that made them


def _part_response(resp: Response, content_id: str | None, req_id: str) -> PartResponse:
    headers = {"OData-Version": "4.0", "REQ_ID": req_id, **resp.headers}
    body = b""
    if resp.body is not None:
        body = json.dumps(resp.body).encode()
        headers["Content-Type"] = "application/json; odata.metadata=minimal; odata.streaming=true"
    return PartResponse(resp.status, headers, body, content_id)


def _resolve(text: str, ids: dict[str, str]) -> str:
    for cid in sorted(ids, key=len, reverse=True):
        text = text.replace(f"${cid}", ids[cid])
    return text


def _call(outer: Call, part: PartRequest, ids: dict[str, str]) -> Call | Response:
    url = _resolve(part.url, ids)
    if url.startswith("$"):
        return error(400, "0x80048d19", f"Content-ID reference '{url[:20]}' was not declared.")
    split = urlsplit(url)
    path = unquote(split.path)
    if API_PREFIX in path:
        path = path.split(API_PREFIX, 1)[1]
    elif path.startswith("/"):
        return error(404, "0x80060888", f"Resource not found for the segment '{path[:100]}'.")
    body = _resolve(part.body.decode("utf-8", "replace"), ids).encode() if part.body else b""
    headers = {**{k: v for k, v in outer.headers.items() if k.startswith("mscrm.")}, **part.headers}
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    return Call(outer.user, part.method, path, query, headers, body)


def _changeset(
    api: WebApi, outer: Call, cs: ChangeSet, announce: Announce, new_id: Callable[[], str]
) -> tuple[list[PartResponse], bool]:
    undo: list[tuple[str, str, dict[str, object] | None]] = []
    ids: dict[str, str] = {}
    done: list[PartResponse] = []
    created: list[tuple[list[str], Call]] = []
    for part in cs.parts:
        call = _call(outer, part, ids)
        if isinstance(call, Call) and call.method == "GET":
            call = error(400, "0x80048d19", "GET requests are not allowed inside a change set.")
        if isinstance(call, Call):
            call.undo = undo
            resp = api.execute(call)
            created.append((call.created, call))
        else:
            resp = call
        out = _part_response(resp, part.content_id, new_id())
        if resp.status >= 400:
            api.store.rollback(undo)
            return [out], False
        done.append(out)
        if part.content_id is not None and "OData-EntityId" in resp.headers:
            ids[part.content_id] = resp.headers["OData-EntityId"]
    for case_ids, call in created:
        announce(case_ids, call)
    return done, True


def run_batch(api: WebApi, outer: Call, announce: Announce, new_id: Callable[[], str]) -> Response:
    """Answer ``POST /$batch``; ``announce`` is called for committed incident creates."""
    boundary = boundary_of(outer.headers.get("content-type", ""))
    if boundary is None:
        return error(
            400,
            "0x80048d19",
            "A $batch request needs Content-Type multipart/mixed with a boundary.",
        )
    try:
        items = parse_batch(outer.body, boundary)
    except BatchError as exc:
        return error(400, "0x80048d19", str(exc))
    keep_going = outer.prefer("odata.continue-on-error") is not None
    results: list[PartResponse | list[PartResponse]] = []
    failed = False
    for item in items:
        if isinstance(item, ChangeSet):
            parts, ok = _changeset(api, outer, item, announce, new_id)
            results.append(parts)
        else:
            call = _call(outer, item, {})
            resp = api.execute(call) if isinstance(call, Call) else call
            if isinstance(call, Call):
                announce(call.created, call)
            results.append(_part_response(resp, item.content_id, new_id()))
            ok = resp.status < 400
        failed = failed or not ok
        if failed and not keep_going:
            break
    content_type, body = render_batch(results)
    headers = {"Content-Type": content_type}
    if keep_going:
        headers["Preference-Applied"] = "odata.continue-on-error"
    return Response(400 if failed and not keep_going else 200, body, headers)
