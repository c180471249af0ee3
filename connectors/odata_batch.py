"""OData ``$batch`` bodies (multipart/mixed with change sets): build and parse, no I/O.

Shape (Dataverse "Execute batch operations using the Web API", dataverse.md §7)::

    --batch_X                                   one part per request or change set
    Content-Type: multipart/mixed; boundary=changeset_Y

    --changeset_Y
    Content-Type: application/http
    Content-Transfer-Encoding: binary
    Content-ID: 1

    PATCH /api/data/v9.2/incidents(<id>) HTTP/1.1
    Content-Type: application/json; type=entry
    If-Match: W/"123"

    {"prioritycode": 1}
    --changeset_Y--
    --batch_X--

Lines end in CRLF. A change set is atomic on the server: all its requests apply or none. The
answer has the same shape with ``batchresponse_``/``changesetresponse_`` boundaries and status
lines (``HTTP/1.1 204 No Content``) instead of request lines; by default the first failure ends
the batch and is the part to report (``first_failure``).

Boundaries are random and checked against the content, so a body that happens to hold the text
of a boundary never splits the message. Bodies are JSON (UTF-8, ``ensure_ascii=False``): a line
break inside a JSON string is written ``\\r\\n`` escaped, never as a raw line break.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = [
    "BatchFormatError",
    "BatchRequest",
    "BatchResult",
    "ChangeSet",
    "EncodedBatch",
    "build_batch",
    "build_batch_response",
    "first_failure",
    "parse_batch_request",
    "parse_batch_response",
]

CRLF = "\r\n"
MAX_REQUESTS = 1000  # Dataverse's limit per batch
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(r"^HTTP/\d\.\d\s+(\d{3})(?:\s+(.*))?$")
_REQUEST_LINE = re.compile(r"^([A-Z]+)\s+(\S+)\s+HTTP/\d\.\d$")
_TOKEN = re.compile(r"^[A-Za-z0-9'()_.:-]{1,70}$")


class BatchFormatError(ValueError):
    """A batch body could not be built or parsed (the caller maps it into its error tree)."""


@dataclass(frozen=True)
class BatchRequest:
    """One operation: ``url`` is absolute or a ``/api/data/v9.2/...`` path; ``body`` is JSON."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    content_id: str | None = None


@dataclass(frozen=True)
class ChangeSet:
    """Requests applied all together or not at all (no GETs allowed inside)."""

    requests: Sequence[BatchRequest]


@dataclass(frozen=True)
class EncodedBatch:
    """A built batch: POST ``body`` with header ``Content-Type: content_type``."""

    body: bytes
    content_type: str
    boundary: str


@dataclass(frozen=True)
class BatchResult:
    """One answered operation. ``headers`` keys are lower-case; ``change_set`` is its index."""

    status: int
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_id: str | None = None
    change_set: int | None = None

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is empty or not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


def _new_token() -> str:
    return uuid.uuid4().hex


def build_batch(
    items: Sequence[BatchRequest | ChangeSet], *, token: Callable[[], str] = _new_token
) -> EncodedBatch:
    """Encode requests and change sets as one ``multipart/mixed`` batch body."""
    count = sum(len(i.requests) if isinstance(i, ChangeSet) else 1 for i in items)
    if not 0 < count <= MAX_REQUESTS:
        raise BatchFormatError(f"a batch holds 1..{MAX_REQUESTS} requests, got {count}")
    parts: list[tuple[dict[str, str], str]] = []
    for item in items:
        if isinstance(item, ChangeSet):
            if not item.requests:
                raise BatchFormatError("empty change set")
            if any(r.method.upper() == "GET" for r in item.requests):
                raise BatchFormatError("a change set cannot hold a GET")
            inner = [_http_part(_request_message(r), r.content_id) for r in item.requests]
            boundary = _fresh("changeset", inner, token)
            headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
            parts.append((headers, _multipart(inner, boundary)))
        else:
            parts.append(_http_part(_request_message(item), item.content_id))
    boundary = _fresh("batch", parts, token)
    body = _multipart(parts, boundary).encode("utf-8")
    return EncodedBatch(body, f"multipart/mixed; boundary={boundary}", boundary)


def build_batch_response(
    items: Sequence[BatchResult | Sequence[BatchResult]], *, token: Callable[[], str] = _new_token
) -> EncodedBatch:
    """Encode answers the way the server does (a nested sequence is one change set's answers)."""
    parts: list[tuple[dict[str, str], str]] = []
    for item in items:
        if isinstance(item, BatchResult):
            parts.append(_http_part(_response_message(item), item.content_id))
            continue
        inner = [_http_part(_response_message(r), r.content_id) for r in item]
        boundary = _fresh("changesetresponse", inner, token)
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
        parts.append((headers, _multipart(inner, boundary)))
    boundary = _fresh("batchresponse", parts, token)
    return EncodedBatch(
        _multipart(parts, boundary).encode("utf-8"),
        f"multipart/mixed; boundary={boundary}",
        boundary,
    )


def parse_batch_response(body: bytes, content_type: str) -> list[BatchResult]:
    """Every answered operation in order, change-set answers flattened with their index."""
    results: list[BatchResult] = []
    for headers, message, change_set in _walk(body, content_type):
        head, payload = _split_message(message)
        match = _STATUS_LINE.match(head[0] if head else "")
        if match is None:
            raise BatchFormatError("a batch response part has no status line")
        results.append(
            BatchResult(
                status=int(match[1]),
                reason=(match[2] or "").strip(),
                headers=_header_map(head[1:]),
                body=payload,
                content_id=headers.get("content-id"),
                change_set=change_set,
            )
        )
    return results


