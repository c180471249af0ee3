"""Inbound webhook checks: HMAC signature, content type, size, and the body's shape.

Signature scheme (what ``docs/servicenow-business-rule.js`` sends)::

    X-Triage-Timestamp: <unix seconds>
    X-Triage-Signature: v1=<base64 HMAC-SHA256(secret, "<timestamp>." + raw body)>

The timestamp must be within ``tolerance_s`` of now (replay protection), and the comparison is
constant-time (``hmac.compare_digest``). Several ``v1=`` values separated by commas are accepted,
and so are two secrets (``ENRICH_WEBHOOK__SECRET`` and, during a rotation,
``ENRICH_WEBHOOK__PREVIOUS_SECRET``), so a secret can be rotated without downtime from either
side (docs/secrets.md). The timestamp has exactly one accepted spelling:
1 to 12 ASCII digits without sign, spaces or leading zeros (``int()`` would also take
Arabic-Indic or full-width digits, ``_``, ``+`` and padding, letting one signature pass under
several spellings).

Body encoding: UTF-8 only (RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8). The
body is decoded strictly; a ``charset`` other than utf-8 in the Content-Type is refused (415),
and so is a byte order mark (400): §8.1 says senders MUST NOT add one and a parser MAY ignore
it; we refuse it so that one accepted request has one byte spelling, and the business rule
never sends one. NaN/Infinity, non-finite numbers, numbers longer than ``MAX_NUMBER_CHARS`` and
nesting deeper than ``MAX_JSON_DEPTH`` are refused as malformed JSON.

Every refusal is an ``InboundError`` whose message names the problem, is at most
``MAX_MESSAGE_CHARS`` long and never carries the body; anything taken from a header is cut by
``excerpt`` to a few printable ASCII characters.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.errors import InboundError, SignatureError
from domain.models import SYS_ID_PATTERN, TABLE_PATTERN

__all__ = [
    "EXCERPT_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_CHARS",
    "MAX_NUMBER_CHARS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookEvent",
    "bounded",
    "check_size",
    "describe_validation_error",
    "excerpt",
    "parse_event",
    "parse_json",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-triage-signature"
TIMESTAMP_HEADER = "x-triage-timestamp"

#: At most this many characters of any input are echoed in a message.
EXCERPT_CHARS = 40
#: Upper bound on an error message.
MAX_MESSAGE_CHARS = 300
#: A JSON number (sign, digits, fraction, exponent) longer than this is refused.
MAX_NUMBER_CHARS = 32
#: Arrays and objects nested deeper than this are refused (the business rule sends flat JSON).
MAX_JSON_DEPTH = 32

_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")  # ASCII digits only: [0-9] is not \d
_ELLIPSIS = "…"


class WebhookEvent(BaseModel):
    """The part of a webhook body we use. Unknown keys are ignored; nothing else is trusted."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    sys_id: str = Field(pattern=SYS_ID_PATTERN)
    table: str = Field("incident", pattern=TABLE_PATTERN)
    number: str | None = Field(None, max_length=40)
    sys_updated_by: str | None = Field(None, max_length=100)
    # The business rule sends a JSON integer; a digit string (of any length) is not one.
    sys_mod_count: int | None = Field(None, ge=0, le=2**31 - 1, strict=True)

    @field_validator("sys_id", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text`` for a message: anything but printable ASCII
    becomes ``?`` (no CR/LF reaches a log line), and ``…`` marks a cut."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return clean + _ELLIPSIS if len(text) > limit else clean


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to at most ``limit`` characters, ``…`` marking a cut."""
    return message if len(message) <= limit else message[: limit - 1] + _ELLIPSIS


def describe_validation_error(exc: ValidationError, *, what: str, max_errors: int = 3) -> str:
    """Name the keys and problems of a pydantic error, never the (untrusted) input values.

    Key names come from the input too (an unknown key), so they are cut with ``excerpt``.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:max_errors]:
        loc = ".".join(excerpt(str(p)) for p in error["loc"]) or what
        parts.append(f"{loc}: {excerpt(error['msg'], 100)}")
    if len(errors) > max_errors:
        parts.append(f"and {len(errors) - max_errors} more")
    return "; ".join(parts)


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` at ``timestamp`` (used by tests and docs)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).digest()
    return "v1=" + base64.b64encode(mac).decode()


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secret: bytes | Sequence[bytes],
    *,
    tolerance_s: int = 300,
    now: Callable[[], float] = time.time,
) -> int:
    """Raise ``SignatureError`` unless the request carries a valid, fresh signature.

    ``secret`` is one secret or, during a rotation, the accepted ones, current first
    (``WebhookSettings.accepted_secrets()``). Returns the index of the secret that verified
    (0: the current one). Every secret's HMAC is computed and compared, in constant time, with
    every ``v1=`` value, whichever matches: the time taken says nothing about which one did.
    """
    secrets = [secret] if isinstance(secret, bytes) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("at least one non-empty webhook secret is required")
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER)
    given = lowered.get(SIGNATURE_HEADER)
    if not stamp or not given:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if _TIMESTAMP.fullmatch(stamp) is None:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is not a unix timestamp: "
            "1 to 12 ASCII digits, no sign, spaces or leading zeros"
        )
    timestamp = int(stamp)
    if abs(now() - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s} s tolerance")
    candidates = _candidates(given)
    matches = []
    for key in secrets:
        expected = base64.b64decode(sign(body, key, timestamp)[3:])
        hit = False
        for candidate in candidates:  # no short cut: every comparison runs
            hit |= hmac.compare_digest(expected, candidate)
        matches.append(hit)
    if not any(matches):
        raise SignatureError("signature does not match")
    matched = matches.index(True)
    if matched:
        log.info("webhook signed with the previous secret: the rotation is not finished")
    return matched


def _candidates(header: str) -> list[bytes]:
    out = []
    for part in header.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme != "v1" or not value:
            continue
        try:
            out.append(base64.b64decode(value.strip(), validate=True))
        except (binascii.Error, ValueError):
            continue
    if not out:
        raise SignatureError(f"{SIGNATURE_HEADER} has no v1=<base64> value")
    return out


def check_size(body: bytes, max_bytes: int) -> None:
    """Refuse an oversize body (413) before spending any work on it."""
    if len(body) > max_bytes:
        raise InboundError(
            f"body is {len(body)} bytes; the limit is {max_bytes}", status=413, code="too_large"
        )


def parse_json(text: str) -> Any:
    """``json.loads`` for untrusted text; raises ``ValueError`` with a short reason.

    Refuses NaN/Infinity, numbers that overflow a float, numbers longer than
    ``MAX_NUMBER_CHARS`` and nesting deeper than ``MAX_JSON_DEPTH`` (whatever the
    interpreter's recursion limit); the reason gives positions and limits, never the input.
    """
    try:
        value = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise ValueError(f"nested too deeply (the limit is {MAX_JSON_DEPTH})") from exc
    if _too_deep(value):
        raise ValueError(f"nested too deeply (the limit is {MAX_JSON_DEPTH})")
    return value


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large for a float")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def parse_event(
    body: bytes, content_type: str | None, *, allowed_tables: list[str]
) -> WebhookEvent:
    """Validate a webhook body, raising ``InboundError`` with the status to answer."""
    data = json_object(body, content_type)
    try:
        event = WebhookEvent.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, what="body")
        raise InboundError(
            bounded(f"invalid webhook body: {problems}"), code="invalid_body"
        ) from exc
    if event.table not in allowed_tables:
        raise InboundError(
            f"table {excerpt(event.table)!r} is not enabled", code="table_not_allowed"
        )
    return event


def json_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    """An inbound JSON object body: ``application/json`` in UTF-8 without a BOM, parsed
    strictly (``parse_json``); ``InboundError`` (415 or 400) naming the problem otherwise."""
    _check_content_type(content_type)
    if body.startswith(codecs.BOM_UTF8):
        raise _malformed("it starts with a byte order mark; send UTF-8 without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"not UTF-8 (byte {exc.start})") from None
    try:
        data = parse_json(text)
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    if not isinstance(data, dict):
        raise InboundError("body must be a JSON object", code="invalid_body")
    return data


def _malformed(reason: str) -> InboundError:
    return InboundError(bounded(f"body is not valid JSON: {reason}"), code="malformed_json")


def _check_content_type(content_type: str | None) -> None:
    media_type, _, params = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json":
        raise InboundError(
            f"content type must be application/json, not {excerpt(media_type) or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset != "utf-8":
            raise InboundError(
                f"charset must be utf-8 (UTF-8), not {excerpt(charset) or 'empty'}",
                status=415,
                code="unsupported_media_type",
            )
