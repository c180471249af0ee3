"""Multipart ``$batch`` bodies of the Dataverse simulator (dataverse.md §7): parse and answer.

A batch is a list of items: a single request, or a change set (a list of requests with
``Content-ID``). Parsing accepts CRLF or LF line ends; structural problems raise BatchError
(answered 400 by the simulator). Responses are serialised with CRLF, parts separated by
``--batchresponse_<guid>`` and change set parts by ``--changesetresponse_<guid>``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "MAX_REQUESTS",
    "BatchError",
    "ChangeSet",
    "PartRequest",
    "PartResponse",
    "boundary_of",
    "parse_batch",
    "render_batch",
]

MAX_REQUESTS = 1000


class BatchError(Exception):
    """A malformed batch body."""


@dataclass
class PartRequest:
    """One embedded HTTP request."""

    method: str
    url: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    """An atomic group of write requests."""

    parts: list[PartRequest] = field(default_factory=list)


@dataclass
class PartResponse:
    """One embedded HTTP response."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_id: str | None = None


def boundary_of(content_type: str) -> str | None:
    """The ``boundary`` parameter of a multipart/mixed Content-Type, else None."""
    if not content_type.lower().startswith("multipart/mixed"):
        return None
    m = re.search(r'boundary\s*=\s*"?([^";]+)"?', content_type, re.IGNORECASE)
    return m.group(1).strip() if m else None


def _split(body: bytes, boundary: str) -> list[bytes]:
    text = body.replace(b"\r\n", b"\n")
    delim = b"--" + boundary.encode()
    chunks = text.split(delim)
    if len(chunks) < 2 or not chunks[-1].lstrip().startswith(b"--"):
        raise BatchError(f"The batch body does not end with '--{boundary[:60]}--'.")
    return [c.strip(b"\n") for c in chunks[1:-1]]


def _head(block: bytes) -> tuple[dict[str, str], bytes]:
    head, _, rest = block.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\n"):
        if line.strip():
            name, sep, value = line.partition(":")
            if not sep:
                raise BatchError(f"Malformed header line '{line[:80]}'.")
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _request(part_headers: dict[str, str], content: bytes) -> PartRequest:
    if part_headers.get("content-type", "").split(";")[0].strip() != "application/http":
        raise BatchError("Each batch part must have Content-Type: application/http.")
    line, _, rest = content.partition(b"\n")
    words = line.decode("utf-8", "replace").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise BatchError(f"Malformed request line '{line[:80]!r}'.")
    headers: dict[str, str] = {}
    body = b""
    if not rest.strip():
        pass
    elif rest.startswith(b"\n"):
        body = rest[1:]
    else:
        headers, body = _head(rest)
    return PartRequest(words[0].upper(), words[1], headers, body.strip(b"\n"))


def parse_batch(body: bytes, boundary: str) -> list[PartRequest | ChangeSet]:
    """Parse a ``$batch`` body into requests and change sets (no nested change sets)."""
    items: list[PartRequest | ChangeSet] = []
    count = 0
    for block in _split(body, boundary):
        headers, content = _head(block)
        inner = boundary_of(headers.get("content-type", ""))
        if inner is None:
            items.append(_request(headers, content))
            count += 1
            continue
        changeset = ChangeSet()
        for sub in _split(content, inner):
            sub_headers, sub_content = _head(sub)
            if boundary_of(sub_headers.get("content-type", "")) is not None:
                raise BatchError("Change sets cannot be nested.")
            req = _request(sub_headers, sub_content)
            req.content_id = sub_headers.get("content-id") or req.headers.get("content-id")
            changeset.parts.append(req)
        count += len(changeset.parts)
        items.append(changeset)
    if count > MAX_REQUESTS:
        raise BatchError(f"The number of requests in a batch cannot exceed {MAX_REQUESTS}.")
    return items


def _render_part(resp: PartResponse) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if resp.content_id is not None:
        lines.append(f"Content-ID: {resp.content_id}")
    phrase = HTTPStatus(resp.status).phrase
    lines += ["", f"HTTP/1.1 {resp.status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + resp.body


def render_batch(results: list[PartResponse | list[PartResponse]]) -> tuple[str, bytes]:
    """Serialise answers (a list is a change set); returns (Content-Type, body)."""
    outer = f"batchresponse_{uuid.uuid4()}"
    out = b""
    for item in results:
        out += f"--{outer}\r\n".encode()
        if isinstance(item, list):
            inner = f"changesetresponse_{uuid.uuid4()}"
            out += f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n".encode()
            for resp in item:
                out += f"--{inner}\r\n".encode() + _render_part(resp) + b"\r\n"
            out += f"--{inner}--\r\n".encode()
        else:
            out += _render_part(item) + b"\r\n"
    out += f"--{outer}--\r\n".encode()
    return f"multipart/mixed; boundary={outer}", out