def parse_batch_request(body: bytes, content_type: str) -> list[BatchRequest | ChangeSet]:
    """The requests of a batch body (what a server, or a test, sees), grouped by change set."""
    items: list[BatchRequest | ChangeSet] = []
    current: tuple[int, list[BatchRequest]] | None = None
    for headers, message, change_set in _walk(body, content_type):
        head, payload = _split_message(message)
        match = _REQUEST_LINE.match(head[0] if head else "")
        if match is None:
            raise BatchFormatError("a batch part has no request line")
        text = payload.decode("utf-8").strip()
        request = BatchRequest(
            method=match[1],
            url=match[2],
            headers=_header_map(head[1:], lower=False),
            body=json.loads(text) if text else None,
            content_id=headers.get("content-id"),
        )
        if change_set is None:
            items.append(request)
            current = None
        elif current is not None and current[0] == change_set:
            current[1].append(request)
        else:
            current = (change_set, [request])
            items.append(ChangeSet(current[1]))
    return items


def first_failure(results: Sequence[BatchResult]) -> BatchResult | None:
    """The first part answered with a status of 400 or more, if any."""
    return next((r for r in results if r.status >= 400), None)


def _request_message(request: BatchRequest) -> str:
    method = request.method.upper()
    if not re.fullmatch(r"[A-Z]+", method) or not re.fullmatch(r"\S+", request.url):
        raise BatchFormatError("invalid method or URL in a batch request")
    headers = dict(request.headers)
    if request.body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json; type=entry"
    lines = [f"{method} {request.url} HTTP/1.1", *_header_lines(headers), ""]
    body = "" if request.body is None else json.dumps(request.body, ensure_ascii=False)
    return CRLF.join(lines) + CRLF + body


def _response_message(result: BatchResult) -> str:
    reason = result.reason or _reason(result.status)
    lines = [f"HTTP/1.1 {result.status} {reason}", *_header_lines(result.headers), ""]
    return CRLF.join(lines) + CRLF + result.body.decode("utf-8")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _http_part(message: str, content_id: str | None) -> tuple[dict[str, str], str]:
    headers = {"Content-Type": "application/http", "Content-Transfer-Encoding": "binary"}
    if content_id is not None:
        if not _TOKEN.fullmatch(content_id):
            raise BatchFormatError("invalid Content-ID")
        headers["Content-ID"] = content_id
    return headers, message


def _header_lines(headers: Mapping[str, str]) -> list[str]:
    lines = []
    for name, value in headers.items():
        if not re.fullmatch(r"[!#-'*+.0-9A-Z^-z|~-]+", name) or re.search(r"[\r\n]", value):
            raise BatchFormatError("invalid header in a batch request")
        lines.append(f"{name}: {value}")
    return lines


def _multipart(parts: Sequence[tuple[Mapping[str, str], str]], boundary: str) -> str:
    out = []
    for headers, content in parts:
        out.append(f"--{boundary}{CRLF}")
        out.extend(f"{line}{CRLF}" for line in _header_lines(headers))
        out.append(f"{CRLF}{content}{CRLF}")
    out.append(f"--{boundary}--{CRLF}")
    return "".join(out)


def _fresh(
    prefix: str, parts: Sequence[tuple[Mapping[str, str], str]], token: Callable[[], str]
) -> str:
    text = "".join(content for _, content in parts)
    for _ in range(100):
        boundary = f"{prefix}_{token()}"
        if not _TOKEN.fullmatch(boundary):
            raise BatchFormatError("invalid boundary token")
        if f"--{boundary}" not in text:
            return boundary
    raise BatchFormatError("no boundary found that the content does not hold")


def _boundary_of(content_type: str) -> str:
    match = _BOUNDARY_RE.search(content_type)
    if not content_type.lower().startswith("multipart/") or match is None:
        raise BatchFormatError("not a multipart body")
    return match[1].strip()


def _walk(
    body: bytes, content_type: str, change_set: int | None = None, counter: list[int] | None = None
) -> Iterator[tuple[dict[str, str], bytes, int | None]]:
    """(part headers, embedded HTTP message, change-set index) of each application/http part."""
    counter = counter if counter is not None else [0]
    for part in _split_parts(body, _boundary_of(content_type)):
        head, payload = _split_message(part)
        headers = _header_map(head)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/"):
            if change_set is not None:
                raise BatchFormatError("nested change sets")
            index = counter[0]
            counter[0] += 1
            yield from _walk(payload, kind, index, counter)
        elif kind.lower().startswith("application/http"):
            yield headers, payload, change_set
        else:
            raise BatchFormatError("a batch part is neither application/http nor multipart")


def _split_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*(?:\r?\n|\Z)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match[1]:
            return parts
        start = match.end()
    raise BatchFormatError("multipart body without its closing delimiter")


def _split_message(data: bytes) -> tuple[list[str], bytes]:
    """Header lines (first line included) and the body after the first blank line."""
    match = re.search(rb"\r?\n\r?\n", data)
    if data.startswith((b"\r\n", b"\n")):
        return [], data.split(b"\n", 1)[1]
    if match is None:
        return _lines(data), b""
    return _lines(data[: match.start()]), data[match.end() :]


def _lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchFormatError("batch headers are not UTF-8") from exc
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _header_map(lines: Sequence[str], *, lower: bool = True) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise BatchFormatError("malformed header line in a batch part")
        headers[name.strip().lower() if lower else name.strip()] = value.strip()
    return headers
