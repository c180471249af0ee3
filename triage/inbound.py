"""Inbound webhook checks: HMAC signature, content type, size, and the body's shape.

Signature scheme (what ``docs/servicenow-business-rule.js`` sends)::

    X-Triage-Timestamp: <unix seconds>
    X-Triage-Signature: v1=<base64 HMAC-SHA256(secret, "<timestamp>." + raw body)>

The timestamp must be within ``tolerance_s`` of now (replay protection), and the comparison is
constant-time (``hmac.compare_digest``). Several ``v1=`` values separated by commas are accepted
so a secret can be rotated without downtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from triage.errors import InboundError, SignatureError
from triage.models import SYS_ID_PATTERN, TABLE_PATTERN

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookEvent",
    "check_size",
    "parse_event",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "x-triage-signature"
TIMESTAMP_HEADER = "x-triage-timestamp"


class WebhookEvent(BaseModel):
    """The part of a webhook body we use. Unknown keys are ignored; nothing else is trusted."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    sys_id: str = Field(pattern=SYS_ID_PATTERN)
    table: str = Field("incident", pattern=TABLE_PATTERN)
    number: str | None = Field(None, max_length=40)
    sys_updated_by: str | None = Field(None, max_length=100)
    sys_mod_count: int | None = Field(None, ge=0)

    @field_validator("sys_id", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` at ``timestamp`` (used by tests and docs)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).digest()
    return "v1=" + base64.b64encode(mac).decode()


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secret: bytes,
    *,
    tolerance_s: int = 300,
    now: Callable[[], float] = time.time,
) -> None:
    """Raise ``SignatureError`` unless the request carries a valid, fresh signature."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER)
    given = lowered.get(SIGNATURE_HEADER)
    if not stamp or not given:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a unix timestamp") from exc
    if abs(now() - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s} s tolerance")
    expected = base64.b64decode(sign(body, secret, timestamp)[3:])
    if not any(hmac.compare_digest(expected, candidate) for candidate in _candidates(given)):
        raise SignatureError("signature does not match")


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


def parse_event(
    body: bytes, content_type: str | None, *, allowed_tables: list[str]
) -> WebhookEvent:
    """Validate a webhook body, raising ``InboundError`` with the status to answer."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise InboundError(
            f"content type must be application/json, not {media_type or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InboundError(f"body is not valid JSON: {exc}", code="malformed_json") from exc
    if not isinstance(data, dict):
        raise InboundError("body must be a JSON object", code="invalid_body")
    try:
        event = WebhookEvent.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InboundError(f"invalid webhook body: {problems}", code="invalid_body") from exc
    if event.table not in allowed_tables:
        raise InboundError(f"table {event.table!r} is not enabled", code="table_not_allowed")
    return event
